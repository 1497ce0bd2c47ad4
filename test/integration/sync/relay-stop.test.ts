/**
 * Stopping a relay whose database is already down returns promptly. That is what a terminal's Ctrl-C on `npm start`
 * produces: PostgreSQL receives the SIGINT with the demo process and is gone before the demo stops its relays. The
 * relay then sits in its lock retry loop (after the lock session died), which used to keep retrying the connection
 * for its 30 s deadline even though stop() had been called, so Ctrl-C took half a minute.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { createLogger } from '../../../common/logger.ts';
import { SyncStack, waitFor } from './stack.ts';
import { compileFromDatabases, installCapture, startRelay, type RunningRelay } from '../../../legacy-adapter/capture/index.ts';

const stack = new SyncStack();
let relay: RunningRelay | undefined;
before(() => stack.start());
after(async () => {
  await relay?.stop();
  await stack.stop();
});

test('stop() returns within seconds when the database went down first, without a retry warning for the cut-short cycle', async () => {
  const warnings: { msg: string; at: number }[] = [];
  const sink = new Writable({ write(chunk: Buffer, _enc, cb) { for (const l of chunk.toString().split('\n')) if (l) warnings.push({ msg: (JSON.parse(l) as { msg: string }).msg, at: performance.now() }); cb(); } });
  const { loaded, pools } = await stack.pair('relaystop');
  assert.ok(loaded.kafka, 'the test config has a kafka section');
  const tables = await compileFromDatabases(loaded.sync, pools);
  await installCapture(loaded.sync, pools, 'legacy', tables);
  relay = await startRelay({ config: loaded.sync, kafka: loaded.kafka, pools, side: 'legacy', log: createLogger({ level: 'warn', destination: sink }) });
  await pools.legacy.query(`INSERT INTO items (id, name) VALUES (1, 'a')`);
  await waitFor('the relay to publish', async () => Number((await pools.legacy.query<{ n: string }>(`SELECT count(*) AS n FROM ${pg.escapeIdentifier(loaded.sync.stateSchema)}.changelog`)).rows[0]?.n) === 0);

  // Count connection attempts on the relay's pool once the database is gone: several in a row mean the relay is in
  // its lock retry loop (one attempt every 200 ms), which is where stop() used to wait out the 30 s deadline.
  const pool = pools.legacy;
  const connect = pool.connect.bind(pool);
  let attempts = 0;
  let outage = false;
  (pool as { connect: unknown }).connect = (...args: unknown[]) => {
    if (outage) attempts += 1;
    return (connect as (...a: unknown[]) => unknown)(...args);
  };
  outage = true;
  await stack.pg.stop();
  await waitFor('the relay to retry its connection', () => attempts >= 4, 15_000);

  const started = performance.now();
  const running = relay;
  relay = undefined;
  const giveUp = new AbortController();
  const stopped = await Promise.race([running.stop().then(() => true), sleep(10_000, false, { signal: giveUp.signal }).catch(() => false)]);
  giveUp.abort();
  const ms = Math.round(performance.now() - started);
  // The old code waited out its 30 s reconnect deadline here.
  assert.equal(stopped, true, `relay.stop() had not returned after 10 s with its database down (${ms} ms)`);
  assert.deepEqual(warnings.filter((w) => w.at >= started).map((w) => w.msg), [], 'nothing warned once stop() was called');
});
