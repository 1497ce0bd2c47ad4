/**
 * The pino destination of processes that log per request (the gateway's `log.buffer`, on by default): lines are
 * written by a log thread, off the event loop.
 *
 * The event loop appends each line to a ring shared with the thread (common/log-ring.ts); for the gateway's
 * per-request line it appends only the fields (RequestLog calls writeRequest), and the thread makes the text. Making
 * and encoding a line per request on the event loop cost more than anything else the gateway adds to a proxied
 * request (bench/gateway.bench.ts); copying the fields into the ring costs little.
 *
 * Nothing is lost, and a slow file never stalls the event loop:
 * - When the ring is full (the thread is waiting on a slow pipe), lines queue in memory, in order, and move to the
 *   ring as it empties.
 * - `flush(cb)` (pino's `logger.flush(cb)`) calls back once every line written before it is with the operating
 *   system; the gateway awaits it after draining. On any other exit, a process 'exit' hook waits (up to 5 s) for the
 *   thread to write the rest.
 * - If the thread dies, or cannot start, the event loop reads the ring itself from then on.
 * A destination that cannot be written (closed pipe) stops logging instead of failing requests, as pino does for EPIPE.
 */
import { Worker } from 'node:worker_threads';
import { CTRL, CTRL_SLOTS, RingReader, RingWriter, STATE } from './log-ring.ts';
import { fdSink, sleep, type LogThreadData } from './log-thread.ts';
import { RequestLineFormat, timeField, type RequestEvent, type RequestLineFields } from './request-line.ts';

export interface LogThreadOptions {
  /** Size of the shared ring, a power of two (default 4 MiB: seconds of lines at the gateway's top rate). */
  ringBytes?: number;
  /** The thread writes at least this often (default 25 ms); sooner on a flush or when the ring is half full. */
  pollMs?: number;
  /** How long an exit waits for the thread to write what is left (default 5 s). */
  exitWaitMs?: number;
  /** The thread's entry module: tests give one that fails to load. */
  entry?: URL;
}

const live = new Set<LogThreadDestination>();
let exitHooked = false;

export class LogThreadDestination {
  readonly fd: number;
  readonly #ctrlBuffer: SharedArrayBuffer;
  readonly #dataBuffer: SharedArrayBuffer;
  readonly #ctrl: Int32Array;
  readonly #ring: RingWriter;
  #worker: Worker | null;
  /** Set once the thread is gone: the event loop then reads the ring itself, into `#sink`. */
  #reader: RingReader | null = null;
  #sink: (bytes: Uint8Array) => void = () => {};
  #readerTimer: NodeJS.Timeout | undefined;
  /**
   * Lines that did not fit in the ring, oldest first, from `#head` on (those before it are in the ring); `#moved`
   * counts the lines moved to the ring since the start.
   */
  #overflow: string[] = [];
  #head = 0;
  #moved = 0;
  #overflowTimer: NodeJS.Timeout | undefined;
  /** Request lines made on the event loop (queued behind the overflow, or with a string the ring cannot carry). */
  readonly #format = new RequestLineFormat();
  #ended = false;
  readonly #exitWaitMs: number;

  constructor(fd: number, options: LogThreadOptions = {}) {
    this.fd = fd;
    this.#exitWaitMs = options.exitWaitMs ?? 5000;
    this.#ctrlBuffer = new SharedArrayBuffer(CTRL_SLOTS * 4);
    this.#dataBuffer = new SharedArrayBuffer(options.ringBytes ?? 4 * 1024 * 1024);
    this.#ctrl = new Int32Array(this.#ctrlBuffer);
    this.#ring = new RingWriter(this.#ctrlBuffer, this.#dataBuffer);
    const workerData: LogThreadData = { ctrl: this.#ctrlBuffer, data: this.#dataBuffer, fd, pollMs: options.pollMs ?? 25 };
    // The thread takes none of the process's own options (an --input-type, say, fails its start); it registers the
    // TypeScript loader itself.
    this.#worker = new Worker(options.entry ?? new URL('./log-thread-entry.js', import.meta.url), {
      workerData,
      name: 'strangler-log',
      execArgv: [],
      // Its heap holds a line batch and the id table; without a limit it would take the process's young-generation
      // size (the deployment's --max-semi-space-size=64).
      resourceLimits: { maxYoungGenerationSizeMb: 8, maxOldGenerationSizeMb: 64 },
    });
    this.#worker.unref();
    this.#worker.on('error', (err: Error) => this.#takeOver(err.message));
    this.#worker.on('exit', (code: number) => this.#takeOver(`exited with code ${code}`));
    live.add(this);
    if (!exitHooked) {
      exitHooked = true;
      process.on('exit', () => {
        for (const d of live) d.flushSync();
      });
    }
  }

  /** The log thread, for tests that make it fail. */
  get thread(): Worker | null {
    return this.#worker;
  }

  /** pino calls this with one serialised line (newline included). */
  write(line: string): boolean {
    if (this.#broken()) return true;
    if (this.#queued > 0 || !this.#toRing(line)) this.#queue(line);
    return true;
  }

  /**
   * A per-request line, as RequestLog would write it with `level`, the current time and the logger's `bindings`: the
   * fields go in the ring and the log thread makes the text.
   */
  writeRequest(event: RequestEvent, level: number, bindings: string, f: RequestLineFields): void {
    if (this.#broken()) return;
    const now = Date.now();
    if (this.#queued === 0 && this.#ring.request(event, level, now, bindings, f)) return;
    this.write(this.#format.line(event, level, timeField(now), bindings, f));
  }

  /** Calls back once every line written so far is with the operating system (pino's `logger.flush(cb)`). */
  flush(cb: (err?: Error) => void = () => {}): void {
    const movedBy = this.#moved + this.#queued;
    let mark: number | undefined;
    const check = (): void => {
      this.#moveOverflow();
      if (this.#reader) this.#readHere();
      if (this.#broken()) return cb(new Error('log destination cannot be written'));
      if (mark === undefined && this.#moved >= movedBy) mark = this.#ring.written;
      if (mark !== undefined && this.#ring.readUpTo(mark)) return cb();
      this.#ring.ring();
      setTimeout(check, 2);
    };
    check();
  }

  /** Writes everything, synchronously (exit paths): waits up to 5 s for the log thread, or reads the ring itself. */
  flushSync(): void {
    const deadline = Date.now() + this.#exitWaitMs;
    for (;;) {
      this.#moveOverflow();
      if (this.#reader) this.#readHere();
      const mark = this.#ring.written;
      while (!this.#ring.readUpTo(mark) && !this.#reader && Date.now() < deadline) {
        this.#ring.ring();
        Atomics.wait(this.#ctrl, CTRL.read, Atomics.load(this.#ctrl, CTRL.read), 20);
      }
      // A thread that never started (it failed to load, and the event loop, busy here, cannot hear of it) has read
      // nothing: the event loop writes the lines itself. One that started is left to finish.
      if (!this.#ring.readUpTo(mark) && !this.#reader && !this.#ended && Atomics.load(this.#ctrl, CTRL.started) === 0) {
        this.#takeOver('did not start');
        continue;
      }
      if (this.#queued === 0 || this.#broken() || Date.now() >= deadline) return;
    }
  }

  /** pino's `final`, and tests: writes everything, then stops the log thread. */
  end(): void {
    if (this.#ended) return;
    this.flushSync();
    this.#ended = true;
    live.delete(this);
    clearInterval(this.#readerTimer);
    clearTimeout(this.#overflowTimer);
    Atomics.store(this.#ctrl, CTRL.state, STATE.stopping);
    this.#ring.ring();
  }

  #broken(): boolean {
    return Atomics.load(this.#ctrl, CTRL.state) === STATE.broken;
  }

  /** Appends a line to the ring; false when it is full. A line too long for one record goes in pieces, waiting for room. */
  #toRing(line: string): boolean {
    const ring = this.#ring;
    if (ring.fits(line)) return ring.line(line);
    const bytes = Buffer.from(line);
    for (let at = 0; at < bytes.length; at += ring.maxPiece) {
      const piece = bytes.subarray(at, at + ring.maxPiece);
      while (!ring.bytes(piece)) this.#waitForRoom();
    }
    return true;
  }

  #waitForRoom(): void {
    if (this.#reader) return this.#readHere();
    this.#ring.ring();
    sleep(1);
  }

  #queue(line: string): void {
    this.#overflow.push(line);
    this.#overflowTimer ??= setTimeout(this.#onOverflowTimer, 10).unref();
  }

  readonly #onOverflowTimer = (): void => {
    this.#overflowTimer = undefined;
    this.#moveOverflow();
    if (this.#queued > 0) this.#overflowTimer = setTimeout(this.#onOverflowTimer, 10).unref();
  };

  /** Lines waiting in memory for room in the ring. */
  get #queued(): number {
    return this.#overflow.length - this.#head;
  }

  /** Moves queued lines to the ring, oldest first, while they fit. */
  #moveOverflow(): void {
    const start = this.#head;
    while (this.#head < this.#overflow.length && this.#toRing(this.#overflow[this.#head] as string)) this.#head++;
    if (this.#head === start) return;
    this.#moved += this.#head - start;
    if (this.#head === this.#overflow.length || this.#head > 4096) {
      this.#overflow = this.#overflow.slice(this.#head);
      this.#head = 0;
    }
    this.#ring.ring();
  }

  /**
   * The log thread is gone (it failed, could not start, or was stopped): the event loop reads the ring from now on,
   * and the log says so (a `log.thread_failed` warning, after the lines already logged).
   */
  #takeOver(reason: string): void {
    if (this.#reader || this.#ended) return;
    this.#worker = null;
    this.#reader = new RingReader(this.#ctrlBuffer, this.#dataBuffer, this.#ring.names());
    this.#sink = fdSink(this.#ctrl, this.fd, 1000);
    this.#readerTimer = setInterval(() => this.#readHere(), 100).unref();
    this.write(`{"level":40${timeField(Date.now())},"pid":${process.pid},"reason":${JSON.stringify(reason)},"msg":"log.thread_failed"}\n`);
  }

  #readHere(): void {
    this.#reader?.drain(this.#sink);
  }
}
