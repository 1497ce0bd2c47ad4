import assert from 'node:assert/strict';
import fs, { appendFileSync, fstatSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, describe, mock, test } from 'node:test';
import { FileLogStore, MemoryLogStore, type RecoveredBatch } from '../../../devstack/kafka/persistence/log-store.ts';
import { crc32c } from '../../../devstack/kafka/protocol/crc32c.ts';
import { encodeBatch, decodeRecords } from '../../../devstack/kafka/records/record-codec.ts';
import { PartitionLog } from '../../../devstack/kafka/state/partition-log.ts';
import { producerFields } from '../../../devstack/kafka/state/producer-state.ts';

function records(n: number, size = 10, ts = 1_700_000_000_000): Buffer {
  return encodeBatch(Array.from({ length: n }, (_, i) => ({ key: null, value: Buffer.alloc(size, 97 + i), timestamp: ts })), ts);
}

/** The same batch with its records gzip-compressed (codec 1), as kafkajs and librdkafka send them. */
function gzipBatch(plain: Buffer): Buffer {
  const body = gzipSync(plain.subarray(61));
  const out = Buffer.concat([plain.subarray(0, 61), body]);
  out.writeInt32BE(out.length - 12, 8);
  out.writeInt16BE(plain.readInt16BE(21) | 1, 21);
  out.writeUInt32BE(crc32c(out.subarray(21)), 17);
  return out;
}

function append(log: PartitionLog, b: Buffer): number {
  return log.append(b, b.readInt32BE(23), Number(b.readBigInt64BE(35)));
}

const dirs: string[] = [];
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

/** A file log in a fresh temp dir, rebuilt from what is on disk (as the broker does at start). */
function openFileLog(path: string): { log: PartitionLog; truncated: number[] } {
  const found: RecoveredBatch[] = [];
  const truncated: number[] = [];
  const store = new FileLogStore(path, (b) => found.push(b), (valid, total) => truncated.push(valid, total));
  const log = new PartitionLog(store);
  for (const b of found) log.recover(b.position, b.size, b.baseOffset, b.lastOffsetDelta, b.maxTimestamp, b.header);
  return { log, truncated };
}

function tempLogPath(): string {
  const dir = mkdtempSync(join(tmpdir(), 'strangler-plog-'));
  dirs.push(dir);
  return join(dir, '0.log');
}

/**
 * The OS failing writes to `path` as a filling disk does: the first `partial` bytes are really written, then
 * write(2) fails with ENOSPC. Other files are untouched. (Our code imports from node:fs, so the mock goes into the
 * module's exports; a real short write is in test/integration/kafka/wire.test.ts.)
 */
function diskFull(path: string, partial: number): { restore(): void } {
  const ino = statSync(path).ino;
  const real = fs.writeSync;
  let left = partial;
  const impl = (fd: number, buffer: Buffer, offset: number, length: number): number => {
    if (fstatSync(fd).ino !== ino) return real(fd, buffer, offset, length);
    if (left > 0) {
      const n = real(fd, buffer, offset, Math.min(length, left));
      left -= n;
      return n;
    }
    throw Object.assign(new Error(`ENOSPC: no space left on device, write`), { code: 'ENOSPC' });
  };
  const m = mock.method(fs, 'writeSync', impl as typeof fs.writeSync);
  syncBuiltinESMExports();
  return { restore: () => { m.mock.restore(); syncBuiltinESMExports(); } };
}

function idempotent(seq: number, value: string): Buffer {
  return encodeBatch([{ key: null, value: Buffer.from(value) }], undefined, { producerId: 9n, epoch: 0, baseSequence: seq });
}

describe('partition log', () => {
  test('offsets are assigned contiguously; fetch starts at the batch containing the offset, whole batches only', () => {
    const log = new PartitionLog(new MemoryLogStore());
    assert.equal(append(log, records(3)), 0);
    assert.equal(append(log, records(2)), 3);
    assert.equal(append(log, records(4)), 5);
    assert.equal(log.highWatermark, 9);
    const read = log.read(4, 1_000_000, true);
    assert.equal(read.kind, 'ok');
    const got = decodeRecords(Buffer.concat(read.kind === 'ok' ? read.batches : []));
    assert.deepEqual(got.map((r) => r.offset), [3, 4, 5, 6, 7, 8], 'starts at the containing batch (offset 3)');
  });

  test('at the high watermark: empty; beyond it: out of range; below HW never empty', () => {
    const log = new PartitionLog(new MemoryLogStore());
    append(log, records(2));
    assert.deepEqual(log.read(2, 1000, true), { kind: 'ok', batches: [], bytes: 0 });
    assert.deepEqual(log.read(3, 1000, true), { kind: 'out-of-range' });
    assert.deepEqual(log.read(-1, 1000, true), { kind: 'out-of-range' });
    const r = log.read(1, 1, true);
    assert.ok(r.kind === 'ok' && r.bytes > 0, 'an oversized first batch is still returned (KIP-74)');
    assert.deepEqual(log.read(1, 1, false), { kind: 'ok', batches: [], bytes: 0 }, 'not for later partitions');
  });

  test('byte limits stop at whole batches', () => {
    const log = new PartitionLog(new MemoryLogStore());
    const one = records(1, 100);
    for (let i = 0; i < 5; i++) append(log, one);
    const r = log.read(0, one.length * 2 + 10, true);
    assert.ok(r.kind === 'ok');
    assert.equal(r.bytes, one.length * 2);
    assert.equal(log.bytesFrom(3), one.length * 2);
  });

  test('offset by timestamp finds the first batch at or after it', () => {
    const log = new PartitionLog(new MemoryLogStore());
    append(log, records(2, 5, 1000));
    append(log, records(2, 5, 2000));
    assert.deepEqual(log.offsetForTimestamp(1500), { offset: 2, timestamp: 2000 });
    assert.deepEqual(log.offsetForTimestamp(500), { offset: 0, timestamp: 1000 });
    assert.deepEqual(log.offsetForTimestamp(3000), { offset: -1, timestamp: -1 });
  });

  test('offset by timestamp finds the record inside a batch (uncompressed and gzip), not the batch start', () => {
    const log = new PartitionLog(new MemoryLogStore());
    const spread = (): Buffer => encodeBatch([1000, 2000, 3000].map((timestamp) => ({ key: null, value: Buffer.from(`at-${timestamp}`), timestamp })), 1000);
    append(log, spread());
    append(log, gzipBatch(spread()));
    assert.deepEqual(log.offsetForTimestamp(1500), { offset: 1, timestamp: 2000 });
    assert.deepEqual(log.offsetForTimestamp(3000), { offset: 2, timestamp: 3000 });
    assert.deepEqual(log.offsetForTimestamp(3001), { offset: -1, timestamp: -1 }, 'later batches are searched too');
    const gz = new PartitionLog(new MemoryLogStore());
    append(gz, gzipBatch(spread()));
    assert.deepEqual(gz.offsetForTimestamp(2500), { offset: 2, timestamp: 3000 });
  });

  test('appends wake parked readers', () => {
    const log = new PartitionLog(new MemoryLogStore());
    let woken = 0;
    const off = log.onAppend(() => woken++);
    append(log, records(1));
    off();
    append(log, records(1));
    assert.equal(woken, 1);
  });

  test('a file log is rebuilt on reopen and a torn last batch is truncated', () => {
    const path = tempLogPath();
    const open = (): { log: PartitionLog; truncated: number[] } => openFileLog(path);
    const first = open();
    append(first.log, records(3));
    append(first.log, records(2));
    first.log.store.close();
    const good = statSync(path).size;
    appendFileSync(path, records(4).subarray(0, 40)); // a torn write
    const second = open();
    assert.deepEqual(second.truncated, [good, good + 40]);
    assert.equal(second.log.highWatermark, 5);
    assert.equal(append(second.log, records(1)), 5, 'appends continue after the recovered tail');
    const r = second.log.read(0, 1e6, true);
    assert.deepEqual(decodeRecords(Buffer.concat(r.kind === 'ok' ? r.batches : [])).map((x) => x.offset), [0, 1, 2, 3, 4, 5]);
    second.log.store.close();
  });
  test('a failed write is cut off again: the log, its producer state and the file stay as before, and the retry is stored once', () => {
    const path = tempLogPath();
    const { log } = openFileLog(path);
    assert.equal(append(log, idempotent(0, 'first')), 0);
    const good = statSync(path).size;
    const fault = diskFull(path, 30);
    try {
      assert.throws(() => append(log, idempotent(1, 'second')), { code: 'ENOSPC' });
      assert.throws(() => append(log, idempotent(1, 'second')), { code: 'ENOSPC' }, 'the retry fails too while the disk is full');
    } finally {
      fault.restore();
    }
    assert.equal(statSync(path).size, good, 'the 30 bytes written before the failure are gone');
    assert.equal(log.highWatermark, 1);
    assert.deepEqual(log.producers.check(producerFields(idempotent(1, 'second'))), { kind: 'append' }, 'not recorded as stored');
    assert.equal(append(log, idempotent(1, 'second')), 1, 'the retry after the fault is stored, at the next offset');
    log.store.close();
    const reopened = openFileLog(path);
    assert.deepEqual(reopened.truncated, [], 'no torn tail');
    const r = reopened.log.read(0, 1e6, true);
    assert.deepEqual(decodeRecords(Buffer.concat(r.kind === 'ok' ? r.batches : [])).map((x) => `${x.offset}:${x.value!.toString()}`), ['0:first', '1:second']);
    reopened.log.store.close();
  });

  test('if cutting the partial batch off fails too, later appends retry that first and fail while it fails, never misaligned', () => {
    const path = tempLogPath();
    const { log } = openFileLog(path);
    append(log, records(1));
    const good = statSync(path).size;
    const fault = diskFull(path, 30);
    const truncate = mock.method(fs, 'ftruncateSync', () => { throw Object.assign(new Error('EIO: i/o error, ftruncate'), { code: 'EIO' }); });
    syncBuiltinESMExports();
    try {
      assert.throws(() => append(log, records(1)), { code: 'ENOSPC' }, 'the write error is the one reported');
      fault.restore();
      assert.throws(() => append(log, records(1)), { code: 'EIO' }, 'refused while the partial bytes are still there');
      assert.equal(statSync(path).size, good + 30, 'nothing appended after them');
    } finally {
      fault.restore();
      truncate.mock.restore();
      syncBuiltinESMExports();
    }
    assert.equal(append(log, records(2)), 1, 'once the truncation works the append goes where the index expects it');
    log.store.close();
    const reopened = openFileLog(path);
    assert.deepEqual(reopened.truncated, []);
    assert.equal(reopened.log.highWatermark, 3);
    reopened.log.store.close();
  });
});
