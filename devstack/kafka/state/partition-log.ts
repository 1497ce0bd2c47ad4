/**
 * One partition: an index of stored batches over a LogStore. Single replica, no transactions, so
 * high watermark = last stable offset = log end offset. Fetch answers with whole batches starting at the batch
 * that contains the fetch offset (never a slice; clients skip records below their offset).
 */
import type { LogStore } from '../persistence/log-store.ts';
import { firstRecordAtOrAfter, stampBaseOffset } from '../records/record-batch.ts';
import { ProducerStates, producerFields } from './producer-state.ts';

interface IndexEntry {
  readonly baseOffset: number;
  readonly lastOffset: number;
  readonly position: number;
  readonly size: number;
  readonly maxTimestamp: number;
}

export type FetchRead =
  | { kind: 'ok'; batches: Buffer[]; bytes: number }
  | { kind: 'out-of-range' };

export class PartitionLog {
  readonly #store: LogStore;
  readonly #index: IndexEntry[] = [];
  #logEndOffset = 0;
  /** The first stored offset: 0, or where a log file starts whose head was deleted (as Kafka's retention deletes old segments). */
  get logStartOffset(): number { return this.#index[0]?.baseOffset ?? this.#logEndOffset; }
  readonly #listeners = new Set<() => void>();
  /** Idempotent-producer sequences of this partition. */
  readonly producers = new ProducerStates();

  constructor(store: LogStore) {
    this.#store = store;
  }

  /** Adds a batch found on disk at start-up (already carrying its assigned offset); `header` its first 61 bytes. */
  recover(position: number, size: number, baseOffset: number, lastOffsetDelta: number, maxTimestamp: number, header?: Buffer): void {
    const lastOffset = baseOffset + lastOffsetDelta;
    if (header) this.producers.record(producerFields(header), baseOffset);
    this.#index.push({ baseOffset, lastOffset, position, size, maxTimestamp });
    this.#logEndOffset = lastOffset + 1;
  }

  get highWatermark(): number { return this.#logEndOffset; }
  get store(): LogStore { return this.#store; }

  /**
   * Stores a validated batch under the next offsets and returns its base offset. Wakes parked fetches.
   * If the store's write fails it throws and the log (index, end offset, producer state) is unchanged.
   * The batch's offset fields are stamped in place: it is a view of a request frame nobody reads afterwards.
   */
  append(batch: Buffer, lastOffsetDelta: number, maxTimestamp: number): number {
    const baseOffset = this.#logEndOffset;
    const stored = stampBaseOffset(batch, baseOffset);
    const position = this.#store.append(stored); // throws on a failed write: nothing stored, nothing recorded
    this.producers.record(producerFields(stored), baseOffset);
    this.#index.push({ baseOffset, lastOffset: baseOffset + lastOffsetDelta, position, size: stored.length, maxTimestamp });
    this.#logEndOffset = baseOffset + lastOffsetDelta + 1;
    for (const wake of [...this.#listeners]) wake();
    return baseOffset;
  }

  /** Index of the first batch whose last offset is >= offset. */
  #find(offset: number): number {
    let lo = 0;
    let hi = this.#index.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#index[mid]!.lastOffset < offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * Whole batches from the one containing `offset`, adding more while the total stays within `maxBytes`.
   * With `includeOversizedFirst` the first batch is returned even when larger than the limit (KIP-74).
   */
  read(offset: number, maxBytes: number, includeOversizedFirst: boolean): FetchRead {
    if (offset < this.logStartOffset || offset > this.#logEndOffset) return { kind: 'out-of-range' };
    let i = this.#find(offset);
    let bytes = 0;
    const first = i;
    while (i < this.#index.length) {
      const entry = this.#index[i]!;
      if (bytes + entry.size > maxBytes && !(i === first && includeOversizedFirst)) break;
      bytes += entry.size;
      i++;
    }
    if (i === first) return { kind: 'ok', batches: [], bytes: 0 };
    // Batches are contiguous in the store: one read for the whole range.
    const start = this.#index[first]!.position;
    return { kind: 'ok', batches: [this.#store.read(start, bytes)], bytes };
  }

  /** Bytes available from `offset` (for fetch min_bytes). */
  bytesFrom(offset: number): number {
    const i = this.#find(offset);
    if (i >= this.#index.length) return 0;
    const last = this.#index[this.#index.length - 1]!;
    return last.position + last.size - this.#index[i]!.position;
  }

  /**
   * ListOffsets by time: the offset and timestamp of the first record whose timestamp is >= ts, or −1/−1 if there
   * is none. Batches whose max timestamp is below ts are skipped unread; see firstRecordAtOrAfter for the rest.
   */
  offsetForTimestamp(ts: number): { offset: number; timestamp: number } {
    for (const entry of this.#index) {
      if (entry.maxTimestamp < ts) continue;
      const found = firstRecordAtOrAfter(this.#store.read(entry.position, entry.size), ts);
      if (found) return found;
    }
    return { offset: -1, timestamp: -1 };
  }

  /** Calls `wake` on the next append; returns the unsubscribe function. */
  onAppend(wake: () => void): () => void {
    this.#listeners.add(wake);
    return () => this.#listeners.delete(wake);
  }

  /** Wakes parked fetches (topic deleted, broker closing). */
  wakeAll(): void {
    for (const wake of [...this.#listeners]) wake();
  }
}
