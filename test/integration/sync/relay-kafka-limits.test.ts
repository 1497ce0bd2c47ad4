/**
 * The relay against the dev broker's size limits (max.message.bytes, Kafka's default 1048588 bytes per batch):
 * produce requests are sized in UTF-8 bytes, a request the topic refuses as too large is resent one message at a
 * time, and a single event over the limit stops the relay with SYNC_EVENT_TOO_LARGE instead of a retry loop that
 * blocks every later change.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Kafka } from 'kafkajs';
import { createLogger } from '../../../common/logger.ts';
import { REPO_ROOT, SyncStack, waitFor } from './stack.ts';
import { StranglerError } from '../../../common/errors.ts';
import { compileFromDatabases, installCapture } from '../../../legacy-adapter/capture/index.ts';
import { ChangeRelay } from '../../../legacy-adapter/capture/relay.ts';
import { createKafka, ensureTopics, KafkaSink, messageBytes, sideTopics } from '../../../migration-scripts/kafka.ts';
import { topicFor } from '../../../migration-scripts/mapping.ts';
import { formatStatus, readSyncStatus } from '../../../migration-scripts/status.ts';
import type { Pools } from '../../../migration-scripts/db.ts';
import type { SyncConfig } from '../../../migration-scripts/config-schema.ts';

const stack = new SyncStack();
const sinks: KafkaSink[] = [];
before(() => stack.start());
after(async () => {
  for (const s of sinks) await s.close();
  await stack.stop();
});

async function relayPair(name: string, topicConfig?: Record<string, string>): Promise<{ config: SyncConfig; pools: Pools; kafka: Kafka; sink: KafkaSink; topic: string; file: string }> {
  const { loaded, pools, file } = await stack.pair(name);
  assert.ok(loaded.kafka, 'the test config has a kafka section');
  const config = loaded.sync;
  await installCapture(config, pools, 'legacy', await compileFromDatabases(config, pools));
  const kafka = createKafka(loaded.kafka, 'relay-legacy');
  const topic = topicFor(config, 'legacy', 'items');
  if (topicConfig) {
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 1, configEntries: Object.entries(topicConfig).map(([name, value]) => ({ name, value })) }] });
    await admin.disconnect();
  }
  await ensureTopics(kafka, sideTopics(config, 'legacy'), 1);
  const sink = await KafkaSink.connect(kafka);
  sinks.push(sink);
  return { config, pools, kafka, sink, topic, file };
}

async function messagesIn(kafka: Kafka, topic: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    return (await admin.fetchTopicOffsets(topic)).reduce((n, o) => n + Number(o.high) - Number(o.low), 0);
  } finally {
    await admin.disconnect();
  }
}

const unpublished = async (pools: Pools) => Number((await pools.legacy.query<{ n: string }>('SELECT count(*) AS n FROM strangler_sync.changelog')).rows[0]?.n);

test('requests are sized in bytes: six events of 300 kB of multi-byte text (100,000 characters each, all under the limit) are published', async () => {
  const { config, pools, kafka, sink, topic } = await relayPair('bytes');
  const relay = new ChangeRelay({ config, pool: pools.legacy, side: 'legacy', sink });
  await pools.legacy.query(`INSERT INTO items (id, name, body) SELECT g, 'n', repeat('東', 100000) FROM generate_series(1, 6) g`);
  // Counted in characters, all six went out as one 1.8 MB request, which the broker refused on every cycle.
  assert.ok(messageBytes({ key: '[1]', value: '東'.repeat(100_000) }) > 300_000, 'a message is counted in UTF-8 bytes');
  assert.equal(await relay.step(), 6);
  assert.equal(await unpublished(pools), 0);
  assert.equal(await messagesIn(kafka, topic), 6);
});

test('a request the topic refuses as too large (its max.message.bytes below the relay\'s request size) is resent one message at a time, in order', async () => {
  const { config, pools, kafka, sink, topic } = await relayPair('split', { 'max.message.bytes': '200000' });
  const relay = new ChangeRelay({ config, pool: pools.legacy, side: 'legacy', sink });
  await pools.legacy.query(`INSERT INTO items (id, name, body) SELECT g, 'n', repeat('x', 150000) FROM generate_series(1, 3) g`);
  assert.equal(await relay.step(), 3);
  assert.equal(await unpublished(pools), 0);
  assert.equal(await messagesIn(kafka, topic), 3);
  const consumer = kafka.consumer({ groupId: 'split-order', maxWaitTimeInMs: 50 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const keys: string[] = [];
  await new Promise<void>((resolve, reject) => {
    consumer.run({ eachMessage: async ({ message }) => { keys.push(String(message.key)); if (keys.length === 3) resolve(); } }).catch(reject);
  });
  await consumer.disconnect();
  assert.deepEqual(keys, ['[1]', '[2]', '[3]']);
});

test('an event larger than the topic accepts stops the relay with SYNC_EVENT_TOO_LARGE naming table, key, size and limit; later changes wait behind it, nothing is skipped', async () => {
  const { config, pools, kafka, sink, topic } = await relayPair('toolarge');
  const lines: { level: number; event?: string; msg: string }[] = [];
  const log = createLogger({ level: 'warn', destination: new Writable({ write(chunk: Buffer, _enc, cb) { for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as { level: number; event?: string; msg: string }); cb(); } }) });
  const relay = new ChangeRelay({ config, pool: pools.legacy, side: 'legacy', sink, log });
  await pools.legacy.query(`INSERT INTO items (id, name, body) VALUES (1, 'big', repeat('x', 600000))`);
  assert.equal(await relay.step(), 1, 'the insert (one 600 kB image) fits');
  await pools.legacy.query(`UPDATE items SET name = 'big2' WHERE id = 1`); // before and after images: ~1.2 MB
  await pools.legacy.query(`INSERT INTO items (id, name) VALUES (2, 'small, after the big one')`);
  const giveUp = setTimeout(() => void relay.stop(), 15_000); // a relay that keeps retrying fails the assertion below
  await assert.rejects(relay.run(), (err: unknown) => {
    assert.equal((err as { code?: string }).code, 'SYNC_EVENT_TOO_LARGE');
    assert.match((err as Error).message, /the change of items key \[1\] \(position \d+\) is a 12\d{5}-byte event .*max\.message\.bytes.*1048588.*Raise max\.message\.bytes of topic (\S+) above/);
    assert.equal(/of topic (\S+) above/.exec((err as Error).message)?.[1], topic);
    return true;
  });
  clearTimeout(giveUp);
  await relay.stop();
  assert.deepEqual(lines.filter((l) => l.event === 'sync.relay.retry'), [], 'no retry loop');
  assert.equal(lines.filter((l) => l.event === 'sync.relay.failed').length, 1, 'one error line');
  assert.equal(await unpublished(pools), 2, 'the update and the change after it are still queued, in order');
  assert.equal(await messagesIn(kafka, topic), 1, 'nothing after the big change was published past it');
});

/** `strangler sync status --config FILE` as a child process: its exit code and stderr. */
async function statusCli(file: string): Promise<{ code: number; stderr: string }> {
  return promisify(execFile)(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'cli/main.ts'), 'sync', 'status', '--config', file],
    { cwd: REPO_ROOT, timeout: 60_000, env: { ...process.env, STRANGLER_LOG_LEVEL: 'error' } })
    .then((r) => ({ code: 0, stderr: r.stderr }), (e: { code?: number; stderr?: string }) => ({ code: e.code ?? -1, stderr: e.stderr ?? '' }));
}

test('a relay stopped on an event too large for Kafka: status reports the direction broken with its code and message (CLI exit 1, not only a growing lag) until a relay gets past it', async () => {
  const { config, pools, kafka, sink, topic, file } = await relayPair('toolargestatus');
  await installCapture(config, pools, 'service', await compileFromDatabases(config, pools)); // (status reads both sides)
  await pools.legacy.query(`INSERT INTO items (id, name, body) VALUES (1, 'big', repeat('x', 1200000))`);
  await pools.legacy.query(`INSERT INTO items (id, name) VALUES (2, 'small, after the big one')`);
  const relay = new ChangeRelay({ config, pool: pools.legacy, side: 'legacy', sink });
  const giveUp = setTimeout(() => void relay.stop(), 15_000);
  await assert.rejects(relay.run(), (err: unknown) => (err as { code?: string }).code === 'SYNC_EVENT_TOO_LARGE');
  clearTimeout(giveUp);
  await relay.stop();

  const legacy = async () => (await readSyncStatus(config, pools, kafka)).directions.find((d) => d.source === 'legacy');
  const d = await legacy();
  assert.equal(d?.broken?.code, 'SYNC_EVENT_TOO_LARGE', JSON.stringify(d));
  assert.equal(d?.broken?.worker, 'relay');
  assert.match(d?.broken?.message ?? '', /^relay: the change of items key \[1\] \(position \d+\) is a 12\d{5}-byte event .*Raise max\.message\.bytes of topic/);
  assert.ok(Date.parse(d?.broken?.at ?? '') > Date.now() - 60_000, `recorded when it stopped: ${d?.broken?.at}`);
  assert.equal(d?.lagEvents, 2, 'both changes wait');
  assert.equal((await readSyncStatus(config, pools, kafka)).directions.find((x) => x.source === 'service')?.broken, null, 'the other direction is fine');
  const text = formatStatus(await readSyncStatus(config, pools, kafka));
  assert.match(text, /legacy-to-service: BROKEN \(relay stopped .*\), lag 2 events/);
  assert.match(text, /\n {2}BROKEN SYNC_EVENT_TOO_LARGE \(relay\): relay: the change of items key \[1\]/);
  const cli = await statusCli(file);
  assert.equal(cli.code, 1, cli.stderr);
  assert.match(cli.stderr, /strangler: legacy-to-service: SYNC_EVENT_TOO_LARGE: relay: the change of items key \[1\]/);

  // Fixed as the message says (here: the topic recreated with a larger max.message.bytes): the next relay publishes
  // the change and the direction is no longer broken.
  const admin = kafka.admin();
  await admin.connect();
  await admin.deleteTopics({ topics: [topic] });
  await admin.createTopics({ topics: [{ topic, numPartitions: 1, configEntries: [{ name: 'max.message.bytes', value: '4000000' }] }] });
  await admin.disconnect();
  const fixed = new ChangeRelay({ config, pool: pools.legacy, side: 'legacy', sink: await KafkaSink.connect(kafka).then((k) => { sinks.push(k); return k; }) });
  assert.equal(await fixed.step(), 2);
  assert.equal((await legacy())?.broken, null);
  const cliFixed = await statusCli(file);
  assert.equal(cliFixed.code, 0, cliFixed.stderr);

  // A failure retrying can fix (Kafka unreachable) is retried, never recorded as broken.
  await pools.legacy.query(`INSERT INTO items (id, name) VALUES (3, 'while Kafka is down')`);
  let attempts = 0;
  const down = new ChangeRelay({ config, pool: pools.legacy, side: 'legacy', sink: { publish: () => { attempts += 1; return Promise.reject(new StranglerError('SYNC_KAFKA_FAILED', 'relay: producing 1 messages failed: connect ECONNREFUSED')); } } });
  const running = down.run();
  await waitFor('the relay to retry', () => attempts >= 3);
  await down.stop();
  await running;
  const st = await legacy();
  assert.equal(st?.broken, null, JSON.stringify(st?.broken));
  assert.equal(st?.capturePending, 1);
});
