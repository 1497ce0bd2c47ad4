/**
 * The lowest advertised version of every API works end to end. librdkafka 2.0.2 only checks that these exist
 * (feature flags), but an advertised version must be answerable: a client is entitled to use it.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { KafkaBroker } from '../../../devstack/kafka/index.ts';
import { ApiKey } from '../../../devstack/kafka/protocol/api-keys.ts';
import { KafkaError } from '../../../devstack/kafka/protocol/error-codes.ts';
import { Reader } from '../../../devstack/kafka/protocol/reader.ts';
import { Writer } from '../../../devstack/kafka/protocol/writer.ts';
import { decodeRecords, encodeBatch } from '../../../devstack/kafka/records/record-codec.ts';
import { RawClient, requestFrame } from './raw-client.ts';
import { startTestBroker, unique } from './support.ts';

let broker: KafkaBroker;
let c: RawClient;
let id = 0;
before(async () => {
  broker = await startTestBroker();
  c = await RawClient.open(broker.port);
});
after(async () => {
  c.close();
  await broker.close();
});

async function call(key: number, version: number, body: Writer): Promise<Reader> {
  const n = c.frames.length;
  c.write(requestFrame(key, version, ++id, body.toBuffer()));
  const frames = await c.waitFrames(n + 1);
  const r = new Reader(frames[n]!);
  assert.equal(r.int32(), id);
  return r;
}

test('v0/v1 of every advertised API: topics, produce, fetch, offsets, a whole group round, admin', async () => {
  const topic = unique('low');
  const group = unique('low-group');

  let r = await call(ApiKey.CreateTopics, 0, new Writer().int32(1).string(topic).int32(-1).int16(-1).int32(0).int32(0).int32(1000));
  assert.deepEqual(r.array((x) => [x.string(), x.int16()]), [[topic, 0]]);

  r = await call(ApiKey.Metadata, 0, new Writer().int32(1).string(topic));
  assert.equal(r.array((x) => [x.int32(), x.string(), x.int32()]).length, 1, 'brokers');
  assert.deepEqual(r.array((t) => [t.int16(), t.string(), t.array((p) => { const e = p.int16(); const i = p.int32(); p.int32(); p.array((x) => x.int32()); p.array((x) => x.int32()); return [e, i]; })]), [[0, topic, [[0, 0]]]]);

  r = await call(ApiKey.Produce, 3, new Writer().nullableString(null).int16(1).int32(1000).int32(1).string(topic).int32(1).int32(0).bytes(encodeBatch([{ key: null, value: Buffer.from('low') }])));
  r.int32(); r.string(); r.int32(); r.int32();
  assert.equal(r.int16(), 0);
  assert.equal(r.int64n(), 0);

  r = await call(ApiKey.Fetch, 4, new Writer().int32(-1).int32(0).int32(1).int32(1_000_000).int8(0).int32(1).string(topic).int32(1).int32(0).int64(0).int32(1_000_000));
  r.int32();
  const fetched = r.array((t) => { t.string(); return t.array((p) => { p.int32(); const e = p.int16(); p.int64(); p.int64(); p.array((a) => { a.int64(); a.int64(); }); return { e, records: p.bytes() }; }); }).flat();
  assert.equal(fetched[0]!.e, 0);
  assert.equal(decodeRecords(fetched[0]!.records)[0]!.value!.toString(), 'low');

  r = await call(ApiKey.ListOffsets, 1, new Writer().int32(-1).int32(1).string(topic).int32(1).int32(0).int64(-1));
  r.int32(); r.string(); r.int32(); r.int32();
  assert.deepEqual([r.int16(), r.int64n(), r.int64n()], [0, -1, 1]);

  r = await call(ApiKey.FindCoordinator, 0, new Writer().string(group));
  assert.deepEqual([r.int16(), r.int32(), r.string(), r.int32()], [0, 0, '127.0.0.1', broker.port]);

  r = await call(ApiKey.JoinGroup, 0, new Writer().string(group).int32(6000).string('').string('consumer').int32(1).string('range').bytes(Buffer.from('meta')));
  assert.equal(r.int16(), 0, 'v0 joins without MEMBER_ID_REQUIRED');
  const generation = r.int32();
  assert.equal(r.string(), 'range');
  const leader = r.string();
  const member = r.string();
  assert.equal(leader, member);
  assert.deepEqual(r.array((m) => [m.string(), m.bytes().toString()]), [[member, 'meta']]);

  r = await call(ApiKey.SyncGroup, 0, new Writer().string(group).int32(generation).string(member).int32(1).string(member).bytes(Buffer.from('assigned')));
  assert.deepEqual([r.int16(), r.bytes().toString()], [0, 'assigned']);
  r = await call(ApiKey.Heartbeat, 0, new Writer().string(group).int32(generation).string(member));
  assert.equal(r.int16(), 0);
  r = await call(ApiKey.OffsetCommit, 2, new Writer().string(group).int32(generation).string(member).int64(-1).int32(1).string(topic).int32(1).int32(0).int64(1).nullableString('m'));
  assert.deepEqual(r.array((t) => [t.string(), t.array((p) => [p.int32(), p.int16()])]), [[topic, [[0, 0]]]]);
  r = await call(ApiKey.OffsetFetch, 1, new Writer().string(group).int32(1).string(topic).int32(1).int32(0));
  assert.deepEqual(r.array((t) => [t.string(), t.array((p) => [p.int32(), p.int64n(), p.nullableString(), p.int16()])]), [[topic, [[0, 1, 'm', 0]]]]);
  r = await call(ApiKey.DescribeGroups, 0, new Writer().int32(1).string(group));
  assert.deepEqual(r.array((g) => { const e = g.int16(); g.string(); const state = g.string(); g.string(); const p = g.string(); const n = g.array((m) => { m.string(); m.string(); m.string(); m.bytes(); return m.bytes().toString(); }); return [e, state, p, n]; }), [[0, 'Stable', 'range', ['assigned']]]);
  r = await call(ApiKey.ListGroups, 0, new Writer());
  assert.equal(r.int16(), 0);
  assert.ok(r.array((g) => [g.string(), g.string()]).some(([g, t]) => g === group && t === 'consumer'));
  r = await call(ApiKey.LeaveGroup, 0, new Writer().string(group).string(member));
  assert.equal(r.int16(), 0);
  r = await call(ApiKey.DeleteGroups, 0, new Writer().int32(1).string(group));
  r.int32();
  assert.deepEqual(r.array((g) => [g.string(), g.int16()]), [[group, 0]]);
  r = await call(ApiKey.DeleteGroups, 0, new Writer().int32(1).string(group));
  r.int32();
  assert.deepEqual(r.array((g) => [g.string(), g.int16()]), [[group, KafkaError.GROUP_ID_NOT_FOUND]]);

  r = await call(ApiKey.InitProducerId, 0, new Writer().nullableString(null).int32(60_000));
  r.int32();
  assert.equal(r.int16(), 0);
  assert.ok(r.int64() > 0n);
  assert.equal(r.int16(), 0);
  r = await call(ApiKey.InitProducerId, 0, new Writer().nullableString('txn').int32(60_000));
  r.int32();
  assert.notEqual(r.int16(), 0, 'transactions are refused early');

  r = await call(ApiKey.ApiVersions, 0, new Writer());
  assert.equal(r.int16(), 0);
  r = await call(ApiKey.DeleteTopics, 0, new Writer().int32(2).string(topic).string(unique('never')).int32(1000));
  assert.deepEqual(r.array((t) => { t.string(); return t.int16(); }), [0, KafkaError.UNKNOWN_TOPIC_OR_PARTITION]);
});
