/** An append-only file whose writes are all or nothing, for the partition logs and the offsets log. */
import { fdatasync, ftruncateSync, writeSync } from 'node:fs';

/** Writes all of `data` at the file position (a nearly full disk may take only part of one write without an error). */
export function writeAll(fd: number, data: Buffer): void {
  let written = 0;
  while (written < data.length) written += writeSync(fd, data, written, data.length - written);
}

export class AppendOnlyFile {
  #size: number;
  /** A failed append left bytes past #size that could not be cut off yet. */
  #tornTail = false;
  /** Appended since the last sync(). */
  #dirty = false;

  /** `fd` is opened for appending (O_APPEND); its first `size` bytes are whole records. */
  constructor(readonly fd: number, size: number) {
    this.#size = size;
  }

  get size(): number { return this.#size; }

  /**
   * Writes all of `data` at the end. A failed write (disk full, EFBIG, EIO) may leave part of it in the file: that
   * is cut back off before the error is rethrown, so the next append starts where the caller's index expects it.
   * If the truncation fails too, every later append retries it first and fails while it does.
   */
  append(data: Buffer): void {
    if (this.#tornTail) {
      ftruncateSync(this.fd, this.#size);
      this.#tornTail = false;
    }
    try {
      writeAll(this.fd, data);
    } catch (err) {
      this.#tornTail = true;
      try {
        ftruncateSync(this.fd, this.#size);
        this.#tornTail = false;
      } catch { /* retried by the next append; the write error is the one to report */ }
      throw err;
    }
    this.#size += data.length;
    this.#dirty = true;
  }

  /** Durable on disk (fdatasync) when this resolves; nothing to do when nothing was appended since the last one. */
  async sync(): Promise<void> {
    if (!this.#dirty) return;
    this.#dirty = false;
    await new Promise<void>((resolve, reject) => fdatasync(this.fd, (err) => (err ? reject(err) : resolve())));
  }
}
