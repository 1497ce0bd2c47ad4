/**
 * kafkajs 2.2.4 against the dev broker over real sockets: produce/consume, keyed order, group split and takeover
 * (leave and kill -9), offsets across a restart, admin calls.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { CompressionTypes, Kafka, logLevel, Partitioners, type Consumer, type EachMessagePayload } from 'kafkajs';
import type { KafkaBroker } from '../../../devstack/kafka/index.ts';
import { commitOffsets } from './raw-client.ts';
import { REPO_ROOT, startTestBroker, tempDir, unique, waitFor } from './support.ts';

const CONSUMER_TUNING = { sessionTimeout: 3000, heartbeatInterval: 300, maxWaitTimeInMs: 100, rebalanceTimeout: 10_000 };

function client(address: string): Kafka {
  return new Kafka({ brokers: [address], clientId: 'kafkajs-test', logLevel: logLevel.NOTHING, retry: { retries: 5, initialRetryTime: 100 } });
}

interface Seen { partition: number; offset: number; key: string; value: string }

async function consume(consumer: Consumer, topic: string, seen: Seen[], fromBeginning = true): Promise<void> {
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning });
  await consumer.run({
    autoCommitThreshold: 1,
    eachMessage: async ({ partition, message }: EachMessagePayload) => {
      seen.push({ partition, offset: Number(message.offset), key: message.key?.toString() ?? '', value: message.value?.toString() ?? '' });
    },
  });
}

function assignedPartitions(consumer: Consumer): Promise<number[]> {
  return new Promise((resolve) => {
    const off = consumer.on(consumer.events.GROUP_JOIN, (e) => {
      off();
      resolve(Object.values(e.payload.memberAssignment).flat().sort());
    });
  });
}

describe('kafkajs 2.2.4 against the dev broker', () => {
  let broker: KafkaBroker;
  let kafka: Kafka;
  const dir = tempDir('kafkajs');
  const cleanups: (() => Promise<void>)[] = [];

  before(async () => {
    broker = await startTestBroker({ dataDir: dir.path, defaultPartitions: 4 });
    kafka = client(broker.address);
  });
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    await broker.close();
    dir.remove();
  });

  test('produce/consume round trip across partitions; keys keep partition and order; acks 0, 1, -1', async () => {
    const topic = unique('roundtrip');
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    cleanups.push(() => producer.disconnect());
    const sent: { key: string; value: string }[] = [];
    for (let round = 0; round < 6; round++) {
      const messages = Array.from({ length: 20 }, (_, i) => ({ key: `key-${i % 7}`, value: `r${round}-m${i}`, headers: { h: 'v' } }));
      sent.push(...messages.map(({ key, value }) => ({ key, value })));
      const acks = [-1, 1, 0][round % 3]!;
      await producer.send({ topic, messages, acks });
    }
    const seen: Seen[] = [];
    const consumer = kafka.consumer({ groupId: unique('g'), ...CONSUMER_TUNING });
    cleanups.push(() => consumer.disconnect());
    await consume(consumer, topic, seen);
    await waitFor('all messages consumed', () => seen.length >= sent.length);
    await consumer.disconnect();
    assert.equal(seen.length, sent.length, 'no duplicates');
    assert.ok(new Set(seen.map((s) => s.partition)).size > 1, 'spread over several partitions');
    for (const key of new Set(sent.map((s) => s.key))) {
      const got = seen.filter((s) => s.key === key);
      assert.equal(new Set(got.map((s) => s.partition)).size, 1, `${key} stays in one partition`);
      assert.deepEqual(got.map((s) => s.value), sent.filter((s) => s.key === key).map((s) => s.value), `${key} keeps order`);
    }
  });

  test('two consumers split the partitions; after one leaves, then one is killed, the other takes over without loss or re-reading committed messages', async () => {
    const topic = unique('split');
    const groupId = unique('group');
    const admin = kafka.admin();
    await admin.connect();
    cleanups.push(() => admin.disconnect());
    await admin.createTopics({ topics: [{ topic, numPartitions: 4 }] });
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    cleanups.push(() => producer.disconnect());
    let produced = 0;
    const produce = async (n: number): Promise<void> => {
      await producer.send({ topic, messages: Array.from({ length: n }, () => ({ key: `k${produced % 11}`, value: `m${produced++}` })) });
    };
    const committedTotal = async (): Promise<number> => {
      const offsets = await admin.fetchOffsets({ groupId, topics: [topic] });
      return offsets[0]!.partitions.reduce((sum, p) => sum + Math.max(0, Number(p.offset)), 0);
    };

    const seenA: Seen[] = [];
    const seenB: Seen[] = [];
    const a = kafka.consumer({ groupId, ...CONSUMER_TUNING });
    const b = kafka.consumer({ groupId, ...CONSUMER_TUNING });
    cleanups.push(() => a.disconnect(), () => b.disconnect());
    const aJoined = assignedPartitions(a);
    await consume(a, topic, seenA);
    assert.deepEqual(await aJoined, [0, 1, 2, 3], 'alone, A owns every partition');

    const aRejoined = assignedPartitions(a);
    const bJoined = assignedPartitions(b);
    await consume(b, topic, seenB);
    const [pa, pb] = await Promise.all([aRejoined, bJoined]);
    assert.deepEqual([...pa, ...pb].sort(), [0, 1, 2, 3], 'assignments cover all partitions');
    assert.equal(pa.filter((p) => pb.includes(p)).length, 0, 'assignments are disjoint');
    assert.ok(pa.length > 0 && pb.length > 0);

    await produce(80);
    await waitFor('phase 1 consumed', () => seenA.length + seenB.length >= 80);
    await waitFor('phase 1 committed', async () => (await committedTotal()) === 80);
    assert.ok(seenA.every((s) => pa.includes(s.partition)) && seenB.every((s) => pb.includes(s.partition)));

    // B leaves (LeaveGroup): A takes every partition and resumes from B's commits.
    const aAlone = assignedPartitions(a);
    await b.disconnect();
    assert.deepEqual(await aAlone, [0, 1, 2, 3]);
    const beforeLeave = seenA.length;
    await produce(40);
    await waitFor('phase 2 consumed by A', () => seenA.length - beforeLeave >= 40);
    await waitFor('phase 2 committed', async () => (await committedTotal()) === 120);

    // C joins in a child process, takes some partitions, and is killed with SIGKILL (no LeaveGroup).
    const aWithC = assignedPartitions(a);
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'test/integration/kafka/fixtures/group-consumer.ts'), broker.address, groupId, topic], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    const childExit = new Promise((r) => child.once('exit', r));
    cleanups.push(async () => { child.kill('SIGKILL'); await childExit; });
    const seenC: Seen[] = [];
    let cPartitions: number[] = [];
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const e = JSON.parse(line) as { event: string; partitions?: number[]; partition?: number; offset?: string; value?: string };
      if (e.event === 'joined') cPartitions = e.partitions!;
      if (e.event === 'message') seenC.push({ partition: e.partition!, offset: Number(e.offset), key: '', value: e.value! });
    });
    const paC = await aWithC;
    await waitFor('C joined', () => cPartitions.length > 0);
    assert.deepEqual([...paC, ...cPartitions].sort(), [0, 1, 2, 3]);
    const beforeC = seenA.length;
    await produce(40);
    await waitFor('phase 3 consumed by A and C', () => seenA.length - beforeC + seenC.length >= 40);
    await waitFor('phase 3 committed', async () => (await committedTotal()) === 160);
    assert.equal(seenC.filter((s) => Number(s.value.slice(1)) < 120).length, 0, 'C re-read nothing committed before it joined');

    const aAfterKill = assignedPartitions(a);
    child.kill('SIGKILL');
    await childExit;
    assert.deepEqual(await aAfterKill, [0, 1, 2, 3], 'A owns everything after C\'s session expires');
    const beforeKill = seenA.length;
    await produce(40);
    await waitFor('phase 4 consumed by A', () => seenA.length - beforeKill >= 40);
    await waitFor('phase 4 committed', async () => (await committedTotal()) === 200);

    const all = [...seenA, ...seenB, ...seenC].map((s) => s.value);
    assert.equal(new Set(all).size, 200, 'every produced message consumed');
    assert.equal(all.length, 200, 'no committed message was read twice');
    await a.disconnect();
  });

  test('eachBatch sees the exact high watermark and offsetLag; an idempotent producer (InitProducerId) and a GZIP batch work', async () => {
    const topic = unique('batch');
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    cleanups.push(() => producer.disconnect());
    await producer.send({ topic, messages: Array.from({ length: 25 }, (_, i) => ({ key: 'same', value: `b${i}` })) });
    await producer.send({ topic, compression: CompressionTypes.GZIP, messages: Array.from({ length: 5 }, (_, i) => ({ key: 'same', value: `c${i}` })) });
    const batches: { hw: string; lag: string; last: string; count: number }[] = [];
    const values: string[] = [];
    const consumer = kafka.consumer({ groupId: unique('g'), ...CONSUMER_TUNING });
    cleanups.push(() => consumer.disconnect());
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachBatch: async ({ batch }) => {
        batches.push({ hw: batch.highWatermark, lag: batch.offsetLag(), last: batch.lastOffset(), count: batch.messages.length });
        values.push(...batch.messages.map((m) => m.value!.toString()));
      },
    });
    await waitFor('30 messages in batches', () => batches.reduce((s, b) => s + b.count, 0) >= 30);
    await consumer.disconnect();
    assert.deepEqual(values.slice(-5), ['c0', 'c1', 'c2', 'c3', 'c4'], 'the GZIP batch is served as stored and decoded by kafkajs');
    const final = batches[batches.length - 1]!;
    assert.deepEqual([final.hw, final.last, final.lag], ['30', '29', '0']);
  });

  test('admin: createTopics, fetchTopicMetadata, fetchOffsets (never-committed group), describeGroups, deleteTopics', async () => {
    const admin = kafka.admin();
    await admin.connect();
    cleanups.push(() => admin.disconnect());
    const topic = unique('admin');
    assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: 3, replicationFactor: 3 }] }), true);
    assert.equal(await admin.createTopics({ topics: [{ topic }] }), false, 'existing topic');
    const metadata = await admin.fetchTopicMetadata({ topics: [topic] });
    assert.equal(metadata.topics[0]!.partitions.length, 3);
    await assert.rejects(admin.fetchTopicMetadata({ topics: [unique('missing')] }));
    const offsets = await admin.fetchOffsets({ groupId: unique('never'), topics: [topic] });
    assert.deepEqual(offsets[0]!.partitions.map((p) => p.offset).sort(), ['-1', '-1', '-1']);
    const described = await admin.describeGroups([unique('nobody')]);
    assert.equal(described.groups[0]!.state, 'Dead');
    assert.ok((await admin.listTopics()).includes(topic));
    await admin.deleteTopics({ topics: [topic] });
    assert.ok(!(await admin.listTopics()).includes(topic));
    assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] }), true, 'the name can be reused');
    const group = unique('listed');
    // (admin.setOffsets would do, but it runs a paused consumer for kafkajs's 5 s maxWait first.)
    assert.deepEqual(await commitOffsets(broker.port, group, topic, [{ partition: 0, offset: 0 }]), [0]);
    assert.ok((await admin.listGroups()).groups.some((g) => g.groupId === group));
    await admin.deleteGroups([group]);
    assert.ok(!(await admin.listGroups()).groups.some((g) => g.groupId === group));
  });

  test('deleting a topic deletes its committed offsets, as Kafka does: a group on the recreated topic reads it from the start', async () => {
    const topic = unique('recreated');
    const groupId = unique('g');
    const admin = kafka.admin();
    await admin.connect();
    cleanups.push(() => admin.disconnect());
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] });
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    cleanups.push(() => producer.disconnect());
    await producer.send({ topic, messages: Array.from({ length: 5 }, (_, i) => ({ value: `old${i}` })) });
    // The group consumed the old topic up to its end.
    assert.deepEqual(await commitOffsets(broker.port, groupId, topic, [{ partition: 0, offset: 5 }]), [0]);
    await admin.deleteTopics({ topics: [topic] });
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] });
    await producer.send({ topic, messages: Array.from({ length: 8 }, (_, i) => ({ value: `new${i}` })) });
    const offsets = await admin.fetchOffsets({ groupId, topics: [topic] });
    assert.deepEqual(offsets[0]!.partitions.map((p) => p.offset), ['-1'], 'the old topic\'s commit is gone with it');
    assert.ok(!(await admin.listGroups()).groups.some((g) => g.groupId === groupId), 'a group left with no offsets and no members is gone');

    const seen: Seen[] = [];
    const consumer = kafka.consumer({ groupId, ...CONSUMER_TUNING });
    cleanups.push(() => consumer.disconnect());
    await consume(consumer, topic, seen);
    await waitFor('the recreated topic read from its start', () => seen.length >= 8);
    await consumer.disconnect();
    assert.deepEqual(seen.map((s) => s.value), Array.from({ length: 8 }, (_, i) => `new${i}`));
  });

  test('committed offsets and logs survive close and restart on the same data dir', async () => {
    const topic = unique('restart');
    const groupId = unique('g');
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    await producer.send({ topic, messages: Array.from({ length: 30 }, (_, i) => ({ key: `k${i}`, value: `m${i}` })) });
    await producer.disconnect();
    const seen: Seen[] = [];
    const consumer = kafka.consumer({ groupId, ...CONSUMER_TUNING });
    await consume(consumer, topic, seen);
    await waitFor('first 30 consumed', () => seen.length >= 30);
    const admin = kafka.admin();
    await admin.connect();
    await waitFor('first 30 committed', async () => (await admin.fetchOffsets({ groupId, topics: [topic] }))[0]!.partitions.reduce((s, p) => s + Math.max(0, Number(p.offset)), 0) === 30);
    const committed = await admin.fetchOffsets({ groupId, topics: [topic] });
    await consumer.disconnect();
    await admin.disconnect();

    await broker.close();
    broker = await startTestBroker({ dataDir: dir.path, defaultPartitions: 4 });
    kafka = client(broker.address);

    const admin2 = kafka.admin();
    await admin2.connect();
    cleanups.push(() => admin2.disconnect());
    assert.deepEqual(await admin2.fetchOffsets({ groupId, topics: [topic] }), committed);
    const p2 = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await p2.connect();
    cleanups.push(() => p2.disconnect());
    await p2.send({ topic, messages: Array.from({ length: 10 }, (_, i) => ({ key: `k${i}`, value: `after${i}` })) });
    const resumed: Seen[] = [];
    const c2 = kafka.consumer({ groupId, ...CONSUMER_TUNING });
    cleanups.push(() => c2.disconnect());
    await consume(c2, topic, resumed);
    await waitFor('10 new messages consumed', () => resumed.length >= 10);
    const everything: Seen[] = [];
    const c3 = kafka.consumer({ groupId: unique('fresh'), ...CONSUMER_TUNING });
    cleanups.push(() => c3.disconnect());
    await consume(c3, topic, everything);
    await waitFor('all 40 re-read by a fresh group', () => everything.length >= 40);
    await c2.disconnect();
    await c3.disconnect();
    assert.deepEqual(resumed.map((s) => s.value).sort(), Array.from({ length: 10 }, (_, i) => `after${i}`).sort(), 'resumed at the commit: nothing old re-read');
    assert.equal(everything.length, 40);
  });
});
