/**
 * Two relays for one database: one publishes, the other stands by (it neither exits nor publishes), and takes
 * over when the active one is killed. This is what lets a deployment run a standby relay per side.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { SyncStack, Worker, waitFor } from './stack.ts';
import { compileFromDatabases, installCapture } from '../../../legacy-adapter/capture/index.ts';

const stack = new SyncStack();
const workers: Worker[] = [];
before(() => stack.start());
after(async () => {
  for (const w of workers) await w.kill();
  await stack.stop();
});

test('a second relay is a hot standby that takes over when the active one dies', async () => {
  const { loaded, file, pools } = await stack.pair('standby');
  const tables = await compileFromDatabases(loaded.sync, pools);
  await installCapture(loaded.sync, pools, 'legacy', tables);
  const pending = async () => Number((await pools.legacy.query<{ n: string }>(`SELECT count(*) AS n FROM ${pg.escapeIdentifier(loaded.sync.stateSchema)}.changelog`)).rows[0]?.n);

  const active = new Worker('relay-a', ['relay', '--side', 'legacy', '--config', file]);
  active.start();
  workers.push(active);
  await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'a')`);
  await waitFor('the first relay to publish', async () => (await pending()) === 0);

  const standby = new Worker('relay-b', ['relay', '--side', 'legacy', '--config', file]);
  standby.start();
  workers.push(standby);
  await pools.legacy.query(`INSERT INTO items (id, name) VALUES (2, 'b')`);
  await waitFor('the active relay to publish while the standby waits', async () => (await pending()) === 0);

  await active.kill();
  await pools.legacy.query(`INSERT INTO items (id, name) VALUES (3, 'c')`);
  await waitFor('the standby to take over and publish', async () => (await pending()) === 0, 60_000);
  assert.equal(standby.stderr.includes('SYNC_RELAY_BUSY'), false, 'the standby never gave up');
});
