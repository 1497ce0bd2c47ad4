/**
 * Uncompressed RecordBatch v2 encoder and record decoder. The broker never needs either (it stores batches as
 * received); tests use them to build batches and read records back.
 */
import { crc32c } from '../protocol/crc32c.ts';
import { Reader } from '../protocol/reader.ts';
import { Writer } from '../protocol/writer.ts';

export interface SimpleRecord {
  key: Buffer | null;
  value: Buffer | null;
  headers?: { key: string; value: Buffer | null }[];
  timestamp?: number;
}

function varlong(w: Writer, v: bigint): void {
  let z = (v << 1n) ^ (v >> 63n);
  z &= (1n << 64n) - 1n;
  while (z >= 0x80n) {
    w.int8(Number((z & 0x7fn) | 0x80n) << 24 >> 24);
    z >>= 7n;
  }
  w.int8(Number(z) << 24 >> 24);
}

export interface ProducerIdentity { readonly producerId: bigint; readonly epoch: number; readonly baseSequence: number }

/** Builds a valid uncompressed batch with base offset 0; without `producer`, producer id −1 as librdkafka sends. */
export function encodeBatch(records: readonly SimpleRecord[], baseTimestamp = 1_700_000_000_000, producer?: ProducerIdentity): Buffer {
  const body = new Writer();
  records.forEach((r, i) => {
    const rec = new Writer();
    rec.int8(0);
    varlong(rec, BigInt((r.timestamp ?? baseTimestamp) - baseTimestamp));
    rec.varint(i);
    if (r.key === null) rec.varint(-1); else rec.varint(r.key.length).raw(r.key);
    if (r.value === null) rec.varint(-1); else rec.varint(r.value.length).raw(r.value);
    const headers = r.headers ?? [];
    rec.varint(headers.length);
    for (const h of headers) {
      const k = Buffer.from(h.key);
      rec.varint(k.length).raw(k);
      if (h.value === null) rec.varint(-1); else rec.varint(h.value.length).raw(h.value);
    }
    const bytes = rec.toBuffer();
    body.varint(bytes.length).raw(bytes);
  });
  const maxTimestamp = Math.max(baseTimestamp, ...records.map((r) => r.timestamp ?? baseTimestamp));
  const afterCrc = new Writer()
    .int16(0).int32(records.length - 1).int64(baseTimestamp).int64(maxTimestamp)
    .int64(producer?.producerId ?? -1n).int16(producer?.epoch ?? -1).int32(producer?.baseSequence ?? -1).int32(records.length).raw(body.toBuffer()).toBuffer();
  const head = new Writer().int64(0).int32(afterCrc.length + 9).int32(0).int8(2).toBuffer();
  const crc = Buffer.allocUnsafe(4);
  crc.writeUInt32BE(crc32c(afterCrc));
  return Buffer.concat([head, crc, afterCrc]);
}

export interface DecodedRecord { offset: number; timestamp: number; key: Buffer | null; value: Buffer | null; headers: { key: string; value: Buffer | null }[] }

/** Decodes the records of uncompressed batches (concatenated, as in a Fetch response). */
export function decodeRecords(batches: Buffer): DecodedRecord[] {
  const out: DecodedRecord[] = [];
  let at = 0;
  while (at + 61 <= batches.length) {
    const size = batches.readInt32BE(at + 8) + 12;
    const batch = batches.subarray(at, at + size);
    const baseOffset = Number(batch.readBigInt64BE(0));
    const baseTimestamp = Number(batch.readBigInt64BE(27));
    if ((batch.readInt16BE(21) & 7) !== 0) throw new Error('decodeRecords handles uncompressed batches only');
    const r = new Reader(batch, 61);
    const count = batch.readInt32BE(57);
    for (let i = 0; i < count; i++) {
      r.varint();
      r.int8();
      const tsDelta = Number(r.varlong());
      const offsetDelta = r.varint();
      const kl = r.varint();
      const key = kl < 0 ? null : Buffer.from(r.raw(kl));
      const vl = r.varint();
      const value = vl < 0 ? null : Buffer.from(r.raw(vl));
      const headers: DecodedRecord['headers'] = [];
      const hc = r.varint();
      for (let h = 0; h < hc; h++) {
        const hk = r.raw(r.varint()).toString();
        const hvl = r.varint();
        headers.push({ key: hk, value: hvl < 0 ? null : Buffer.from(r.raw(hvl)) });
      }
      out.push({ offset: baseOffset + offsetDelta, timestamp: baseTimestamp + tsDelta, key, value, headers });
    }
    at += size;
  }
  return out;
}
