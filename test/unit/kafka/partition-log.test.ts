import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { FileLogStore, MemoryLogStore, type RecoveredBatch } from '../../../devstack/kafka/persistence/log-store.ts';
import { encodeBatch, decodeRecords } from '../../../devstack/kafka/records/record-codec.ts';
import { PartitionLog } from '../../../devstack/kafka/state/partition-log.ts';

function records(n: number, size = 10, ts = 1_700_000_000_000): Buffer {
  return encodeBatch(Array.from({ length: n }, (_, i) => ({ key: null, value: Buffer.alloc(size, 97 + i), timestamp: ts })), ts);
}

function append(log: PartitionLog, b: Buffer): number {
  return log.append(b, b.readInt32BE(23), Number(b.readBigInt64BE(35)));
}

const dirs: string[] = [];
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

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
    assert.equal(log.offsetForTimestamp(1500), 2);
    assert.equal(log.offsetForTimestamp(500), 0);
    assert.equal(log.offsetForTimestamp(3000), -1);
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
    const dir = mkdtempSync(join(tmpdir(), 'strangler-plog-'));
    dirs.push(dir);
    const path = join(dir, '0.log');
    const open = (): { log: PartitionLog; truncated: number[] } => {
      const found: RecoveredBatch[] = [];
      const truncated: number[] = [];
      const store = new FileLogStore(path, (b) => found.push(b), (valid, total) => truncated.push(valid, total));
      const log = new PartitionLog(store);
      for (const b of found) log.recover(b.position, b.size, b.baseOffset, b.lastOffsetDelta, b.maxTimestamp);
      return { log, truncated };
    };
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
});
