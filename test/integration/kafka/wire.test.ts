/**
 * Protocol-level behaviour over a raw socket, where the clients would hide mistakes: Metadata null vs [] and
 * auto-creation flags, acks=0 silence with ordered responses, Fetch entry mirroring, preferred_read_replica,
 * long-poll wake-up and min_bytes, ListOffsets earliest/latest, OffsetFetch for unknown groups.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { KafkaBroker } from '../../../devstack/kafka/index.ts';
import { ApiKey } from '../../../devstack/kafka/protocol/api-keys.ts';
import { KafkaError } from '../../../devstack/kafka/protocol/error-codes.ts';
import { Reader } from '../../../devstack/kafka/protocol/reader.ts';
import { Writer } from '../../../devstack/kafka/protocol/writer.ts';
import { decodeRecords, encodeBatch } from '../../../devstack/kafka/records/record-codec.ts';
import { RawClient, requestFrame } from './raw-client.ts';
import { startTestBroker, tempDir, unique } from './support.ts';

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
    const r = new Reader(acked, 4);
    r.int32(); r.string(); r.int32(); r.int32();
    assert.equal(r.int16(), 0);
    assert.equal(r.int64n(), 1, 'the acks=0 batch took offset 0');
    const bad = encodeBatch([{ key: null, value: Buffer.from('x') }]);
    bad[bad.length - 1] = bad[bad.length - 1]! ^ 1;
    const refused = new Reader(await call(ApiKey.Produce, 7, produceV7(t, 0, bad, -1)), 4);
    refused.int32(); refused.string(); refused.int32(); refused.int32();
    assert.equal(refused.int16(), KafkaError.CORRUPT_MESSAGE);
    const unknown = new Reader(await call(ApiKey.Produce, 7, produceV7(t, 9, encodeBatch([{ key: null, value: Buffer.from('x') }]), 1)), 4);
    unknown.int32(); unknown.string(); unknown.int32(); unknown.int32();
    assert.equal(unknown.int16(), KafkaError.UNKNOWN_TOPIC_OR_PARTITION);
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
        const r = new Reader(await call(ApiKey.Produce, 7, produceV7(t, 0, b, -1), client), 4);
        client.close();
        r.int32(); r.string(); r.int32(); r.int32();
        return [r.int16(), r.int64n()];
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
    const commit = new Writer().string(group).int32(-1).string('').int32(1).string('t').int32(1).int32(3).int64(-2).nullableString(null).toBuffer();
    await call(ApiKey.OffsetCommit, 5, commit);
    const all = new Reader(await call(ApiKey.OffsetFetch, 4, new Writer().string(group).int32(-1).toBuffer()), 4);
    all.int32();
    assert.deepEqual(all.array((x) => ({ t: x.string(), parts: x.array((p) => ({ p: p.int32(), o: p.int64n(), m: p.nullableString(), e: p.int16() })) })), [{ t: 't', parts: [{ p: 3, o: -2, m: null, e: 0 }] }]);
  });
});
