/**
 * Issue: with `--workers N` and identity.sessionSecret unset, each worker signed sessions with its own random key, so
 * a cookie minted by one worker was refused by the next and an anonymous user got a new session (a new bucket) on
 * about every other request. The primary now hands its workers one key.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CLI, startChild, type Child } from '../../helpers/process.ts';
import { fakeUpstream, type FakeUpstream } from '../../helpers/upstream.ts';
import { featuresFile } from '../../helpers/gateway.ts';

let legacy: FakeUpstream;
let svc: FakeUpstream;
let gw: Child | undefined;
before(async () => {
  legacy = await fakeUpstream('legacy');
  svc = await fakeUpstream('svc');
});
after(async () => {
  gw?.kill();
  await Promise.all([legacy.stop(), svc.stop()]);
});

test('issue: without identity.sessionSecret, a session minted by one worker is valid on every worker', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'strangler-session-workers-'));
  const file = join(dir, 'strangler.yaml');
  writeFileSync(file, stringify({
    upstreams: [{ id: 'legacy', url: legacy.url }, { id: 'svc', url: svc.url }],
    routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy', service: 'svc' }],
    flags: { url: null, backupPath: null, bootstrapFile: featuresFile({ 'strangler.orders': { percent: 50 } }) },
    proxy: { port: 0, bind: '127.0.0.1' },
    admin: { port: 0, token: 'session-workers-token-0123456789' },
  }));
  gw = startChild([...CLI, 'gateway', '--config', file, '--workers', '2']);
  const proxy = (await gw.waitFor((l) => l.msg === 'gateway.started', 60_000)).proxy as string;
  // connection: close → each request on a new connection, which node:cluster hands to the workers in turn.
  const first = await fetch(`${proxy}/api/orders/1`, { headers: { connection: 'close' } });
  await first.text();
  const cookie = first.headers.get('set-cookie')?.split(';')[0];
  assert.ok(cookie, 'an anonymous request gets a session cookie');
  const targets = new Set<string | null>();
  for (let i = 0; i < 12; i++) {
    const res = await fetch(`${proxy}/api/orders/1`, { headers: { connection: 'close', cookie } });
    await res.text();
    assert.equal(res.headers.get('set-cookie'), null, `request ${i}: the session cookie was accepted (no new session minted)`);
    targets.add(res.headers.get('x-strangler-target'));
  }
  assert.deepEqual([...targets], [first.headers.get('x-strangler-target')], 'the session stays on one side');
});
