import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { KafkaError } from '../../../devstack/kafka/protocol/error-codes.ts';
import { crc32c } from '../../../devstack/kafka/protocol/crc32c.ts';
import { checkBatch, splitBatches, stampLogAppendTime, withBaseOffset } from '../../../devstack/kafka/records/record-batch.ts';
import { decodeRecords, encodeBatch } from '../../../devstack/kafka/records/record-codec.ts';

const batch = (): Buffer => encodeBatch([{ key: Buffer.from('k'), value: Buffer.from('v1') }, { key: null, value: Buffer.from('v2') }]);

/** Re-seals a mutated batch so only the intended rule fails. */
function reseal(b: Buffer): Buffer {
  b.writeUInt32BE(crc32c(b, 21), 17);
  return b;
}

describe('RecordBatch v2 validation', () => {
  test('a well-formed batch passes; kafkajs-style producer epoch/sequence 0 and librdkafka −1 are both accepted', () => {
    const b = batch();
    const r = checkBatch(b, 1_048_588);
    assert.ok(r.ok);
    assert.equal(r.info.recordCount, 2);
    const kafkajsStyle = Buffer.from(b);
    kafkajsStyle.writeInt16BE(0, 51);
    kafkajsStyle.writeInt32BE(0, 53);
    assert.ok(checkBatch(reseal(kafkajsStyle), 1_048_588).ok, 'producer id −1 skips epoch/sequence checks');
  });

  test('LogAppendTime stamping sets the timestamp-type bit and max timestamp and re-seals the CRC', () => {
    const b = batch();
    stampLogAppendTime(b, 1_800_000_000_123);
    const r = checkBatch(b, 1_048_588);
    assert.ok(r.ok, 'CRC still valid');
    assert.equal(r.info.attributes & 0x08, 0x08);
    assert.equal(r.info.maxTimestamp, 1_800_000_000_123);
    assert.deepEqual(decodeRecords(b).map((x) => x.value?.toString()), ['v1', 'v2']);
  });

  test('rewriting the base offset and leader epoch keeps the CRC valid and the records intact', () => {
    const stored = withBaseOffset(batch(), 41);
    assert.equal(stored.readBigInt64BE(0), 41n);
    assert.ok(checkBatch(stored, 1e6).ok);
    assert.deepEqual(decodeRecords(stored).map((r) => [r.offset, r.value?.toString()]), [[41, 'v1'], [42, 'v2']]);
  });

  test('each validation error has its Kafka code', () => {
    const corrupt = batch();
    corrupt[70] = corrupt[70]! ^ 0xff;
    assert.deepEqual(pick(checkBatch(corrupt, 1e6)), KafkaError.CORRUPT_MESSAGE, 'CRC');
    const magic = batch();
    magic.writeInt8(1, 16);
    assert.deepEqual(pick(checkBatch(magic, 1e6)), KafkaError.CORRUPT_MESSAGE, 'magic');
    const length = batch();
    length.writeInt32BE(length.readInt32BE(8) + 1, 8);
    assert.deepEqual(pick(checkBatch(length, 1e6)), KafkaError.CORRUPT_MESSAGE, 'batchLength');
    const control = batch();
    control.writeInt16BE(0x20, 21);
    assert.deepEqual(pick(checkBatch(reseal(control), 1e6)), KafkaError.INVALID_RECORD, 'control batch');
    const codec = batch();
    codec.writeInt16BE(5, 21);
    assert.deepEqual(pick(checkBatch(reseal(codec), 1e6)), KafkaError.UNSUPPORTED_COMPRESSION_TYPE, 'codec');
    const delta = batch();
    delta.writeInt32BE(5, 23);
    assert.deepEqual(pick(checkBatch(reseal(delta), 1e6)), KafkaError.CORRUPT_MESSAGE, 'lastOffsetDelta');
    assert.deepEqual(pick(checkBatch(batch(), 50)), KafkaError.MESSAGE_TOO_LARGE, 'max.message.bytes');
    assert.deepEqual(pick(checkBatch(Buffer.alloc(20), 1e6)), KafkaError.CORRUPT_MESSAGE, 'short');
  });

  test('splitBatches divides a records blob into whole batches or refuses', () => {
    const a = batch();
    const b = batch();
    assert.equal(splitBatches(Buffer.concat([a, b]))!.length, 2);
    assert.equal(splitBatches(Buffer.concat([a, b.subarray(0, 30)])), null);
  });
});

function pick(r: ReturnType<typeof checkBatch>): number {
  return r.ok ? 0 : r.error;
}
