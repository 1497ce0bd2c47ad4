/**
 * Where a partition's batches live: an append-only file in Kafka's on-disk batch format (one per partition,
 * no segments), or memory when the broker has no data dir. Appends are written with one write(2) before the
 * Produce is answered, so an acknowledged batch is in the kernel's page cache and survives kill -9 of the broker;
 * fsync (for power loss) follows the broker's fsync policy (see README.md).
 */
import { closeSync, fstatSync, ftruncateSync, openSync, readSync } from 'node:fs';
import { crc32c } from '../protocol/crc32c.ts';
import { BATCH_HEADER_BYTES, BATCH_LOG_OVERHEAD } from '../records/record-batch.ts';
import { AppendOnlyFile } from './append-file.ts';

export interface LogStore {
  /** Appends and returns the byte position of the appended data; on a throw nothing was appended. */
  append(data: Buffer): number;
  read(position: number, length: number): Buffer;
  /** Durable on disk (fdatasync) when this resolves. */
  sync(): Promise<void>;
  close(): void;
  readonly size: number;
}

export class MemoryLogStore implements LogStore {
  #buf = Buffer.alloc(0);
  #size = 0;

  get size(): number { return this.#size; }

  append(data: Buffer): number {
    if (this.#size + data.length > this.#buf.length) {
      const next = Buffer.allocUnsafe(Math.max(this.#buf.length * 2, this.#size + data.length, 4096));
      this.#buf.copy(next, 0, 0, this.#size);
      this.#buf = next;
    }
    const at = this.#size;
    data.copy(this.#buf, at);
    this.#size += data.length;
    return at;
  }

  read(position: number, length: number): Buffer {
    return Buffer.from(this.#buf.subarray(position, position + length));
  }

  async sync(): Promise<void> {}
  close(): void {}
}

export interface RecoveredBatch {
  readonly position: number;
  readonly size: number;
  readonly baseOffset: number;
  readonly lastOffsetDelta: number;
  readonly maxTimestamp: number;
  /** The stored batch's header (61 bytes), for state rebuilt from headers (idempotent producers). */
  readonly header: Buffer;
}

export class FileLogStore implements LogStore {
  readonly #fd: number;
  readonly #file: AppendOnlyFile;
  #closed = false;

  /** Opens (creating) the file, walks its batches and truncates a torn or corrupt tail. */
  constructor(readonly path: string, onRecovered: (batch: RecoveredBatch) => void, onTruncated: (validBytes: number, fileBytes: number) => void) {
    this.#fd = openSync(path, 'a+');
    const fileBytes = fstatSync(this.#fd).size;
    let pos = 0;
    const header = Buffer.allocUnsafe(BATCH_HEADER_BYTES);
    while (pos + BATCH_HEADER_BYTES <= fileBytes) {
      readSync(this.#fd, header, 0, BATCH_HEADER_BYTES, pos);
      const size = header.readInt32BE(8) + BATCH_LOG_OVERHEAD;
      if (size < BATCH_HEADER_BYTES || pos + size > fileBytes || header.readInt8(16) !== 2) break;
      const batch = Buffer.allocUnsafe(size);
      readSync(this.#fd, batch, 0, size, pos);
      if (crc32c(batch, 21) !== batch.readUInt32BE(17)) break;
      onRecovered({ position: pos, size, baseOffset: Number(batch.readBigInt64BE(0)), lastOffsetDelta: batch.readInt32BE(23), maxTimestamp: Number(batch.readBigInt64BE(35)), header: batch.subarray(0, BATCH_HEADER_BYTES) });
      pos += size;
    }
    if (pos !== fileBytes) {
      ftruncateSync(this.#fd, pos);
      onTruncated(pos, fileBytes);
    }
    this.#file = new AppendOnlyFile(this.#fd, pos);
  }

  get size(): number { return this.#file.size; }

  /** All or nothing: a failed write is cut off again and its error rethrown (AppendOnlyFile). */
  append(data: Buffer): number {
    const at = this.#file.size;
    this.#file.append(data);
    return at;
  }

  read(position: number, length: number): Buffer {
    const out = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const n = readSync(this.#fd, out, got, length - got, position + got);
      if (n === 0) break;
      got += n;
    }
    return got === length ? out : out.subarray(0, got);
  }

  async sync(): Promise<void> {
    if (!this.#closed) await this.#file.sync();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeSync(this.#fd);
  }
}
