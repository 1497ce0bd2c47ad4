import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { encodeApiVersions } from '../../../devstack/kafka/handlers/api-versions.ts';
import { ADVERTISED, ApiKey } from '../../../devstack/kafka/protocol/api-keys.ts';
import { crc32c } from '../../../devstack/kafka/protocol/crc32c.ts';
import { ProtocolError, Reader } from '../../../devstack/kafka/protocol/reader.ts';
import { Writer } from '../../../devstack/kafka/protocol/writer.ts';

describe('wire primitives', () => {
  test('CRC-32C check value of "123456789" is 0xE3069283 (not the IEEE CRC)', () => {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
    const long = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 31) & 0xff));
    let bytewise = 0xffffffff;
    for (const b of long) {
      bytewise ^= b;
      for (let k = 0; k < 8; k++) bytewise = bytewise & 1 ? (bytewise >>> 1) ^ 0x82f63b78 : bytewise >>> 1;
    }
    assert.equal(crc32c(long), (bytewise ^ 0xffffffff) >>> 0, 'slicing-by-8 equals the bytewise definition');
  });

  test('zigzag varints, unsigned varints and 64-bit varlongs round-trip', () => {
    const values = [0, 1, -1, 63, -64, 64, 300, -300, 2 ** 31 - 1, -(2 ** 31)];
    const w = new Writer();
    for (const v of values) w.varint(v);
    w.uvarint(0).uvarint(127).uvarint(128).uvarint(2 ** 32 - 1);
    const r = new Reader(w.toBuffer());
    assert.deepEqual(values.map(() => r.varint()), values);
    assert.deepEqual([r.uvarint(), r.uvarint(), r.uvarint(), r.uvarint()], [0, 127, 128, 2 ** 32 - 1]);
    // zigzag(-1) = 1, zigzag(1) = 2: signed and unsigned encodings differ.
    assert.deepEqual([...new Writer().varint(-1).varint(1).toBuffer()], [1, 2]);
    // 2^40 as a zigzag varlong: 2^41 in 7-bit groups.
    const big = Buffer.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
    assert.equal(new Reader(big).varlong(), 2n ** 40n);
  });

  test('strings, nullable bytes and int64 sentinels round-trip exactly', () => {
    const w = new Writer().string('héllo').nullableString(null).nullableBytes(null).bytes(Buffer.from([1, 2])).int64(-1n).int64(2 ** 53 - 1);
    const r = new Reader(w.toBuffer());
    assert.equal(r.string(), 'héllo');
    assert.equal(r.nullableString(), null);
    assert.equal(r.nullableBytes(), null);
    assert.deepEqual([...r.bytes()], [1, 2]);
    assert.equal(r.int64(), -1n);
    assert.equal(r.int64n(), 2 ** 53 - 1);
    assert.equal(r.remaining, 0);
  });

  test('truncated input and absurd lengths throw ProtocolError instead of allocating or reading past the end', () => {
    assert.throws(() => new Reader(Buffer.from([0, 5, 65])).string(), ProtocolError);
    assert.throws(() => new Reader(Buffer.from([0x7f, 0xff, 0xff, 0xff])).array((r) => r.int8()), ProtocolError);
    assert.throws(() => new Reader(Buffer.from([0xff, 0xff, 0xff, 0xfe])).nullableBytes(), ProtocolError);
    assert.throws(() => new Reader(Buffer.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x01])).uvarint(), ProtocolError);
    assert.throws(() => new Reader(Buffer.from([0x00])).int32(), ProtocolError);
  });

  test('large blobs are kept as separate chunks (no copy) and lengths add up', () => {
    const blob = Buffer.alloc(10_000, 7);
    const w = new Writer().int32(1).bytesChunks([blob, blob]).int16(2);
    const chunks = w.chunks();
    assert.ok(chunks.includes(blob));
    assert.equal(w.length, 4 + 4 + 20_000 + 2);
    assert.equal(Buffer.concat(chunks).length, w.length);
  });
});

describe('ApiVersions golden bytes', () => {
  test('v0: error, int32 count, {key, min, max}; Produce 3–7 and Fetch 4–11 first (librdkafka MsgVer2)', () => {
    const b = encodeApiVersions(0).toBuffer();
    assert.equal(b.length, 2 + 4 + ADVERTISED.size * 6);
    assert.equal(b.subarray(0, 18).toString('hex'), '0000' + '00000013' + '000000030007' + '000100040' + '00b');
  });

  test('v3: compact array (N+1), per-entry tag byte, throttle, trailing tags; no header tag byte', () => {
    const b = encodeApiVersions(3).toBuffer();
    assert.equal(b.length, 2 + 1 + ADVERTISED.size * 7 + 4 + 1);
    assert.equal(b.subarray(0, 17).toString('hex'), '0000' + '14' + '00000003000700' + '00010004000b00');
    assert.equal(b.subarray(b.length - 5).toString('hex'), '0000000000');
  });

  test('advertised ranges keep librdkafka 2.0.2 features and kafkajs minimums', () => {
    const has = (key: number, v: number): boolean => { const r = ADVERTISED.get(key); return !!r && r.min <= v && v <= r.max; };
    assert.ok(has(ApiKey.Produce, 3) && has(ApiKey.Fetch, 4), 'MsgVer2');
    assert.ok(has(ApiKey.Produce, 7) && has(ApiKey.Fetch, 10), 'ZSTD');
    assert.ok(has(ApiKey.ListOffsets, 1), 'OffsetTime');
    for (const key of [ApiKey.FindCoordinator, ApiKey.JoinGroup, ApiKey.SyncGroup, ApiKey.Heartbeat, ApiKey.LeaveGroup]) assert.ok(has(key, 0), `group API ${key} v0`);
    assert.ok(has(ApiKey.OffsetCommit, 2) && has(ApiKey.OffsetFetch, 1), 'BrokerBalancedConsumer offsets');
    assert.ok(ADVERTISED.get(ApiKey.OffsetFetch)!.max >= 1, 'kafkajs implements OffsetFetch v1–4 only');
    assert.equal(ADVERTISED.get(ApiKey.LeaveGroup)!.max, 1, 'keeps kafkajs off the batched LeaveGroup v3');
    assert.ok(!ADVERTISED.has(24) && !ADVERTISED.has(17), 'no transactions, no SASL');
  });
});
