/**
 * Faults a production team meets around Kafka: retention dropping events apply had not consumed yet (offset out of
 * range: a loud stop and a broken status, never a silent skip), a topic deleted and recreated while apply runs,
 * Kafka not answering apply's question for a partition's first offset (retried, never taken as lost events or as
 * a start at the group's offset), a pre-existing compacted topic (refused at start).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { connect, createServer, type Socket } from 'node:net';
import { promisify } from 'node:util';
import { PartitionProxy, REPO_ROOT, SyncStack, waitFor } from './stack.ts';
import { compileFromDatabases, installCapture, startRelay } from '../../../legacy-adapter/capture/index.ts';
import { startKafkaBroker } from '../../../devstack/kafka/index.ts';
import { startPostgres } from '../../../devstack/postgres.ts';
import { LEGACY_DDL, LOGICAL_SERVER_FLAGS, SERVICE_DDL, syncDoc } from '../../unit/sync/fixture.ts';
import { parseSyncConfig } from '../../../migration-scripts/config.ts';
import { Applier } from '../../../migration-scripts/apply.ts';
import { ApplyWorker, createKafka, createStatusKafka } from '../../../migration-scripts/kafka.ts';
import { formatStatus, lagSummary, readSyncStatus } from '../../../migration-scripts/status.ts';
import { verifyTables } from '../../../migration-scripts/verify.ts';
import { isStranglerError } from '../../../common/errors.ts';
import { createLogger, type Logger } from '../../../common/logger.ts';
import { Writable } from 'node:stream';
import { closePools, openPools, type Pools } from '../../../migration-scripts/db.ts';

const run = promisify(execFile);
let stack: SyncStack;
before(async () => { stack = new SyncStack(); await stack.start(); });
after(async () => { await stack.stop(); });

/** Drops the head of a partition's log file up to (not including) the batch holding `keepFrom`, as retention deletes old segments. */
function dropLogHead(file: string, keepFrom: number): number {
  const buf = readFileSync(file);
  let pos = 0;
  while (pos + 12 <= buf.length) {
    const base = Number(buf.readBigInt64BE(pos));
    const size = 12 + buf.readInt32BE(pos + 8);
    const last = base + buf.readInt32BE(pos + 23);
    if (last >= keepFrom) break;
    pos += size;
  }
  writeFileSync(file, buf.subarray(pos));
  closeSync(openSync(file, 'r'));
  return pos === buf.length ? -1 : Number(buf.readBigInt64BE(pos));
}

const itemCount = async (pools: Pools) => Number((await pools.service.query('SELECT count(*) AS n FROM catalog_items')).rows[0].n);
const insertOne = async (pools: Pools, id: number) => { await pools.legacy.query('INSERT INTO items (id, name) VALUES ($1, $2)', [id, `n${id}`]); };

/**
 * A pair named `name` (topics `name.{side}.{table}`, one partition) with capture installed on both sides, the legacy
 * relay running, and a factory for apply workers into the service.
 */
async function legacyToService(name: string, { brokers, retries }: { brokers?: string[]; retries?: number } = {}) {
  const { loaded, file, pools } = await stack.pair(name, { topics: { pattern: `${name}.{side}.{table}`, partitions: 1 } });
  const config = loaded.sync;
  const kafkaCfg = { ...loaded.kafka!, ...(brokers ? { brokers } : {}) };
  const tables = await compileFromDatabases(config, pools);
  await installCapture(config, pools, 'legacy', tables);
  await installCapture(config, pools, 'service', tables);
  const relay = await startRelay({ config, kafka: kafkaCfg, pools, side: 'legacy' });
  const worker = (log?: Logger) => new ApplyWorker({ config, kafka: createKafka(kafkaCfg, `apply-${name}`, { retries }), source: 'legacy', tables, sessionTimeoutMs: 1_000, log,
    applier: new Applier({ pool: pools.service, config, target: 'service', tables }) });
  const published = async () => Number((await pools.legacy.query('SELECT count(*) AS n FROM strangler_sync.changelog')).rows[0].n) === 0;
  /** Inserts items `from`..`to` on legacy one by one, each published by the relay before the next (one batch each). */
  const publish = async (from: number, to = from) => {
    for (let i = from; i <= to; i++) { await insertOne(pools, i); await waitFor('published', published); }
  };
  return { config, kafkaCfg, file, pools, tables, relay, worker, published, publish };
}

test('retention dropped events apply had not consumed: apply stops loudly, status reports the gap, nothing is skipped silently', async () => {
  const { config, kafkaCfg, file, pools, tables, relay, worker, publish } = await legacyToService('kret');
  let w = worker();
  try {
    await w.start();
    await publish(1, 3);
    await waitFor('3 applied', async () => (await itemCount(pools)) === 3);
    await w.stop();
    // 10 more events, one Kafka batch each, while apply is down; then retention deletes the oldest 6 of them.
    await publish(4, 13);
    await relay.stop();
    await stack.restartBroker(); // (closes the files; the head is cut while the broker is down, as segments are deleted)
    const logStart = dropLogHead(join(stack.dir, 'kafka', 'logs', 'kret.legacy.items', '0.log'), 9);
    assert.equal(logStart, 9);
    await stack.restartBroker();
    // status names the gap before apply even runs (CLI status exits 1 on a broken direction).
    const kafka = createKafka(kafkaCfg, 'status-kret');
    const st = await readSyncStatus(config, pools, kafka);
    const d = st.directions.find((x) => x.source === 'legacy');
    assert.equal(d?.broken?.code, 'SYNC_EVENTS_LOST', JSON.stringify(d));
    assert.match(d?.broken?.message ?? '', /kret\.legacy\.items partition 0 starts at offset 9, but service has applied only up to 2.*SET kafka_offset = 8 WHERE source = 'legacy'/);
    assert.match(formatStatus(st), /legacy-to-service: BROKEN \(events lost from Kafka are not counted\)/);
    // apply stops for good (kafkajs resets the out-of-range offset to the earliest one; apply notices the hole).
    w = worker();
    await w.start();
    const err = await w.done.catch((e: unknown) => e);
    assert.ok(isStranglerError(err) && err.code === 'SYNC_EVENTS_LOST', String(err));
    assert.match(err.message, /topic kret\.legacy\.items partition 0 has no events at offsets 3\.\.8 any more/);
    assert.equal(await itemCount(pools), 3, 'nothing after the gap is applied');
    await w.stop();
    // `strangler sync apply` exits 1 with it (instead of idling with a stopped consumer).
    const cli = await run(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'cli/main.ts'), 'sync', 'apply', '--direction', 'legacy-to-service', '--config', file],
      { cwd: REPO_ROOT, timeout: 60_000, env: { ...process.env, STRANGLER_LOG_LEVEL: 'error', STRANGLER_SYNC_SESSION_TIMEOUT_MS: '1000' } }).then(() => null, (e: unknown) => e as { code?: number | null; stderr?: string });
    assert.equal(cli?.code, 1, `apply CLI exit: ${JSON.stringify(cli)}`);
    assert.match(cli?.stderr ?? '', /SYNC_EVENTS_LOST/);
    // Accepting the gap as the message says: apply goes on, verify names exactly the lost rows.
    await pools.service.query(`UPDATE strangler_sync.applied SET kafka_offset = 8 WHERE source = 'legacy' AND topic = 'kret.legacy.items' AND partition = 0`);
    w = worker();
    await w.start();
    await waitFor('the rest applied', async () => (await itemCount(pools)) === 7);
    const st2 = await readSyncStatus(config, pools, kafka);
    assert.equal(st2.directions.find((x) => x.source === 'legacy')?.broken, null);
    const v = await verifyTables(config, pools, tables);
    assert.deepEqual(v.tables.find((t) => t.table === 'items')?.diffs.map((x) => x.key).sort(), ['[4]', '[5]', '[6]', '[7]', '[8]', '[9]']);
  } finally {
    await w.stop();
    await relay.stop();
  }
});

test('a topic deleted and recreated: apply follows the new offsets, so a restart neither skips nor miscounts the new events', async () => {
  const { config, kafkaCfg, pools, tables, relay, worker, publish } = await legacyToService('krecreate');
  const kafka = createKafka(kafkaCfg, 'status-krecreate');
  const legacyLag = async () => (await readSyncStatus(config, pools, kafka)).directions.find((x) => x.source === 'legacy')?.lagEvents;
  let w = worker();
  try {
    await w.start();
    await publish(1, 5);
    await waitFor('5 applied', async () => (await itemCount(pools)) === 5);
    await w.stop();
    const admin = kafka.admin();
    await admin.connect();
    await admin.deleteTopics({ topics: ['krecreate.legacy.items'] });
    await admin.disconnect();
    await publish(6); // the relay's produce creates the topic again: offset 0
    w = worker();
    await w.start();
    await waitFor('6 applied', async () => (await itemCount(pools)) === 6);
    await waitFor('lag 0', async () => (await legacyLag()) === 0);
    await w.stop();
    await publish(7, 12);
    assert.equal(await legacyLag(), 6, 'status counts the new topic\'s unapplied events');
    w = worker();
    await w.start();
    await waitFor('all 12 applied', async () => (await itemCount(pools)) === 12, 10_000);
    await waitFor('lag 0', async () => (await legacyLag()) === 0);
    assert.equal((await verifyTables(config, pools, tables, 'items')).ok, true);
  } finally {
    await w.stop();
    await relay.stop();
  }
});

test('a network partition to the database server (connections hang, nothing refused): the relay, apply and status time out instead of waiting forever, and catch up after it heals', { timeout: 90_000 }, async () => {
  const proxy = new PartitionProxy(stack.pg.port);
  await proxy.start();
  const { loaded, pools } = await stack.pair('kpart', { topics: { pattern: 'kpart.{side}.{table}', partitions: 1 } });
  const proxied = (side: 'legacy' | 'service') => ({ ...loaded.sync.databases[side], url: stack.pg.url(`kpart_${side}`).replace(`:${stack.pg.port}/`, `:${proxy.port}/`), queryTimeoutMs: 1_000, connectTimeoutMs: 1_000 });
  const config = { ...loaded.sync, databases: { legacy: proxied('legacy'), service: proxied('service') } };
  const viaProxy = openPools(config);
  const kafkaCfg = loaded.kafka!;
  const tables = await compileFromDatabases(config, pools);
  await installCapture(config, pools, 'legacy', tables);
  await installCapture(config, pools, 'service', tables);
  const relay = await startRelay({ config, kafka: kafkaCfg, pools: viaProxy, side: 'legacy' });
  const w = new ApplyWorker({ config, kafka: createKafka(kafkaCfg, 'apply-kpart'), source: 'legacy', tables, sessionTimeoutMs: 1_000,
    applier: new Applier({ pool: viaProxy.service, config, target: 'service', tables }) });
  try {
    await w.start();
    await insertOne(pools, 1);
    await waitFor('1 applied', async () => (await itemCount(pools)) === 1);
    proxy.partition();
    await insertOne(pools, 2);
    const started = Date.now();
    await assert.rejects(readSyncStatus(config, viaProxy), /timeout/i, 'status fails within its timeout instead of hanging');
    assert.ok(Date.now() - started < 10_000, `status took ${Date.now() - started} ms`);
    await new Promise((r) => setTimeout(r, 2_000)); // the partition lasts (fault duration, not a wait for an outcome)
    proxy.heal();
    await insertOne(pools, 3);
    await waitFor('2 and 3 applied after the partition healed', async () => (await itemCount(pools)) === 3, 30_000);
  } finally {
    await w.stop();
    await relay.stop();
    await closePools(viaProxy);
    await proxy.close();
  }
});

test('Kafka down, then its group coordinator loading, each longer than the client\'s retries: apply resumes instead of stopping for good', async () => {
  const { pools, relay, kafkaCfg, config, tables, published } = await legacyToService('kdown');
  // One retry: kafkajs gives up within a second, so 2 s outlasts it (as ~9 s outlasts the default retries).
  let logged = '';
  const log = createLogger({ level: 'info', destination: new Writable({ write(chunk: Buffer, _enc, cb) { logged += chunk.toString(); cb(); } }) });
  const w = new ApplyWorker({ config, kafka: createKafka(kafkaCfg, 'apply-kdown', { retries: 1 }), source: 'legacy', tables, sessionTimeoutMs: 1_000, log,
    applier: new Applier({ pool: pools.service, config, target: 'service', tables }) });
  let stopped: unknown = null;
  w.done.catch((e: unknown) => { stopped = e; });
  try {
    await w.start();
    await insertOne(pools, 1);
    await waitFor('1 applied', async () => (await itemCount(pools)) === 1);
    await stack.restartBroker({ downMs: 2_000 }); // fault duration, not a wait for an outcome
    await insertOne(pools, 2);
    await waitFor('2 applied after Kafka came back', async () => (await itemCount(pools)) === 2 || stopped !== null, 30_000);
    assert.equal(stopped, null, `apply stopped: ${String(stopped)}`);
    await waitFor('published', published);
    // kafkajs ends a consumer for good when FindCoordinator keeps failing (KafkaJSGroupCoordinatorNotFound is not
    // retriable to it; kafkajs issues #1445, #1630).
    const loadedAt = Date.now() + 2_000;
    await stack.restartBroker({ coordinatorLoadMs: 2_000 }); // (the restart also ends the group: apply must find the coordinator again)
    await waitFor('the coordinator loaded', () => Date.now() > loadedAt + 500, 10_000, 100);
    await insertOne(pools, 3);
    await waitFor('3 applied after the coordinator loaded', async () => (await itemCount(pools)) === 3 || stopped !== null, 30_000);
    assert.equal(stopped, null, `apply stopped: ${String(stopped)}`);
    assert.match(logged, /"event":"sync\.apply\.consumer_restart".*Failed to find group coordinator/, 'kafkajs gave up and apply restarted its consumer');
  } finally {
    await w.stop();
    await relay.stop();
  }
});

test('the target database down longer than apply\'s retries and kafkajs\'s: apply logs each consumer restart and resumes by itself once it is back, never idling or exiting', { timeout: 120_000 }, async () => {
  // The service database on a server of its own, so it can be stopped while the legacy side and its relay go on.
  const target = await startPostgres({ dataDir: join(stack.dir, 'pg-ktargetdown'), serverFlags: LOGICAL_SERVER_FLAGS });
  await stack.pg.createDatabase('ktargetdown_legacy');
  await target.createDatabase('ktargetdown_service');
  const doc = { ...syncDoc({ legacy: stack.pg.url('ktargetdown_legacy'), service: target.url('ktargetdown_service') }, { topics: { pattern: 'ktargetdown.{side}.{table}', partitions: 1 } }),
    kafka: { brokers: [stack.brokerAddress], clientId: 'ktargetdown' } };
  const loaded = parseSyncConfig(doc, join(stack.dir, 'ktargetdown.json'));
  const config = loaded.sync;
  const pools = openPools(config);
  let server = target;
  let relay: Awaited<ReturnType<typeof startRelay>> | undefined;
  let w: ApplyWorker | undefined;
  try {
    await pools.legacy.query(LEGACY_DDL);
    await pools.service.query(SERVICE_DDL);
    const tables = await compileFromDatabases(config, pools);
    await installCapture(config, pools, 'legacy', tables);
    await installCapture(config, pools, 'service', tables);
    relay = await startRelay({ config, kafka: loaded.kafka!, pools, side: 'legacy' });
    let logged = '';
    const log = createLogger({ level: 'info', destination: new Writable({ write(chunk: Buffer, _enc, cb) { logged += chunk.toString(); cb(); } }) });
    // One kafkajs retry: its retries run out within seconds of apply's own (~3 s of database retries per attempt).
    w = new ApplyWorker({ config, kafka: createKafka(loaded.kafka!, 'apply-ktargetdown', { retries: 1 }), source: 'legacy', tables, sessionTimeoutMs: 1_000, log,
      applier: new Applier({ pool: pools.service, config, target: 'service', tables, log }) });
    let stopped: unknown = null;
    w.done.catch((e: unknown) => { stopped = e; });
    await w.start();
    await insertOne(pools, 1);
    await waitFor('1 applied', async () => (await itemCount(pools)) === 1);
    await server.stop();
    await insertOne(pools, 2); // published while the target is down: apply's batch fails until it is back
    const restarts = () => logged.split('\n').filter((l) => l.includes('"event":"sync.apply.consumer_restart"')).length;
    await waitFor('apply\'s consumer restarted twice while the target is down', () => restarts() >= 2 || stopped !== null, 60_000, 100);
    assert.equal(stopped, null, `apply stopped: ${String(stopped)}`);
    assert.match(logged, /"event":"sync\.apply\.batch_failed".*"code":"SYNC_APPLY_FAILED".*after 8 attempts/, 'apply\'s own database retries ran out');
    assert.match(logged, /"event":"sync\.apply\.consumer_restart".*"err":"connect ECONNREFUSED.*kafkajs restarts it/);
    server = await startPostgres({ dataDir: join(stack.dir, 'pg-ktargetdown'), port: target.port, serverFlags: LOGICAL_SERVER_FLAGS });
    await insertOne(pools, 3);
    await waitFor('2 and 3 applied after the target came back', async () => (await itemCount(pools).catch(() => 0)) === 3 || stopped !== null, 60_000);
    assert.equal(stopped, null, `apply stopped: ${String(stopped)}`);
    assert.equal((await verifyTables(config, pools, tables, 'items')).ok, true);
  } finally {
    await w?.stop();
    await relay?.stop();
    await closePools(pools);
    await server.stop().catch(() => {});
  }
});

/**
 * Items 1..`applied` synced to the service (the applied row as it stood after item 3 kept as `backup`), apply stopped,
 * the service database put back by `restore`, apply started again: then item `applied`+1 and everything before it
 * reach the service, verify agrees, and apply never stops.
 */
async function resumesAfterRestore(name: string, applied: number, restore: (pools: Pools, backup: { position: string; kafka_offset: string }) => Promise<void>): Promise<void> {
  const { config, pools, tables, relay, worker, publish } = await legacyToService(name);
  let w = worker();
  try {
    await w.start();
    await publish(1, 3);
    await waitFor('3 applied', async () => (await itemCount(pools)) === 3);
    const backup = (await pools.service.query(`SELECT position, kafka_offset FROM strangler_sync.applied WHERE source = 'legacy'`)).rows[0] as { position: string; kafka_offset: string };
    await publish(4, applied);
    await waitFor(`${applied} applied`, async () => (await itemCount(pools)) === applied);
    await w.stop();
    await restore(pools, backup);
    w = worker();
    let stopped: unknown = null;
    w.done.catch((e: unknown) => { stopped = e; });
    await w.start();
    await insertOne(pools, applied + 1); // (if the consumer's first fetch from the group's offset beats the seek on join, this batch shows the hole)
    await waitFor(`1..${applied + 1} applied`, async () => (await itemCount(pools)) === applied + 1 || stopped !== null, 20_000);
    assert.equal(stopped, null);
    assert.equal((await verifyTables(config, pools, tables, 'items')).ok, true);
  } finally {
    await w.stop();
    await relay.stop();
  }
}

test('a target database restored from a backup taken before sync applied anything (no stored offsets, the consumer group\'s still there): apply re-reads every event Kafka holds instead of starting at the group\'s offset', async () => {
  // The service database goes back to a backup from before sync's first apply: no rows, no versions, no positions.
  await resumesAfterRestore('kpresync', 3, async (pools) => {
    await pools.service.query(`BEGIN; SET LOCAL strangler.origin = 'sync'; DELETE FROM catalog_items;
      DELETE FROM strangler_sync.row_version; DELETE FROM strangler_sync.applied; COMMIT`);
  });
});

test('a target database restored from a backup (its stored offset behind the consumer group\'s): apply re-reads the events Kafka still holds, no false SYNC_EVENTS_LOST', async () => {
  // The service database goes back to the backup taken after item 3 (Kafka's committed offset stays at 5).
  await resumesAfterRestore('krestore', 5, async (pools, backup) => {
    await pools.service.query(`BEGIN; SET LOCAL strangler.origin = 'sync';
      DELETE FROM catalog_items WHERE item_id IN (4, 5); DELETE FROM strangler_sync.row_version WHERE tbl = 'items' AND pk IN ('[4]', '[5]');
      UPDATE strangler_sync.applied SET position = ${backup.position}, kafka_offset = ${backup.kafka_offset} WHERE source = 'legacy'; COMMIT`);
  });
});

test('a metadata request that fails after the client connected (kafkajs 2.2 then fails listTopics with a TypeError): a relay starting then retries instead of exiting for good', async () => {
  // Found by the crash matrix: a relay restarted just before the broker restarted exited with "Cannot destructure
  // property 'topicMetadata'": kafkajs's withBroker swallows the error of every broker and returns null, which
  // listTopics destructures. A broker of its own, reached through a proxy it advertises (so the relay's connection
  // to it is the proxied one), whose first connection drops at its second metadata request (listTopics's own).
  const { loaded, pools } = await stack.pair('kmeta', { topics: { pattern: 'kmeta.{side}.{table}', partitions: 1 } });
  const config = loaded.sync;
  await installCapture(config, pools, 'legacy', await compileFromDatabases(config, pools));
  let dropped = false;
  const k = await brokerBehindProxy('kmeta', () => {
    let metadataRequests = 0;
    return (apiKey) => !dropped && apiKey === 3 && ++metadataRequests === 2 && (dropped = true);
  });
  let running: Awaited<ReturnType<typeof startRelay>> | undefined;
  try {
    running = await startRelay({ config, kafka: { ...loaded.kafka!, brokers: k.brokers }, pools, side: 'legacy' });
    assert.equal(dropped, true, 'the metadata request failed');
    await insertOne(pools, 1);
    await waitFor('published', async () => Number((await pools.legacy.query('SELECT count(*) AS n FROM strangler_sync.changelog')).rows[0].n) === 0, 20_000);
  } finally {
    await running?.stop();
    await k.close();
  }
});

test('Kafka lost while apply subscribes (its metadata request for the topics fails): apply retries instead of exiting', async () => {
  // Found by CI's crash matrix: an apply worker restarted just before the broker restarted exited with "Connection
  // error: read ECONNRESET" (then mislabelled SYNC_DATABASE_UNAVAILABLE): connecting was retried, subscribing was not.
  const state = { armed: false, dropped: 0 };
  const topic = Buffer.from('ksubscribe.legacy.items');
  const k = await brokerBehindProxy('ksubscribe', () => (apiKey, frame) => state.armed && apiKey === 3 && frame.includes(topic) && state.dropped++ === 0);
  const { pools, relay, worker, publish } = await legacyToService('ksubscribe', { brokers: k.brokers });
  const w = worker();
  let stopped: unknown = null;
  w.done.catch((e: unknown) => { stopped = e; });
  try {
    state.armed = true; // after the relay started: the next metadata request naming the topic is apply's
    await w.start();
    assert.equal(state.dropped >= 1, true, 'a metadata request naming the topic was dropped');
    await publish(1, 2);
    await waitFor('2 applied', async () => (await itemCount(pools)) === 2 || stopped !== null, 20_000);
    assert.equal(stopped, null, `apply stopped: ${String(stopped)}`);
  } finally {
    await w.stop();
    await relay.stop();
    await k.close();
  }
});

/**
 * A broker of its own behind a proxy it advertises (127.0.0.2, so every client connection goes through the proxy).
 * `dropper` is called for each client connection; the request it answers true for (by API key, or by the whole
 * frame) is not forwarded: the connection is dropped instead, so Kafka is unreachable for exactly that request.
 */
async function brokerBehindProxy(name: string, dropper: () => (apiKey: number, frame: Buffer) => boolean) {
  const broker = await startKafkaBroker({ host: '127.0.0.1', port: 0, advertisedHost: '127.0.0.2', dataDir: join(stack.dir, `kafka-${name}`), groupMinSessionTimeoutMs: 200, initialRebalanceDelayMs: 0 });
  const sockets = new Set<Socket>();
  const proxy = createServer((client) => {
    const upstream = connect(broker.port, '127.0.0.1');
    const drop = dropper();
    for (const s of [client, upstream]) { sockets.add(s); s.on('close', () => sockets.delete(s)); }
    let pending = Buffer.alloc(0);
    client.on('data', (d: Buffer) => {
      pending = Buffer.concat([pending, d]);
      while (pending.length >= 6 && pending.length >= 4 + pending.readInt32BE(0)) {
        const frame = pending.subarray(0, 4 + pending.readInt32BE(0));
        pending = pending.subarray(frame.length);
        if (drop(frame.readInt16BE(4), frame)) { client.destroy(); return; }
        upstream.write(frame);
      }
    });
    upstream.on('data', (d: Buffer) => client.write(d));
    for (const s of [client, upstream]) s.on('error', () => {});
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((res) => proxy.listen(broker.port, '127.0.0.2', res));
  const close = async () => { for (const s of sockets) s.destroy(); await new Promise((res) => proxy.close(res)); await broker.close(); };
  return { brokers: [`127.0.0.2:${broker.port}`], close };
}

/**
 * A broker whose ListOffsets requests drop the connection while `state.failing` is set: Kafka unreachable for exactly
 * the request that asks for a partition's offsets (the consumer's fetches and commits go on).
 */
async function brokerFailingListOffsets(name: string) {
  const state = { failing: false, dropped: 0 };
  const k = await brokerBehindProxy(name, () => (apiKey) => state.failing && apiKey === 2 && ++state.dropped > 0);
  return { ...k, state };
}

test('asking Kafka for a partition\'s first offset fails after a hole (Kafka briefly unreachable): apply retries instead of stopping with a false SYNC_EVENTS_LOST', { timeout: 90_000 }, async () => {
  const k = await brokerFailingListOffsets('kholecheck');
  const { pools, relay, worker, publish } = await legacyToService('kholecheck', { brokers: k.brokers, retries: 1 });
  let logged = '';
  const log = createLogger({ level: 'info', destination: new Writable({ write(chunk: Buffer, _enc, cb) { logged += chunk.toString(); cb(); } }) });
  const w = worker(log);
  let stopped: unknown = null;
  w.done.catch((e: unknown) => { stopped = e; });
  try {
    await w.start();
    await publish(1, 3);
    await waitFor('3 applied', async () => (await itemCount(pools)) === 3);
    const backup = (await pools.service.query(`SELECT position FROM strangler_sync.applied WHERE source = 'legacy'`)).rows[0] as { position: string };
    await publish(4, 5);
    await waitFor('5 applied', async () => (await itemCount(pools)) === 5);
    // The target goes back to its state after item 3 while the consumer stays at offset 5 (as after a restore, or a
    // first fetch that beat the seek on join): the next batch shows a hole at offsets 3..4 that Kafka still holds.
    await pools.service.query(`BEGIN; SET LOCAL strangler.origin = 'sync';
      DELETE FROM catalog_items WHERE item_id IN (4, 5); DELETE FROM strangler_sync.row_version WHERE tbl = 'items' AND pk IN ('[4]', '[5]');
      UPDATE strangler_sync.applied SET position = ${backup.position}, kafka_offset = 2 WHERE source = 'legacy'; COMMIT`);
    k.state.failing = true;
    await insertOne(pools, 6);
    await waitFor('the first-offset check failed', () => k.state.dropped >= 2 || stopped !== null, 20_000);
    k.state.failing = false;
    await waitFor('1..6 applied', async () => (await itemCount(pools)) === 6 || stopped !== null, 20_000);
    assert.equal(stopped, null, `apply stopped: ${String(stopped)}`);
    assert.match(logged, /"code":"SYNC_KAFKA_FAILED".*could not check whether offsets 3\.\. of topic kholecheck\.legacy\.items partition 0 are still in Kafka/);
  } finally {
    await w.stop();
    await relay.stop();
    await k.close();
  }
});

test('a target restored from before sync\'s first apply while Kafka cannot tell the partition\'s first offset: apply waits for it instead of starting at the group\'s offset and skipping events', { timeout: 90_000 }, async () => {
  const k = await brokerFailingListOffsets('kstartcheck');
  const { config, pools, tables, relay, worker, publish } = await legacyToService('kstartcheck', { brokers: k.brokers, retries: 1 });
  let w = worker();
  try {
    await w.start();
    await publish(1, 3);
    await waitFor('3 applied', async () => (await itemCount(pools)) === 3);
    await w.stop();
    await pools.service.query(`BEGIN; SET LOCAL strangler.origin = 'sync'; DELETE FROM catalog_items;
      DELETE FROM strangler_sync.row_version; DELETE FROM strangler_sync.applied; COMMIT`);
    k.state.failing = true;
    w = worker();
    let stopped: unknown = null;
    w.done.catch((e: unknown) => { stopped = e; });
    await w.start();
    await publish(4);
    await waitFor('the first-offset request failed', () => k.state.dropped >= 2 || stopped !== null, 20_000);
    k.state.failing = false;
    await publish(5);
    await waitFor('item 5 applied', async () => (await pools.service.query('SELECT 1 FROM catalog_items WHERE item_id = 5')).rowCount === 1 || stopped !== null, 20_000);
    assert.equal(stopped, null, `apply stopped: ${String(stopped)}`);
    assert.equal(await itemCount(pools), 5, 'items 1..3 (before the group\'s offset) applied too');
    assert.equal((await verifyTables(config, pools, tables, 'items')).ok, true);
  } finally {
    await w.stop();
    await relay.stop();
    await k.close();
  }
});

test('Kafka lists the topics but does not answer for their offsets (a partition leader unreachable): status reports the backlog unknown and exits 1, never lag 0', { timeout: 90_000 }, async () => {
  // Regression: kafkaBacklog counted a topic whose offsets Kafka did not give as 0 behind, so status showed lag 0
  // (what operators wait for before verify or a rollback) with 2 events unapplied in Kafka and no kafkaError.
  const k = await brokerFailingListOffsets('kstatus');
  const { config, kafkaCfg, file, pools, relay, publish } = await legacyToService('kstatus', { brokers: k.brokers });
  const legacy = (st: Awaited<ReturnType<typeof readSyncStatus>>) => st.directions.find((x) => x.source === 'legacy');
  try {
    await publish(1, 2); // in Kafka, not applied (no apply worker)
    assert.equal(legacy(await readSyncStatus(config, pools, createStatusKafka(kafkaCfg, 'status-kstatus')))?.kafkaBacklog, 2);
    k.state.failing = true;
    const st = await readSyncStatus(config, pools, createStatusKafka(kafkaCfg, 'status-kstatus'));
    const d = legacy(st);
    assert.ok(k.state.dropped > 0, 'the offsets request failed');
    assert.equal(d?.kafkaBacklog, null, JSON.stringify(d));
    assert.match(d?.kafkaError ?? '', /reading the offsets of Kafka topic kstatus\.legacy\.(items|people|notes) failed .*its backlog is unknown/);
    assert.equal(lagSummary(st)['legacy-to-service']?.kafkaError, d?.kafkaError);
    assert.match(formatStatus(st), /legacy-to-service: lag at least 0 events .*in Kafka unknown\)\n {2}Kafka backlog unreadable: /);
    // The CLI (text and --json) exits 1, as for a broken direction, so a script waiting for lag 0 does not go on.
    const failing = join(stack.dir, 'kstatus-failing.json');
    writeFileSync(failing, JSON.stringify({ ...JSON.parse(readFileSync(file, 'utf8')) as object, kafka: { brokers: k.brokers, clientId: 'kstatus' } }));
    const cli = await run(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'cli/main.ts'), 'sync', 'status', '--json', '--config', failing],
      { cwd: REPO_ROOT, timeout: 60_000, env: { ...process.env, STRANGLER_LOG_LEVEL: 'error' } }).then(() => null, (e: unknown) => e as { code?: number | null; stdout?: string; stderr?: string });
    assert.equal(cli?.code, 1, `status CLI exit: ${JSON.stringify(cli)}`);
    const json = JSON.parse(cli.stdout ?? '') as { directions: { direction: string; kafkaBacklog: number | null; kafkaError: string | null }[] };
    assert.equal(json.directions.find((x) => x.direction === 'legacy-to-service')?.kafkaBacklog, null);
    assert.match(cli.stderr ?? '', /legacy-to-service: lag unknown, Kafka backlog unreadable: reading the offsets of Kafka topic/);
  } finally {
    await relay.stop();
    await k.close();
  }
});

test('a sync topic created before sync with cleanup.policy=compact: the relay and apply refuse to start, naming the topic, instead of a false SYNC_EVENTS_LOST later', { timeout: 90_000 }, async () => {
  const { loaded, pools } = await stack.pair('kcompact', { topics: { pattern: 'kcompact.{side}.{table}', partitions: 1 } });
  const config = loaded.sync;
  const tables = await compileFromDatabases(config, pools);
  await installCapture(config, pools, 'legacy', tables);
  await installCapture(config, pools, 'service', tables);
  const admin = createKafka(loaded.kafka!, 'admin-kcompact').admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: 'kcompact.legacy.items', numPartitions: 1, configEntries: [{ name: 'cleanup.policy', value: 'compact,delete' }] }] });
  await admin.disconnect();
  const refused = (err: unknown) => isStranglerError(err) && err.code === 'SYNC_TOPIC_COMPACTED'
    && /topic kcompact\.legacy\.items \(cleanup\.policy=compact,delete\) is compacted.*cleanup\.policy=delete/.test(err.message);
  const w = new ApplyWorker({ config, kafka: createKafka(loaded.kafka!, 'apply-kcompact'), source: 'legacy', tables, sessionTimeoutMs: 1_000,
    applier: new Applier({ pool: pools.service, config, target: 'service', tables }) });
  try {
    await assert.rejects(w.start(), refused);
  } finally {
    await w.stop();
  }
  await assert.rejects(startRelay({ config, kafka: loaded.kafka!, pools, side: 'legacy' }), refused);
  // The other direction's topic (created by sync, cleanup.policy=delete) is accepted as it exists.
  const relay = await startRelay({ config, kafka: loaded.kafka!, pools, side: 'service' });
  await relay.stop();
  const again = await startRelay({ config, kafka: loaded.kafka!, pools, side: 'service' });
  await again.stop();
  // The refusals are what `sync status` reports for the direction (a supervisor restarting the relay or apply meets
  // them again), the relay's first, until each gets past it: the topic recreated as sync needs it, an event through.
  const broken = async () => (await readSyncStatus(config, pools)).directions.find((d) => d.source === 'legacy')?.broken ?? null;
  const relayStopped = await broken();
  assert.equal(relayStopped?.code, 'SYNC_TOPIC_COMPACTED');
  assert.equal(relayStopped?.worker, 'relay');
  assert.match(relayStopped?.message ?? '', /topic kcompact\.legacy\.items \(cleanup\.policy=compact,delete\) is compacted/);
  assert.equal((await readSyncStatus(config, pools)).directions.find((d) => d.source === 'service')?.broken, null);
  const fixAdmin = createKafka(loaded.kafka!, 'admin-kcompact-fix').admin();
  await fixAdmin.connect();
  await fixAdmin.deleteTopics({ topics: ['kcompact.legacy.items'] });
  await fixAdmin.disconnect();
  const relay2 = await startRelay({ config, kafka: loaded.kafka!, pools, side: 'legacy' });
  await waitFor('the relay\'s record cleared by its first cycle', async () => (await broken())?.worker !== 'relay', 5_000);
  const stopped = await broken();
  assert.equal(stopped?.code, 'SYNC_TOPIC_COMPACTED');
  assert.equal(stopped?.worker, 'apply');
  assert.match(stopped?.message ?? '', /topic kcompact\.legacy\.items \(cleanup\.policy=compact,delete\) is compacted/);
  const w2 = new ApplyWorker({ config, kafka: createKafka(loaded.kafka!, 'apply-kcompact2'), source: 'legacy', tables, sessionTimeoutMs: 1_000,
    applier: new Applier({ pool: pools.service, config, target: 'service', tables }) });
  try {
    await w2.start();
    assert.deepEqual(await broken(), stopped, 'still broken until apply got past it');
    await insertOne(pools, 1);
    await waitFor('applied', async () => (await itemCount(pools)) === 1);
    await waitFor('no longer broken', async () => (await broken()) === null, 5_000);
  } finally {
    await w2.stop();
    await relay2.stop();
  }
});
