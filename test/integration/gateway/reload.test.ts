/**
 * What a reload applies and what it cannot: routes, upstreams and per-request proxy settings change at once;
 * start-only settings (the flag client, listeners, admin, log) keep their start values, and the reload says which
 * ones changed (paths only, never values) in the log and on GET /admin/config, until the file matches again.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { createLogger } from '../../../common/logger.ts';
import { loadConfigFile } from '../../../gateway/config/load.ts';
import { startGateway, type RunningGateway } from '../../../gateway/server.ts';
import { fakeUpstream, type FakeUpstream } from '../../helpers/upstream.ts';

const TOKEN = 'reload-admin-token-0123456789';

describe('reload: live settings and start-only settings', () => {
  let legacy: FakeUpstream;
  let gw: RunningGateway;
  const file = join(mkdtempSync(join(tmpdir(), 'strangler-reload-')), 'strangler.yaml');
  const lines: Record<string, unknown>[] = [];
  const config = (o: { flagsToken: string; logLevel: string; drainTimeoutMs: number; routes: string[] }) =>
    stringify({
      upstreams: [{ id: 'legacy', url: legacy.url }],
      routes: o.routes.map((id) => ({ id, match: { pathPrefix: `/${id}` }, legacy: 'legacy' })),
      flags: { url: null, backupPath: null, token: o.flagsToken },
      proxy: { port: 0, bind: '127.0.0.1', drainTimeoutMs: o.drainTimeoutMs },
      admin: { port: 0, token: TOKEN },
      identity: { sessionSecret: 'reload-session-secret-0123456789' },
      log: { level: o.logLevel },
    });
  const start = { flagsToken: 'first-secret-token', logLevel: 'info', drainTimeoutMs: 10_000, routes: ['a'] };

  before(async () => {
    legacy = await fakeUpstream('legacy');
    writeFileSync(file, config(start));
    const destination = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    });
    gw = await startGateway(loadConfigFile(file), { log: createLogger({ level: 'info', destination }), watch: false, adminToken: TOKEN });
  });
  after(async () => {
    await gw.close();
    await legacy.stop();
  });

  const adminConfig = async () => {
    const res = await fetch(`${gw.adminUrl}/admin/config`, { headers: { authorization: `Bearer ${TOKEN}` } });
    return { text: await res.clone().text(), body: (await res.json()) as { reload: { restartRequired: string[] }; config: { proxy: { drainTimeoutMs: number } } } };
  };

  test('a reload that changes start-only settings applies the rest and names what needs a restart', async () => {
    writeFileSync(file, config({ flagsToken: 'second-secret-token', logLevel: 'debug', drainTimeoutMs: 2_000, routes: ['a', 'b'] }));
    assert.equal(gw.runtime.reloadFromFile(), true);
    const b = await fetch(`${gw.proxyUrl}/b`);
    await b.text();
    assert.equal(b.status, 200, 'the new route serves at once');
    const { text, body } = await adminConfig();
    assert.deepEqual(body.reload.restartRequired, ['flags.token', 'log.level']);
    assert.equal(body.config.proxy.drainTimeoutMs, 2_000);
    assert.ok(!text.includes('second-secret-token') && !text.includes('first-secret-token'), 'paths only, never values');
    const warned = lines.find((l) => l.msg === 'config.restart_required');
    assert.deepEqual(warned?.fields, ['flags.token', 'log.level']);
    assert.ok(!JSON.stringify(lines).includes('second-secret-token'));
  });

  test('back to the start values: nothing needs a restart any more', async () => {
    writeFileSync(file, config({ ...start, routes: ['a', 'b'] }));
    assert.equal(gw.runtime.reloadFromFile(), true);
    assert.deepEqual((await adminConfig()).body.reload.restartRequired, []);
  });

  test('the drain on stop uses the drain timeout in force now, not the one at start', async () => {
    writeFileSync(file, config({ ...start, drainTimeoutMs: 200, routes: ['a', 'b'] }));
    assert.equal(gw.runtime.reloadFromFile(), true);
    legacy.mode = 'hold';
    const held = fetch(`${gw.proxyUrl}/a`).then((r) => r.status, () => 'cut');
    await legacy.nextRequest();
    await gw.close(); // would wait the start value (10 s) and time the test out
    const timedOut = lines.find((l) => l.msg === 'gateway.drain_timeout');
    assert.equal(timedOut?.drainTimeoutMs, 200);
    legacy.release();
    assert.equal(await held, 'cut', 'the held request was cut when the drain timed out');
  });
});

