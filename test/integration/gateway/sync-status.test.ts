/**
 * `strangler gateway` with a sync section serves GET /admin/sync (the same figures as `strangler sync status`), so the
 * dashboard and the promotion gates can read the lag; without the token it is 401 like every admin endpoint.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { SyncStack } from '../sync/stack.ts';
import { CLI, startChild, type Child } from '../../helpers/process.ts';
import { compileFromDatabases, installCapture } from '../../../legacy-adapter/capture/index.ts';
import type { SyncStatus } from '../../../migration-scripts/status.ts';

const TOKEN = 'sync-status-admin-token-0123456789';
const stack = new SyncStack();
let gw: Child | undefined;

before(() => stack.start());
after(async () => {
  gw?.kill();
  await stack.stop();
});

test('GET /admin/sync reports lag per direction from the sync state', async () => {
  const { loaded, file, pools } = await stack.pair('gwstatus');
  const tables = await compileFromDatabases(loaded.sync, pools);
  for (const side of ['legacy', 'service'] as const) await installCapture(loaded.sync, pools, side, tables);
  // Two captured writes with no relay running: the legacy → service direction lags by two events.
  await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'a'), (2, 'b')`);
  const doc = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  writeFileSync(file, JSON.stringify({ ...doc, upstreams: [{ id: 'legacy', url: 'http://127.0.0.1:9' }], proxy: { port: 0, bind: '127.0.0.1' }, admin: { port: 0, token: TOKEN }, flags: { url: null, backupPath: null } }));
  gw = startChild([...CLI, 'gateway', '--config', file]);
  const started = await gw.waitFor((l) => l.msg === 'gateway.started');
  const admin = started.admin as string;
  assert.equal((await fetch(`${admin}/admin/sync`)).status, 401);
  const res = await fetch(`${admin}/admin/sync`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(res.status, 200);
  const status = (await res.json()) as SyncStatus;
  assert.deepEqual(status.directions.map((d) => d.direction).sort(), ['legacy-to-service', 'service-to-legacy']);
  const byName = Object.fromEntries(status.directions.map((d) => [d.direction, d.lagEvents]));
  assert.equal(byName['legacy-to-service'], 2);
  assert.equal(byName['service-to-legacy'], 0);
});
