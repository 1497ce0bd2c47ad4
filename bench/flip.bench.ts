/**
 * Flip-to-all-legacy: how long after a rollback does every gateway worker route the flag to legacy?
 *
 * A real Unleash (embedded PostgreSQL), a gateway with 4 workers (node:cluster) in a child process, and two trivial
 * upstreams. Two paths are measured, each several times:
 *   - `strangler flags rollback` (rollbackRoute): Unleash /off, then a push to the gateway's control plane, which
 *     delivers it to every worker before answering;
 *   - a flip made directly in Unleash (as in its UI, without the webhook): workers see it on their next poll.
 * "All legacy" = 64 consecutive probes on fresh connections (spread over the workers) all answered by legacy.
 * Target: ≤ 1000 ms for the rollback path.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { stringify } from 'yaml';
import type { Bench } from './run.ts';
import { freePort } from '../common/net.ts';
import { silentLogger } from '../common/logger.ts';
import { startPostgres } from '../devstack/postgres.ts';
import { startUnleash } from '../devstack/unleash/launcher.ts';
import { loadConfigFile } from '../gateway/config/load.ts';
import { createFlagsControl } from '../flags/control.ts';
import { syncFlags } from '../flags/sync.ts';
import { rollbackRoute, resumeRoute } from '../flags/traffic.ts';

const WORKERS = 4;
const TRIALS = 5;
const PROBES = 64;

function upstream(name: string): Promise<Server> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'x-served-by': name });
    res.end(name);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function allOn(proxy: string, target: 'legacy' | 'service'): Promise<boolean> {
  for (let i = 0; i < PROBES; i++) {
    const res = await fetch(`${proxy}/api/orders`, { headers: { 'x-user-id': `user-${i}`, connection: 'close' } });
    await res.arrayBuffer();
    if (res.headers.get('x-strangler-target') !== target) return false;
  }
  return true;
}

async function timeUntil(proxy: string, target: 'legacy' | 'service', since: number, limitMs = 20_000): Promise<number> {
  while (!(await allOn(proxy, target))) {
    if (performance.now() - since > limitMs) throw new Error(`never all ${target} within ${limitMs} ms`);
  }
  return performance.now() - since;
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return `min ${s[0]?.toFixed(0)} ms, median ${s[Math.floor(s.length / 2)]?.toFixed(0)} ms, max ${s[s.length - 1]?.toFixed(0)} ms`;
};

export default {
  name: `flip to all-legacy across ${WORKERS} gateway workers`,
  async run() {
    const dir = await mkdtemp(join(tmpdir(), 'strangler-flip-'));
    await chmod(dir, 0o755);
    const pg = await startPostgres({ dataDir: join(dir, 'pg'), databases: ['unleash'] });
    const unleash = await startUnleash({ databaseUrl: pg.url('unleash'), port: 0 });
    const [legacy, service] = await Promise.all([upstream('legacy'), upstream('service')]);
    const adminPort = await freePort();
    const token = 'flip-bench-admin-token-0123456789';
    const file = join(dir, 'strangler.yaml');
    await writeFile(file, stringify({
      upstreams: [{ id: 'legacy', url: `http://127.0.0.1:${(legacy.address() as AddressInfo).port}` }, { id: 'svc', url: `http://127.0.0.1:${(service.address() as AddressInfo).port}` }],
      routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy', service: 'svc', flag: { name: 'strangler.orders', initialPercent: 100 } }],
      flags: { url: unleash.apiUrl, token: unleash.backendToken, adminUrl: unleash.url, adminToken: unleash.adminToken, environment: unleash.environment, refreshIntervalMs: 1000, backupPath: null, disableMetrics: true, gateways: [{ url: `http://127.0.0.1:${adminPort}`, token }] },
      admin: { port: adminPort, token },
      identity: { sessionSecret: 'flip-bench-session-secret-0123' },
      proxy: { bind: '127.0.0.1', port: 0, logSampleRate: 0 },
    }));
    const config = loadConfigFile(file);
    const control = createFlagsControl(config, { log: silentLogger });
    await syncFlags(control, {});

    const gw = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'gateway', '--config', file, '--workers', String(WORKERS)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const proxy = await new Promise<string>((resolve, reject) => {
      createInterface({ input: gw.stdout }).on('line', (line) => {
        if (line.includes('"gateway.started"')) resolve((JSON.parse(line) as { proxy: string }).proxy);
      });
      gw.once('exit', (code) => reject(new Error(`gateway exited ${code}`)));
    });
    try {
      await timeUntil(proxy, 'service', performance.now());
      const push: number[] = [];
      const poll: number[] = [];
      for (let i = 0; i < TRIALS; i++) {
        let t = performance.now();
        await rollbackRoute(control, 'orders', { actor: 'bench', reason: 'flip bench' });
        push.push(await timeUntil(proxy, 'legacy', t));
        await resumeRoute(control, 'orders', { actor: 'bench' });
        await timeUntil(proxy, 'service', performance.now());

        t = performance.now();
        await control.api.setEnvironmentEnabled('default', 'strangler.orders', unleash.environment, false); // as a flip in Unleash's UI
        poll.push(await timeUntil(proxy, 'legacy', t));
        await control.api.setEnvironmentEnabled('default', 'strangler.orders', unleash.environment, true);
        await timeUntil(proxy, 'service', performance.now());
      }
      const pushMax = Math.max(...push);
      console.log(`workers ${WORKERS}, ${TRIALS} trials each, "all legacy" = ${PROBES} consecutive probes on fresh connections`);
      console.log(`  strangler flags rollback (Unleash /off + push):  ${stats(push)}   target ≤ 1000 ms: ${pushMax <= 1000 ? 'PASS' : 'MISS'}`);
      console.log(`  flip in Unleash, no webhook (1 s polling):       ${stats(poll)}   (ratio to push: ${(Math.max(...poll) / pushMax).toFixed(1)}x)`);
    } finally {
      gw.kill('SIGTERM');
      await new Promise((r) => gw.once('exit', r));
      legacy.close();
      service.close();
      await unleash.stop();
      await pg.stop();
      await rm(dir, { recursive: true, force: true });
    }
  },
} satisfies Bench;
