/**
 * Protocol-level behaviour over a raw socket, where the clients would hide mistakes: Metadata null vs [] and
 * auto-creation flags, acks=0 silence with ordered responses, Fetch entry mirroring, preferred_read_replica,
 * long-poll wake-up and min_bytes, ListOffsets earliest/latest, OffsetCommit/OffsetFetch for unknown topics and
 * groups, and failed writes to the data dir (a real file size limit on a child broker: KAFKA_STORAGE_ERROR).
 */
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import type { KafkaBroker } from '../../../devstack/kafka/index.ts';
import { KAFKA_LOG } from '../../../devstack/kafka/log-events.ts';
import { ApiKey } from '../../../devstack/kafka/protocol/api-keys.ts';
import { KafkaError } from '../../../devstack/kafka/protocol/error-codes.ts';
import { Reader } from '../../../devstack/kafka/protocol/reader.ts';
import { Writer } from '../../../devstack/kafka/protocol/writer.ts';
import { decodeRecords, encodeBatch } from '../../../devstack/kafka/records/record-codec.ts';
import { commitOffsets, RawClient, requestFrame } from './raw-client.ts';
import { limitFileSize, prlimitSkip, spawnBroker, startTestBroker, tempDir, unique, waitFor } from './support.ts';

function metadataV4(topics: string[] | null, allowAutoCreate: boolean): Buffer {
  const w = new Writer();
  if (topics === null) w.int32(-1); else w.array(topics, (w, t) => w.string(t));
  return w.bool(allowAutoCreate).toBuffer();
}

function parseMetadataV4(frame: Buffer): { topics: { error: number; name: string; partitions: number }[] } {
  const r = new Reader(frame, 4);
  r.int32();
  r.array((x) => { x.int32(); x.string(); x.int32(); x.nullableString(); });
  r.nullableString();
  r.int32();
  const topics = r.array((t) => {
    const error = t.int16();
    const name = t.string();
    t.bool();
    const partitions = t.array((p) => { p.int16(); p.int32(); p.int32(); p.array((x) => x.int32()); p.array((x) => x.int32()); }).length;
    return { error, name, partitions };
  });
  return { topics };
}

function produceV7(topic: string, partition: number, batch: Buffer, acks: number): Buffer {
  return new Writer().nullableString(null).int16(acks).int32(1000).int32(1).string(topic).int32(1).int32(partition).bytes(batch).toBuffer();
}

function fetchV11(maxWaitMs: number, minBytes: number, entries: { topic: string; partition: number; offset: number }[]): Buffer {
  const w = new Writer().int32(-1).int32(maxWaitMs).int32(minBytes).int32(10_000_000).int8(1).int32(0).int32(-1);
  w.array(entries, (w, e) => w.string(e.topic).int32(1).int32(e.partition).int32(-1).int64(e.offset).int64(-1).int32(1_000_000));
  return w.int32(0).string('').toBuffer();
}

function parseProduceV7(frame: Buffer): [error: number, baseOffset: number] {
  const r = new Reader(frame, 4);
  r.int32(); r.string(); r.int32(); r.int32();
  return [r.int16(), r.int64n()];
}

interface FetchPart { topic: string; partition: number; error: number; hw: number; lso: number; logStart: number; preferredReplica: number; records: Buffer }
function parseFetchV11(frame: Buffer): FetchPart[] {
  const r = new Reader(frame, 4);
  r.int32(); r.int16(); r.int32();
  return r.array((t) => {
    const topic = t.string();
    return t.array((p) => {
      const partition = p.int32();
      const error = p.int16();
      const hw = p.int64n();
      const lso = p.int64n();
      const logStart = p.int64n();
      p.array((a) => { a.int64(); a.int64(); });
      return { topic, partition, error, hw, lso, logStart, preferredReplica: p.int32(), records: p.bytes() };
    });
  }).flat();
}

describe('wire behaviour', () => {
  let broker: KafkaBroker;
  let noAuto: KafkaBroker;
  let c: RawClient;
  let correlation = 100;
  before(async () => {
    broker = await startTestBroker({ defaultPartitions: 2 });
    noAuto = await startTestBroker({ autoCreateTopics: false });
    c = await RawClient.open(broker.port);
  });
  after(async () => {
    c.close();
    await broker.close();
    await noAuto.close();
  });

  async function call(key: number, version: number, body: Buffer, client = c): Promise<Buffer> {
    const id = ++correlation;
    const before = client.frames.length;
    client.write(requestFrame(key, version, id, body));
    const frames = await client.waitFrames(before + 1);
    const frame = frames[before]!;
    assert.equal(frame.readInt32BE(0), id, 'correlation id echoed');
    return frame;
  }

  test('Metadata: null = all topics, [] = none, auto-creation only when allowed by request and broker', async () => {
    const t = unique('meta');
    const none = parseMetadataV4(await call(ApiKey.Metadata, 4, metadataV4([t], false)));
    assert.deepEqual(none.topics, [{ error: KafkaError.UNKNOWN_TOPIC_OR_PARTITION, name: t, partitions: 0 }]);
    const created = parseMetadataV4(await call(ApiKey.Metadata, 4, metadataV4([t], true)));
    assert.deepEqual(created.topics, [{ error: 0, name: t, partitions: 2 }]);
    assert.deepEqual(parseMetadataV4(await call(ApiKey.Metadata, 4, metadataV4([], true))).topics, [], '[] = brokers only');
    assert.ok(parseMetadataV4(await call(ApiKey.Metadata, 4, metadataV4(null, true))).topics.some((x) => x.name === t), 'null = all');
    assert.equal(parseMetadataV4(await call(ApiKey.Metadata, 4, metadataV4(['bad/name'], true))).topics[0]!.error, KafkaError.INVALID_TOPIC_EXCEPTION);
    const other = await RawClient.open(noAuto.port);
    const off = parseMetadataV4(await call(ApiKey.Metadata, 4, metadataV4([t], true), other));
    other.close();
    assert.equal(off.topics[0]!.error, KafkaError.UNKNOWN_TOPIC_OR_PARTITION, 'autoCreateTopics: false');
  });

  test('acks=0 gets no response; the next request is answered in order; CRC errors are refused', async () => {
    const t = unique('acks0');
    await call(ApiKey.Metadata, 4, metadataV4([t], true));
    c.write(requestFrame(ApiKey.Produce, 7, 555, produceV7(t, 0, encodeBatch([{ key: null, value: Buffer.from('silent') }]), 0)));
    const acked = await call(ApiKey.Produce, 7, produceV7(t, 0, encodeBatch([{ key: null, value: Buffer.from('loud') }]), -1));
    const [error, baseOffset] = parseProduceV7(acked);
    assert.equal(error, 0);
    assert.equal(baseOffset, 1, 'the acks=0 batch took offset 0');
    const bad = encodeBatch([{ key: null, value: Buffer.from('x') }]);
    bad[bad.length - 1] = bad[bad.length - 1]! ^ 1;
    assert.equal(parseProduceV7(await call(ApiKey.Produce, 7, produceV7(t, 0, bad, -1)))[0], KafkaError.CORRUPT_MESSAGE);
    assert.equal(parseProduceV7(await call(ApiKey.Produce, 7, produceV7(t, 9, encodeBatch([{ key: null, value: Buffer.from('x') }]), 1)))[0], KafkaError.UNKNOWN_TOPIC_OR_PARTITION);
  });

  test('Fetch mirrors repeated topic entries, answers preferred_read_replica −1, exact HW/LSO, and out-of-range', async () => {
    const t = unique('fetch');
    await call(ApiKey.Metadata, 4, metadataV4([t], true));
    await call(ApiKey.Produce, 7, produceV7(t, 0, encodeBatch([{ key: null, value: Buffer.from('a') }, { key: null, value: Buffer.from('b') }]), -1));
    await call(ApiKey.Produce, 7, produceV7(t, 1, encodeBatch([{ key: null, value: Buffer.from('c') }]), -1));
    const parts = parseFetchV11(await call(ApiKey.Fetch, 11, fetchV11(0, 1, [{ topic: t, partition: 0, offset: 1 }, { topic: t, partition: 1, offset: 0 }, { topic: t, partition: 0, offset: 5 }])));
    assert.deepEqual(parts.map((p) => [p.topic, p.partition]), [[t, 0], [t, 1], [t, 0]], 'entries mirror the request');
    assert.deepEqual(parts.map((p) => [p.error, p.hw, p.lso, p.logStart, p.preferredReplica]), [[0, 2, 2, 0, -1], [0, 1, 1, 0, -1], [KafkaError.OFFSET_OUT_OF_RANGE, 2, 2, 0, -1]]);
    assert.deepEqual(decodeRecords(parts[0]!.records).map((r) => r.offset), [0, 1], 'whole batch from its base offset');
    const lo = new Writer().int32(-1).int8(0).int32(1).string(t).int32(2).int32(0).int64(-2).int32(1).int64(-1).toBuffer();
    const lr = new Reader(await call(ApiKey.ListOffsets, 2, lo), 4);
    lr.int32();
    const offsets = lr.array((x) => { x.string(); return x.array((p) => ({ p: p.int32(), e: p.int16(), ts: p.int64n(), o: p.int64n() })); }).flat();
    assert.deepEqual(offsets, [{ p: 0, e: 0, ts: -1, o: 0 }, { p: 1, e: 0, ts: -1, o: 1 }]);
  });

  test('long-poll: a parked Fetch is answered when data arrives, long before max_wait', async () => {
    const t = unique('poll');
    await call(ApiKey.Metadata, 4, metadataV4([t], true));
    const fetcher = await RawClient.open(broker.port);
    const started = Date.now();
    fetcher.write(requestFrame(ApiKey.Fetch, 11, 1, fetchV11(20_000, 1, [{ topic: t, partition: 0, offset: 0 }])));
    await call(ApiKey.Produce, 7, produceV7(t, 0, encodeBatch([{ key: null, value: Buffer.from('wake') }]), 1));
    const [frame] = await fetcher.waitFrames(1);
    fetcher.close();
    assert.ok(Date.now() - started < 10_000, 'woken by the append, not by max_wait');
    assert.equal(decodeRecords(parseFetchV11(frame!)[0]!.records)[0]!.value!.toString(), 'wake');
    const waitStarted = Date.now();
    const timedOut = parseFetchV11(await call(ApiKey.Fetch, 11, fetchV11(300, 1, [{ topic: t, partition: 0, offset: 1 }])));
    assert.ok(Date.now() - waitStarted >= 250, 'with nothing to read the fetch waited for max_wait');
    assert.equal(timedOut[0]!.records.length, 0, 'empty at HW after max_wait');
    const minBytes = parseFetchV11(await call(ApiKey.Fetch, 11, fetchV11(300, 1_000_000, [{ topic: t, partition: 0, offset: 0 }])));
    assert.equal(decodeRecords(minBytes[0]!.records).length, 1, 'below min_bytes: whatever there is, after max_wait');
  });

  test('idempotent producer: a retried batch is answered with its original offset and stored once, also after a restart', async () => {
    const dir = tempDir('idempotent');
    let durable = await startTestBroker({ dataDir: dir.path });
    try {
      const t = unique('idem');
      const producer = { producerId: 4242n, epoch: 0, baseSequence: 0 };
      const batch = (seq: number, value: string): Buffer => encodeBatch([{ key: null, value: Buffer.from(value) }], undefined, { ...producer, baseSequence: seq });
      const produce = async (b: Buffer): Promise<[number, number]> => {
        const client = await RawClient.open(durable.port);
        await call(ApiKey.Metadata, 4, metadataV4([t], true), client);
        const answer = await call(ApiKey.Produce, 7, produceV7(t, 0, b, -1), client);
        client.close();
        return parseProduceV7(answer);
      };
      assert.deepEqual(await produce(batch(0, 'first')), [0, 0]);
      assert.deepEqual(await produce(batch(1, 'second')), [0, 1]);
      assert.deepEqual(await produce(batch(1, 'second')), [0, 1], 'retry of the last batch → same offset');
      assert.deepEqual(await produce(batch(5, 'gap')), [KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, -1]);
      await durable.close();
      durable = await startTestBroker({ dataDir: dir.path });
      assert.deepEqual(await produce(batch(1, 'second')), [0, 1], 'recognised after a restart (state rebuilt from the log)');
      assert.deepEqual(await produce(batch(2, 'third')), [0, 2]);
    } finally {
      await durable.close();
      dir.remove();
    }
  });

  test('deleting a topic wakes a Fetch parked on it, which answers UNKNOWN_TOPIC_OR_PARTITION', async () => {
    const t = unique('deleted');
    await call(ApiKey.Metadata, 4, metadataV4([t], true));
    const fetcher = await RawClient.open(broker.port);
    const started = Date.now();
    fetcher.write(requestFrame(ApiKey.Fetch, 11, 1, fetchV11(20_000, 1, [{ topic: t, partition: 0, offset: 0 }])));
    const del = new Reader(await call(ApiKey.DeleteTopics, 1, new Writer().int32(1).string(t).int32(1000).toBuffer()), 4);
    del.int32();
    assert.deepEqual(del.array((x) => [x.string(), x.int16()]), [[t, 0]]);
    const [frame] = await fetcher.waitFrames(1);
    fetcher.close();
    assert.ok(Date.now() - started < 10_000);
    assert.equal(parseFetchV11(frame!)[0]!.error, KafkaError.UNKNOWN_TOPIC_OR_PARTITION);
  });

  test('OffsetFetch: unknown group → −1 for every requested partition with error 0; null topics = all committed', async () => {
    const body = new Writer().string(unique('nogroup')).int32(1).string('t').int32(2).int32(0).int32(1).toBuffer();
    const r = new Reader(await call(ApiKey.OffsetFetch, 4, body), 4);
    r.int32();
    const parts = r.array((x) => { x.string(); return x.array((p) => ({ p: p.int32(), o: p.int64n(), m: p.nullableString(), e: p.int16() })); }).flat();
    assert.deepEqual(parts, [{ p: 0, o: -1, m: '', e: 0 }, { p: 1, o: -1, m: '', e: 0 }]);
    assert.equal(r.int16(), 0);
    const group = unique('committed');
    const topic = unique('committed-topic');
    await call(ApiKey.Metadata, 4, metadataV4([topic], true));
    const commit = new Writer().string(group).int32(-1).string('').int32(1).string(topic).int32(1).int32(1).int64(-2).nullableString(null).toBuffer();
    await call(ApiKey.OffsetCommit, 5, commit);
    const all = new Reader(await call(ApiKey.OffsetFetch, 4, new Writer().string(group).int32(-1).toBuffer()), 4);
    all.int32();
    assert.deepEqual(all.array((x) => ({ t: x.string(), parts: x.array((p) => ({ p: p.int32(), o: p.int64n(), m: p.nullableString(), e: p.int16() })) })), [{ t: topic, parts: [{ p: 1, o: -2, m: null, e: 0 }] }]);
  });

  test('OffsetCommit: a topic or partition that does not exist gets UNKNOWN_TOPIC_OR_PARTITION and is not stored', async () => {
    const t = unique('commit'); // 2 partitions
    const missing = unique('missing');
    await call(ApiKey.Metadata, 4, metadataV4([t], true));
    const group = unique('commit-group');
    const commit = async (generation: number, member: string): Promise<unknown> => {
      const body = new Writer().string(group).int32(generation).string(member)
        .array([{ topic: t, partitions: [0, 2] }, { topic: missing, partitions: [0] }], (w, x) => w.string(x.topic).array(x.partitions, (w, p) => w.int32(p).int64(5).nullableString(null)))
        .toBuffer();
      const r = new Reader(await call(ApiKey.OffsetCommit, 5, body), 4);
      r.int32();
      return r.array((x) => [x.string(), x.array((p) => [p.int32(), p.int16()])]);
    };
    const unknown = KafkaError.UNKNOWN_TOPIC_OR_PARTITION;
    assert.deepEqual(await commit(-1, ''), [[t, [[0, 0], [2, unknown]]], [missing, [[0, unknown]]]]);
    assert.deepEqual(await commit(3, 'nobody'), [[t, [[0, KafkaError.UNKNOWN_MEMBER_ID], [2, unknown]]], [missing, [[0, unknown]]]], 'the group error only for existing partitions');
    const all = new Reader(await call(ApiKey.OffsetFetch, 4, new Writer().string(group).int32(-1).toBuffer()), 4);
    all.int32();
    assert.deepEqual(all.array((x) => [x.string(), x.array((p) => [p.int32(), p.int64n(), p.nullableString(), p.int16()])]), [[t, [[0, 5, null, 0]]]], 'only the existing partition was stored');
  });

  test('Fetch with min_bytes ≤ 0, or naming no partition, is answered at once instead of after max_wait', async () => {
    const t = unique('minbytes');
    await call(ApiKey.Metadata, 4, metadataV4([t], true));
    for (const minBytes of [0, -1]) {
      const started = Date.now();
      const parts = parseFetchV11(await call(ApiKey.Fetch, 11, fetchV11(10_000, minBytes, [{ topic: t, partition: 0, offset: 0 }])));
      assert.ok(Date.now() - started < 5_000, `min_bytes ${minBytes}, nothing to read: answered well before max_wait (10 s)`);
      assert.deepEqual(parts.map((p) => [p.error, p.hw, p.records.length]), [[0, 0, 0]]);
    }
    const started = Date.now();
    assert.deepEqual(parseFetchV11(await call(ApiKey.Fetch, 11, fetchV11(10_000, 1, []))), []);
    assert.ok(Date.now() - started < 5_000, 'no partitions: answered well before max_wait (10 s)');
  });
});

/**
 * A write to the data dir that fails part-way. The broker runs as a child process with a file size limit
 * (RLIMIT_FSIZE via prlimit): the kernel really writes part of the data and then fails with EFBIG, as a disk
 * filling up mid-write does; lifting the limit clears the fault.
 */
describe('failed writes to the data dir', { skip: prlimitSkip() }, () => {
  const dir = tempDir('storage');
  after(() => dir.remove());
  let correlation = 0;

  async function request(client: RawClient, key: number, version: number, body: Buffer): Promise<Buffer> {
    const before = client.frames.length;
    client.write(requestFrame(key, version, ++correlation, body));
    const frame = (await client.waitFrames(before + 1))[before];
    assert.ok(frame, `api key ${key} answered (the connection was closed instead)`);
    return frame;
  }
  const storageFailures = (broker: { logs: { msg?: string }[] }): number => broker.logs.filter((l) => l.msg === KAFKA_LOG.storageFailed).length;

  test('Produce: the partial batch is cut off, KAFKA_STORAGE_ERROR is answered, and the retry after the fault clears is stored once', async () => {
    const data = join(dir.path, 'produce');
    const t = unique('storage');
    const logFile = join(data, 'logs', t, '0.log');
    let broker = await spawnBroker(data);
    let client = await RawClient.open(broker.port);
    const kafka = new Kafka({ brokers: [broker.address], logLevel: logLevel.NOTHING, retry: { initialRetryTime: 100, maxRetryTime: 500, retries: 50 } });
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner });
    try {
      const batch = (seq: number, value: string): Buffer => encodeBatch([{ key: null, value: Buffer.from(value.padEnd(1000, '.')) }], undefined, { producerId: 4343n, epoch: 0, baseSequence: seq });
      const produce = async (b: Buffer): Promise<[number, number]> => parseProduceV7(await request(client, ApiKey.Produce, 7, produceV7(t, 0, b, -1)));
      await request(client, ApiKey.Metadata, 4, metadataV4([t], true));
      assert.deepEqual(await produce(batch(0, 'A')), [0, 0]);
      const good = statSync(logFile).size;

      limitFileSize(broker.child.pid!, good + 64);
      assert.deepEqual(await produce(batch(1, 'B')), [KafkaError.KAFKA_STORAGE_ERROR, -1], 'retriable error, connection kept');
      assert.equal(statSync(logFile).size, good, 'the 64 bytes that were written are cut off again');
      assert.deepEqual(await produce(batch(1, 'B')), [KafkaError.KAFKA_STORAGE_ERROR, -1], 'the retry is not taken for a stored duplicate');
      limitFileSize(broker.child.pid!, 'unlimited');
      assert.deepEqual(await produce(batch(1, 'B')), [0, 1], 'the retry after the fault clears is stored');
      assert.deepEqual(await produce(batch(1, 'B')), [0, 1], 'and only once');
      assert.deepEqual(await produce(batch(2, 'C')), [0, 2]);

      // kafkajs retries KAFKA_STORAGE_ERROR on its own and succeeds once the fault is gone.
      await producer.connect();
      const failuresBefore = storageFailures(broker);
      limitFileSize(broker.child.pid!, statSync(logFile).size + 64);
      const sent = producer.send({ topic: t, messages: [{ partition: 0, value: 'D'.padEnd(1000, '.') }] });
      sent.catch(() => {}); // awaited below
      await waitFor('kafkajs to get KAFKA_STORAGE_ERROR', () => storageFailures(broker) > failuresBefore);
      limitFileSize(broker.child.pid!, 'unlimited');
      const [result] = await sent;
      assert.deepEqual([result!.errorCode, result!.baseOffset], [0, '3']);

      const values = async (): Promise<string[]> => {
        const [part] = parseFetchV11(await request(client, ApiKey.Fetch, 11, fetchV11(0, 1, [{ topic: t, partition: 0, offset: 0 }])));
        assert.equal(part!.hw, 4);
        return decodeRecords(part!.records).map((r) => `${r.offset}:${r.value!.toString()[0]!}`);
      };
      assert.deepEqual(await values(), ['0:A', '1:B', '2:C', '3:D'], 'every batch readable, each once, offsets contiguous');
      client.close();
      await broker.stop();
      broker = await spawnBroker(data);
      client = await RawClient.open(broker.port);
      assert.deepEqual(await values(), ['0:A', '1:B', '2:C', '3:D'], 'the same after a restart');
      assert.equal(broker.logs.filter((l) => l.msg === KAFKA_LOG.tornTail).length, 0, 'nothing to truncate at start');
    } finally {
      await producer.disconnect();
      client.close();
      await broker.stop();
    }
  });

  test('CreateTopics, auto-creation and DeleteTopics answer KAFKA_STORAGE_ERROR when topics.json cannot be written, and change nothing', async () => {
    const data = join(dir.path, 'topics');
    const [kept, failed, auto] = [unique('kept'), unique('failed'), unique('auto')];
    const topicsFile = join(data, 'topics.json');
    let broker = await spawnBroker(data);
    let client = await RawClient.open(broker.port);
    const createTopics = async (name: string): Promise<unknown> => {
      const r = new Reader(await request(client, ApiKey.CreateTopics, 4, new Writer().int32(1).string(name).int32(1).int16(1).int32(0).int32(0).int32(1000).bool(false).toBuffer()), 4);
      r.int32();
      return r.array((x) => [x.string(), x.int16()]);
    };
    const metadata = async (names: string[] | null, allowAutoCreate: boolean): Promise<[string, number][]> =>
      parseMetadataV4(await request(client, ApiKey.Metadata, 4, metadataV4(names, allowAutoCreate))).topics.map((x) => [x.name, x.error]);
    try {
      assert.deepEqual(await createTopics(kept), [[kept, 0]]);
      limitFileSize(broker.child.pid!, statSync(topicsFile).size + 8); // too small for one more topic
      assert.deepEqual(await createTopics(failed), [[failed, KafkaError.KAFKA_STORAGE_ERROR]]);
      assert.deepEqual(await metadata([auto], true), [[auto, KafkaError.KAFKA_STORAGE_ERROR]]);
      const unknown = KafkaError.UNKNOWN_TOPIC_OR_PARTITION;
      assert.deepEqual(await metadata([failed, auto], false), [[failed, unknown], [auto, unknown]], 'neither exists, not even in memory');
      assert.deepEqual(parseProduceV7(await request(client, ApiKey.Produce, 7, produceV7(failed, 0, encodeBatch([{ key: null, value: Buffer.from('x') }]), -1))), [unknown, -1]);
      limitFileSize(broker.child.pid!, 4); // too small for any topics.json
      const del = new Reader(await request(client, ApiKey.DeleteTopics, 1, new Writer().int32(1).string(kept).int32(1000).toBuffer()), 4);
      del.int32();
      assert.deepEqual(del.array((x) => [x.string(), x.int16()]), [[kept, KafkaError.KAFKA_STORAGE_ERROR]]);
      assert.deepEqual(await metadata([kept], false), [[kept, 0]], 'not deleted');
      limitFileSize(broker.child.pid!, 'unlimited');
      assert.deepEqual(await createTopics(failed), [[failed, 0]], 'created once the fault clears');
      assert.deepEqual(parseProduceV7(await request(client, ApiKey.Produce, 7, produceV7(failed, 0, encodeBatch([{ key: null, value: Buffer.from('x') }]), -1))), [0, 0]);
      client.close();
      await broker.stop();
      broker = await spawnBroker(data);
      client = await RawClient.open(broker.port);
      assert.deepEqual((JSON.parse(readFileSync(topicsFile, 'utf8')) as { topics: { name: string }[] }).topics.map((x) => x.name), [kept, failed]);
      assert.deepEqual((await metadata(null, false)).sort(), [[failed, 0], [kept, 0]].sort());
      const [part] = parseFetchV11(await request(client, ApiKey.Fetch, 11, fetchV11(0, 1, [{ topic: failed, partition: 0, offset: 0 }])));
      assert.equal(part!.hw, 1, 'its data survived the restart');
    } finally {
      client.close();
      await broker.stop();
    }
  });

  test('OffsetCommit answers COORDINATOR_NOT_AVAILABLE when offsets.log cannot be written, and leaves no torn line behind', async () => {
    const data = join(dir.path, 'offsets');
    const [t, group] = [unique('offsets'), unique('offsets-group')];
    let broker = await spawnBroker(data);
    let client = await RawClient.open(broker.port);
    const committed = async (): Promise<number> => {
      const r = new Reader(await request(client, ApiKey.OffsetFetch, 4, new Writer().string(group).int32(1).string(t).int32(1).int32(0).toBuffer()), 4);
      r.int32();
      return r.array((x) => { x.string(); return x.array((p) => { p.int32(); return p.int64n(); }); }).flat()[0]!;
    };
    try {
      await request(client, ApiKey.Metadata, 4, metadataV4([t], true));
      assert.deepEqual(await commitOffsets(broker.port, group, t, [{ partition: 0, offset: 5 }]), [0]);
      limitFileSize(broker.child.pid!, statSync(join(data, 'offsets.log')).size + 10); // part of one more line
      assert.deepEqual(await commitOffsets(broker.port, group, t, [{ partition: 0, offset: 6 }]), [KafkaError.COORDINATOR_NOT_AVAILABLE]);
      assert.equal(await committed(), 5, 'not stored');
      limitFileSize(broker.child.pid!, 'unlimited');
      assert.deepEqual(await commitOffsets(broker.port, group, t, [{ partition: 0, offset: 7 }]), [0]);
      client.close();
      await broker.stop();
      broker = await spawnBroker(data); // a torn line before the last one would stop it from starting
      client = await RawClient.open(broker.port);
      assert.equal(await committed(), 7);
    } finally {
      client.close();
      await broker.stop();
    }
  });
});
