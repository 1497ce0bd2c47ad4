/**
 * A buffered, asynchronous pino destination for high-rate logs (the gateway's one line per request).
 *
 * pino's default destination (sonic-boom, asynchronous) hands lines to the file system in small batches and, for
 * each line, measures the byte length of everything it has buffered so far; at ~20k lines/s that was a third of
 * the cost of a request's access-log line. Here each line is encoded at once into a batch buffer (while the string
 * is still in cache: joining a batch of lines later cost several times more) and batches are written with one write
 * in flight at a time (on libuv's thread pool, off the event loop): when `batchBytes` bytes have accumulated, or
 * `flushMs` after the first unwritten line, whichever comes first.
 *
 * Nothing is lost on a clean stop: `flush(cb)` (pino's `logger.flush(cb)`) calls back once every line written before
 * it is with the operating system, and the gateway awaits it after draining. On any other exit, a process 'exit' hook writes what is still
 * buffered synchronously (a batch already handed to the thread pool is left to finish there). A destination that
 * cannot be written (closed pipe) stops logging instead of failing requests, as pino does for EPIPE.
 */
import { fsyncSync, write, writeSync } from 'node:fs';

export interface BufferedDestinationOptions {
  /** Write once this many bytes are buffered (default 64 Ki). */
  batchBytes?: number;
  /** ... or this long after the first unwritten line (default 100 ms). */
  flushMs?: number;
}

const live = new Set<BufferedDestination>();
let exitHooked = false;

export class BufferedDestination {
  readonly fd: number;
  readonly #batchBytes: number;
  readonly #flushMs: number;
  /** Filled batch buffers not yet handed to a write, then the one being filled (`#used` bytes of it). */
  #full: Buffer[] = [];
  #current: Buffer | null = null;
  #used = 0;
  /** Bytes buffered in total (full batches plus the current one). */
  #bytes = 0;
  #writing = false;
  #broken = false;
  #timer: NodeJS.Timeout | undefined;
  /** flush() callbacks not yet covered by a batch, and those that the batch being written covers. */
  #waiters: ((err?: Error) => void)[] = [];
  #batchWaiters: ((err?: Error) => void)[] = [];

  constructor(fd: number, options: BufferedDestinationOptions = {}) {
    this.fd = fd;
    this.#batchBytes = options.batchBytes ?? 64 * 1024;
    this.#flushMs = options.flushMs ?? 100;
    live.add(this);
    if (!exitHooked) {
      exitHooked = true;
      process.on('exit', () => {
        for (const d of live) d.flushSync();
      });
    }
  }

  /** pino calls this with one serialised line (newline included). */
  write(line: string): boolean {
    if (this.#broken) return true;
    // UTF-8 takes at most 3 bytes per UTF-16 unit.
    if (this.#current === null || this.#used + line.length * 3 > this.#current.length) this.#startBuffer(line.length * 3);
    const n = (this.#current as Buffer).write(line, this.#used);
    this.#used += n;
    this.#bytes += n;
    if (this.#writing) return true;
    if (this.#bytes >= this.#batchBytes) this.#writeBatch();
    else this.#timer ??= setTimeout(this.#onTimer, this.#flushMs).unref();
    return true;
  }

  /** Writes everything buffered; `cb` runs once it is with the operating system (pino's `logger.flush(cb)`). */
  flush(cb: (err?: Error) => void = () => {}): void {
    if (!this.#writing && this.#bytes === 0) {
      process.nextTick(cb);
      return;
    }
    this.#waiters.push(cb);
    if (!this.#writing) this.#writeBatch();
  }

  /** Writes what is buffered, synchronously (exit paths). A batch already being written is left to finish. */
  flushSync(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#broken || this.#bytes === 0) return;
    const data = this.#take();
    let off = 0;
    for (let tries = 0; off < data.length && tries < 1000; ) {
      try {
        off += writeSync(this.fd, data, off);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') return;
        tries++;
      }
    }
  }

  /** pino's `final`/tests: flush, then stop. */
  end(): void {
    this.flushSync();
    try {
      fsyncSync(this.fd);
    } catch {
      // pipes and ttys cannot be synced
    }
    live.delete(this);
  }

  readonly #onTimer = (): void => {
    this.#timer = undefined;
    if (!this.#writing) this.#writeBatch();
  };

  /** Closes the buffer being filled and opens one with room for at least `need` more bytes. */
  #startBuffer(need: number): void {
    if (this.#current !== null && this.#used > 0) this.#full.push(this.#current.subarray(0, this.#used));
    this.#current = Buffer.allocUnsafe(Math.max(this.#batchBytes + 4096, need));
    this.#used = 0;
  }

  /** Everything buffered, as one buffer; the destination is empty afterwards. */
  #take(): Buffer {
    if (this.#current !== null && this.#used > 0) this.#full.push(this.#current.subarray(0, this.#used));
    const parts = this.#full;
    const data = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, this.#bytes);
    this.#full = [];
    this.#current = null;
    this.#used = 0;
    this.#bytes = 0;
    return data;
  }

  #writeBatch(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#bytes === 0 || this.#broken) return this.#settle(this.#takeWaiters());
    this.#writing = true;
    this.#batchWaiters = this.#takeWaiters();
    this.#writeFrom(this.#take(), 0);
  }

  #writeFrom(data: Buffer, off: number): void {
    write(this.fd, data, off, data.length - off, null, (err, n) => {
      if (err) {
        if (err.code === 'EAGAIN') {
          setTimeout(() => this.#writeFrom(data, off), 10).unref();
          return;
        }
        // EPIPE, EBADF, …: the sink is gone; keep serving requests without logs.
        this.#broken = true;
        this.#take();
        this.#writing = false;
        this.#settle(this.#batchWaiters, err);
        this.#batchWaiters = [];
        return this.#settle(this.#takeWaiters(), err);
      }
      if (off + n < data.length) return this.#writeFrom(data, off + n);
      this.#writing = false;
      this.#settle(this.#batchWaiters);
      this.#batchWaiters = [];
      if (this.#bytes === 0) return this.#settle(this.#takeWaiters());
      if (this.#bytes >= this.#batchBytes || this.#waiters.length > 0) this.#writeBatch();
      else this.#timer ??= setTimeout(this.#onTimer, this.#flushMs).unref();
    });
  }

  #takeWaiters(): ((err?: Error) => void)[] {
    const waiters = this.#waiters;
    this.#waiters = [];
    return waiters;
  }

  #settle(waiters: readonly ((err?: Error) => void)[], err?: Error): void {
    for (const w of waiters) w(err);
  }
}
