import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startUnleash, type RunningUnleash } from '../../../devstack/unleash/launcher.ts';
import { UNLEASH_LOG } from '../../../devstack/unleash/log-events.ts';
import { createLogger } from '../../../common/logger.ts';
import { UnleashAdminApi } from '../../../flags/admin-api.ts';
import { waitFor } from '../../helpers/wait.ts';
import { useTestUnleash, uniqueFlag, type TestUnleash } from '../../helpers/unleash.ts';

describe('devstack unleash (real unleash-server 7.5.1)', () => {
  let unleash: TestUnleash;
  before(async () => { unleash = await useTestUnleash(); });
  after(() => unleash.stop());

  test('/health answers and auth is on: the admin API refuses a request without a token', async () => {
    assert.equal((await fetch(`${unleash.url}/health`)).status, 200);
    assert.equal((await fetch(`${unleash.url}/api/admin/projects/default/features`)).status, 401);
  });

  test('the backend token reads the configured environment', async () => {
    const res = await fetch(`${unleash.apiUrl}client/features`, { headers: { Authorization: unleash.backendToken } });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { query: { environment: string } };
    assert.equal(body.query.environment, unleash.environment);
  });

  test('the default strategy is 0 %: /on on a flag without strategies does not expose anyone', async () => {
    const flag = uniqueFlag('devstack');
    const H = { Authorization: unleash.adminToken, 'Content-Type': 'application/json' };
    const P = `${unleash.url}/api/admin/projects/default/features`;
    assert.equal((await fetch(P, { method: 'POST', headers: H, body: JSON.stringify({ name: flag, type: 'release' }) })).status, 201);
    assert.equal((await fetch(`${P}/${flag}/environments/${unleash.environment}/on`, { method: 'POST', headers: H })).status, 200);
    const state = (await (await fetch(`${P}/${flag}/environments/${unleash.environment}`, { headers: H })).json()) as {
      enabled: boolean; strategies: { name: string; parameters: Record<string, string> }[];
    };
    assert.equal(state.enabled, true);
    assert.equal(state.strategies.length, 1);
    assert.equal(state.strategies[0]?.name, 'flexibleRollout');
    assert.equal(state.strategies[0]?.parameters.rollout, '0');
    assert.equal(state.strategies[0]?.parameters.groupId, flag);
  });
});

describe('startUnleash with a data folder', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'strangler-unleash-data-'));
    chmodSync(dir, 0o755); // as root, PostgreSQL runs as `postgres` and must reach its folder
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('a restart keeps flags and reuses the kept tokens (Unleash only inserts start-up tokens into an empty table)', async () => {
    const flag = uniqueFlag('restart');
    const first = await startUnleash({ dataDir: join(dir, 'u'), port: 0, environment: 'production' });
    let second: RunningUnleash | undefined;
    try {
      assert.equal(first.environment, 'production');
      assert.match(first.backendToken, /^\*:production\./);
      assert.match(first.adminToken, /^\*:\*\./);
      console.log(`# startUnleash (fresh folder: initdb + migrations) ${first.startMs} ms`);
      const api = new UnleashAdminApi({ baseUrl: first.url, token: first.adminToken });
      await api.createFeature('default', { name: flag });
      await first.stop();
      second = await startUnleash({ dataDir: join(dir, 'u'), port: 0, environment: 'production' });
      console.log(`# startUnleash (existing folder) ${second.startMs} ms`);
      assert.equal(second.adminToken, first.adminToken);
      assert.equal(second.backendToken, first.backendToken);
      assert.deepEqual(second.adminUser, first.adminUser);
      const again = new UnleashAdminApi({ baseUrl: second.url, token: second.adminToken });
      assert.equal((await again.getFeature('default', flag)).name, flag);
      const login = await fetch(`${second.url}/auth/simple/login`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(second.adminUser) });
      assert.equal(login.status, 200, 'the printed dashboard login works');
    } finally {
      await (second ?? first).stop();
    }
  });

  test('the server process dying on its own is logged as an error naming the signal; stop() afterwards is quiet and returns', async () => {
    const lines: { level: number; msg: string; signal?: string | null }[] = [];
    const sink = new Writable({ write(chunk: Buffer, _enc, done) { for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as typeof lines[number]); done(); } });
    const running = await startUnleash({ dataDir: join(dir, 'u'), port: 0, environment: 'production', log: createLogger({ level: 'debug', destination: sink }) });
    try {
      const child = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).find((pid) => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('server-process.ts') && readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[1] === String(process.pid);
        } catch {
          return false;
        }
      });
      assert.ok(child, 'found the unleash-server child of this process');
      process.kill(child, 'SIGKILL');
      await waitFor('the exit to be logged', () => lines.some((l) => l.msg === UNLEASH_LOG.childExitedUnexpectedly), 10_000);
      const exited = lines.find((l) => l.msg === UNLEASH_LOG.childExitedUnexpectedly);
      assert.equal(exited?.level, 50, 'logged at error');
      assert.equal(exited?.signal, 'SIGKILL');
    } finally {
      await running.stop();
    }
    assert.equal(lines.filter((l) => l.msg === UNLEASH_LOG.childExitedUnexpectedly).length, 1, 'stop() logs no second error');
  });

  test('`strangler devstack unleash` prints the tokens and stops cleanly on SIGTERM', async () => {
    const child = spawn(process.execPath, ['bin/strangler.js', 'devstack', 'unleash', '--port', '0', '--data-dir', join(dir, 'cli')], { env: { ...process.env, STRANGLER_LOG_LEVEL: 'warn' } });
    let stdout = '';
    const ready = new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout.includes('Press Ctrl-C to stop.')) resolve();
    }));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await Promise.race([ready, exited]);
    assert.match(stdout, /Unleash http:\/\/127\.0\.0\.1:\d+ is ready \(\d+ ms\)\. Dashboard login: admin \/ \S+/);
    assert.match(stdout, /UNLEASH_ADMIN_TOKEN='\*:\*\.[0-9a-f]+'/);
    assert.match(stdout, /UNLEASH_BACKEND_TOKEN='\*:development\.[0-9a-f]+'/);
    const url = /Unleash (http:\S+) is ready/.exec(stdout)?.[1];
    assert.equal((await fetch(`${url}/health`)).status, 200);
    // The tokens reach the unleash-server child over IPC: no command line on this host (readable by every local user
    // in `ps`) carries them.
    const tokens = [/UNLEASH_ADMIN_TOKEN='([^']+)'/, /UNLEASH_BACKEND_TOKEN='([^']+)'/].map((re) => re.exec(stdout)?.[1] as string);
    const cmdlines = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map((pid) => { try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8'); } catch { return ''; } });
    assert.ok(cmdlines.some((c) => c.includes('server-process.ts')), 'the unleash-server child is running');
    for (const token of tokens) assert.deepEqual(cmdlines.filter((c) => c.includes(token.slice(token.indexOf('.') + 1))), [], 'no process has a token on its command line');
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
    await assert.rejects(fetch(`${url}/health`), 'the server is gone after the CLI exits');
  });
});
