/**
 * RecordBatch v2 (magic 2): validation and base-offset rewrite. Batches are stored exactly as received (never
 * decompressed); only baseOffset (bytes 0–7) and partitionLeaderEpoch (12–15) change, and both lie outside the
 * CRC, which covers bytes 21..end.
 */
import { gunzipSync } from 'node:zlib';
import { crc32c } from '../protocol/crc32c.ts';
import { KafkaError, type KafkaErrorCode } from '../protocol/error-codes.ts';
import { Reader } from '../protocol/reader.ts';

export const BATCH_HEADER_BYTES = 61;
/** Bytes before the batchLength field's coverage: baseOffset (8) + batchLength (4). */
export const BATCH_LOG_OVERHEAD = 12;

export interface BatchInfo {
  /** Total bytes of the batch including baseOffset and batchLength. */
  readonly size: number;
  readonly lastOffsetDelta: number;
  readonly recordCount: number;
  readonly maxTimestamp: number;
  readonly attributes: number;
}

export type BatchCheck = { ok: true; info: BatchInfo } | { ok: false; error: KafkaErrorCode; reason: string };

/** Reads the header of the batch starting at `at` in `buf` (the batch may be followed by others). */
export function batchSizeAt(buf: Buffer, at: number): number {
  if (buf.length - at < BATCH_LOG_OVERHEAD) return -1;
  return buf.readInt32BE(at + 8) + BATCH_LOG_OVERHEAD;
}

/** Validates one batch occupying exactly `buf` (size, magic, CRC, codec, control bit, offset delta). */
export function checkBatch(buf: Buffer, maxBytes: number): BatchCheck {
  if (buf.length < BATCH_HEADER_BYTES) return { ok: false, error: KafkaError.CORRUPT_MESSAGE, reason: `batch of ${buf.length} bytes is shorter than the 61-byte header` };
  const size = buf.readInt32BE(8) + BATCH_LOG_OVERHEAD;
  if (size !== buf.length) return { ok: false, error: KafkaError.CORRUPT_MESSAGE, reason: `batchLength says ${size} bytes, got ${buf.length}` };
  const magic = buf.readInt8(16);
  if (magic !== 2) return { ok: false, error: KafkaError.CORRUPT_MESSAGE, reason: `magic ${magic}; only RecordBatch v2 is supported` };
  const crc = buf.readUInt32BE(17);
  const actual = crc32c(buf, 21);
  if (crc !== actual) return { ok: false, error: KafkaError.CORRUPT_MESSAGE, reason: `CRC mismatch: header ${crc}, computed ${actual}` };
  const attributes = buf.readInt16BE(21);
  if ((attributes & 0x20) !== 0) return { ok: false, error: KafkaError.INVALID_RECORD, reason: 'control batches cannot be produced' };
  if ((attributes & 0x07) > 4) return { ok: false, error: KafkaError.UNSUPPORTED_COMPRESSION_TYPE, reason: `compression codec ${attributes & 7}` };
  const lastOffsetDelta = buf.readInt32BE(23);
  const recordCount = buf.readInt32BE(57);
  if (recordCount < 1 || lastOffsetDelta !== recordCount - 1) return { ok: false, error: KafkaError.CORRUPT_MESSAGE, reason: `lastOffsetDelta ${lastOffsetDelta} with ${recordCount} records` };
  if (size > maxBytes) return { ok: false, error: KafkaError.MESSAGE_TOO_LARGE, reason: `batch of ${size} bytes exceeds max.message.bytes ${maxBytes}` };
  return { ok: true, info: { size, lastOffsetDelta, recordCount, maxTimestamp: Number(buf.readBigInt64BE(35)), attributes } };
}

/** Writes the assigned base offset and leader epoch 0 into the batch in place; the CRC stays valid. */
export function stampBaseOffset(batch: Buffer, baseOffset: number): Buffer {
  batch.writeBigInt64BE(BigInt(baseOffset), 0);
  batch.writeInt32BE(0, 12);
  return batch;
}

/**
 * For a topic with message.timestamp.type=LogAppendTime, as Kafka does for RecordBatch v2: sets the timestamp-type
 * bit and the batch's max timestamp to the append time, and recomputes the CRC (both lie inside it). Clients then
 * read `now` as every record's timestamp; the records themselves are untouched (and may stay compressed).
 */
export function stampLogAppendTime(batch: Buffer, now: number): void {
  batch.writeInt16BE(batch.readInt16BE(21) | 0x08, 21);
  batch.writeBigInt64BE(BigInt(now), 35);
  batch.writeUInt32BE(crc32c(batch, 21), 17);
}

/** A copy of the batch with the assigned base offset and leader epoch 0. */
export function withBaseOffset(batch: Buffer, baseOffset: number): Buffer {
  return stampBaseOffset(Buffer.from(batch), baseOffset);
}

/** Splits a Produce `records` blob into its batches; null if the blob does not divide into whole batches. */
export function splitBatches(records: Buffer): Buffer[] | null {
  const out: Buffer[] = [];
  let at = 0;
  while (at < records.length) {
    const size = batchSizeAt(records, at);
    if (size < BATCH_HEADER_BYTES || at + size > records.length) return null;
    out.push(records.subarray(at, at + size));
    at += size;
  }
  return out;
}

/** A gzip batch is decompressed for ListOffsets by time only up to this size (then the batch's base offset answers). */
const MAX_INFLATED_BYTES = 64 * 1024 * 1024;

/**
 * ListOffsets by time within one stored batch: the offset and timestamp of its first record whose timestamp is at
 * or after `ts`, or null if it has none. Records are read from uncompressed and gzip batches; for snappy, lz4 and
 * zstd (no decoder here) or records that do not parse, the batch's base offset answers (clients skip the earlier
 * records) with timestamp −1. LogAppendTime batches: every record carries the batch's max timestamp.
 */
export function firstRecordAtOrAfter(batch: Buffer, ts: number): { offset: number; timestamp: number } | null {
  const baseOffset = Number(batch.readBigInt64BE(0));
  const attributes = batch.readInt16BE(21);
  const maxTimestamp = Number(batch.readBigInt64BE(35));
  if ((attributes & 0x08) !== 0) return maxTimestamp >= ts ? { offset: baseOffset, timestamp: maxTimestamp } : null;
  const codec = attributes & 0x07;
  const unknown = { offset: baseOffset, timestamp: -1 };
  if (codec > 1) return unknown;
  try {
    const records = codec === 0 ? batch.subarray(BATCH_HEADER_BYTES) : gunzipSync(batch.subarray(BATCH_HEADER_BYTES), { maxOutputLength: MAX_INFLATED_BYTES });
    const baseTimestamp = Number(batch.readBigInt64BE(27));
    const r = new Reader(records);
    for (let i = batch.readInt32BE(57); i > 0; i--) {
      const length = r.varint();
      const start = r.position;
      r.int8(); // attributes
      const timestamp = baseTimestamp + Number(r.varlong());
      const offsetDelta = r.varint();
      if (timestamp >= ts) return { offset: baseOffset + offsetDelta, timestamp };
      r.raw(length - (r.position - start));
    }
    return null;
  } catch {
    return unknown;
  }
}
