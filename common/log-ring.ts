/**
 * The shared ring between a process's event loop and its log thread (common/log-destination.ts starts the thread,
 * common/log-thread.ts runs it). The event loop appends records; the log thread turns them into text and writes it.
 *
 * A record is either a whole line (pino's lines) or the fields of a per-request line (RequestLog's), which the log
 * thread formats: at one line per request, making the line's text and encoding it on the event loop cost more than
 * everything else the gateway adds to a proxied request. Copying the fields costs little.
 *
 * Layout: a control block of Int32 slots and a data ring (a power of two bytes). `write` and `read` count bytes
 * appended and consumed since the start, wrapping at 2^32; the data offset is the count modulo the ring size. The
 * event loop is the only writer of `write` and the log thread (or, once it is gone, the event loop) the only writer
 * of `read`; each publishes with an atomic store after the bytes it covers, so the other side never sees half a
 * record. Records are 8-byte aligned and never wrap: one that does not fit before the end follows a PAD record.
 *
 *   record:   u32 size (bytes, header included) · u32 kind · body
 *   LINE:     u32 byte length · UTF-8 bytes (a whole line, or a piece of one too large for a record)
 *   DEFINE:   u32 id · u32 byte length · UTF-8 bytes (a string that REQUEST records name by id from here on)
 *   REQUEST:  u32 event · u32 level · i32 ids of bindings, routeId, target, decision, method, fallback, code (-1:
 *             absent) · u32 status · f64 time (ms since the epoch) · f64 duration (ms) · u32 reqId length · u32 path
 *             length · reqId and path, one byte per character (Latin-1: what node's HTTP parser makes of bytes)
 */
import { REQUEST_EVENTS, RequestLineFormat, timeField, type RequestEvent, type RequestLineFields } from './request-line.ts';

/** Slots of the control block (`started`: set by the log thread once it runs). */
export const CTRL = { write: 0, read: 1, doorbell: 2, state: 3, started: 4 } as const;
export const CTRL_SLOTS = 5;
/** Values of `state`. */
export const STATE = { running: 0, stopping: 1, broken: 2 } as const;

const KIND = { pad: 0, line: 1, define: 2, request: 3 } as const;
/** Int32 slots from a record's start: every record's, then each kind's (as in the layout above). */
const AT = { size: 0, kind: 1 } as const;
const LINE_AT = { length: 2 } as const;
const DEFINE_AT = { id: 2, length: 3 } as const;
const REQUEST_AT = { event: 2, level: 3, bindings: 4, routeId: 5, target: 6, decision: 7, method: 8, fallback: 9, code: 10, status: 11, reqIdLength: 16, pathLength: 17 } as const;
/** Float64 slots from a REQUEST record's start. */
const REQUEST_AT_F64 = { time: 6, durationMs: 7 } as const;
/** Bytes before each kind's text. */
const LINE_HEAD = 12;
const DEFINE_HEAD = 16;
const REQUEST_HEAD = 72;
/** At most this many distinct strings are sent as ids; the rest are written as whole lines. */
const MAX_IDS = 1024;

const align8 = (n: number): number => (n + 7) & ~7;

/** The typed views both sides read the ring through. */
class RingViews {
  readonly ctrl: Int32Array;
  readonly size: number;
  readonly mask: number;
  readonly u8: Uint8Array;
  readonly i32: Int32Array;
  readonly f64: Float64Array;
  readonly buf: Buffer;

  constructor(ctrl: SharedArrayBuffer, data: SharedArrayBuffer) {
    const size = data.byteLength;
    if (size < 4096 || (size & (size - 1)) !== 0) throw new RangeError(`log ring: expected a power of two of at least 4096 bytes, found ${size}`);
    this.ctrl = new Int32Array(ctrl);
    this.size = size;
    this.mask = size - 1;
    this.u8 = new Uint8Array(data);
    this.i32 = new Int32Array(data);
    this.f64 = new Float64Array(data);
    this.buf = Buffer.from(data);
  }
}

/**
 * The event loop's side: appends records. Each method returns false when the ring is full, having appended nothing
 * the reader would write (at most the DEFINE records of a request's new strings).
 */
export class RingWriter {
  readonly #v: RingViews;
  /** Bytes appended (published or about to be), and the last `read` seen. */
  #w = 0;
  #r = 0;
  /** Set when the log thread was woken because the ring passed half full; cleared once it has read since. */
  #rang = false;
  readonly #ids = new Map<string, number>();
  readonly #names: string[] = [];
  /** The largest record: a quarter of the ring, so one always fits once the log thread catches up. */
  readonly maxRecord: number;
  /** The largest piece bytes() takes. */
  readonly maxPiece: number;

  constructor(ctrl: SharedArrayBuffer, data: SharedArrayBuffer) {
    this.#v = new RingViews(ctrl, data);
    this.maxRecord = this.#v.size / 4;
    this.maxPiece = this.maxRecord - LINE_HEAD;
  }

  /** The strings sent as ids so far, by id (for a reader that takes over from the log thread). */
  names(): string[] {
    return [...this.#names];
  }

  /** Bytes appended since the start (wrapping at 2^32). */
  get written(): number {
    return this.#w;
  }

  /** Whether the reader has read everything up to `mark` (a value of `written`). */
  readUpTo(mark: number): boolean {
    return ((Atomics.load(this.#v.ctrl, CTRL.read) - mark) | 0) >= 0;
  }

  /** Wakes the log thread now rather than at its next poll. */
  ring(): void {
    Atomics.add(this.#v.ctrl, CTRL.doorbell, 1);
    Atomics.notify(this.#v.ctrl, CTRL.doorbell);
  }

  /** Whether line() takes a line this long (in UTF-16 units); longer ones go in pieces through bytes(). */
  fits(line: string): boolean {
    return align8(LINE_HEAD + line.length * 3) <= this.maxRecord;
  }

  /** A whole line (newline included) that fits(). */
  line(line: string): boolean {
    const off = this.#reserve(align8(LINE_HEAD + line.length * 3));
    return off >= 0 && this.#commitLine(off, this.#v.buf.write(line, off + LINE_HEAD));
  }

  /** A piece of a line too long for one record, at most `maxPiece` bytes; the reader writes pieces as they are. */
  bytes(piece: Uint8Array): boolean {
    const off = this.#reserve(align8(LINE_HEAD + piece.length));
    if (off < 0) return false;
    this.#v.u8.set(piece, off + LINE_HEAD);
    return this.#commitLine(off, piece.length);
  }

  /**
   * The fields of a request line. False also when a string cannot go as it is (more than MAX_IDS distinct values, a
   * character beyond Latin-1): the caller then writes the line's text instead.
   */
  request(event: RequestEvent, level: number, time: number, bindings: string, f: RequestLineFields): boolean {
    const b = this.#id(bindings);
    const route = this.#id(f.routeId);
    const target = this.#id(f.target);
    const decision = this.#id(f.decision);
    const method = f.method === undefined ? -1 : this.#id(f.method);
    const fallback = f.fallback ? this.#id(f.fallback) : -1;
    const code = f.code === undefined ? -1 : this.#id(f.code);
    if (b < 0 || route < 0 || target < 0 || decision < 0 || method < -1 || fallback < -1 || code < -1) return false;
    const { reqId, path } = f;
    const size = align8(REQUEST_HEAD + reqId.length + path.length);
    if (size > this.maxRecord) return false;
    const off = this.#reserve(size);
    if (off < 0) return false;
    const v = this.#v;
    if (!latin1(v.u8, off + REQUEST_HEAD, reqId) || !latin1(v.u8, off + REQUEST_HEAD + reqId.length, path)) return false;
    const i = off >> 2;
    const i32 = v.i32;
    i32[i + AT.kind] = KIND.request;
    i32[i + REQUEST_AT.event] = REQUEST_EVENTS.indexOf(event);
    i32[i + REQUEST_AT.level] = level;
    i32[i + REQUEST_AT.bindings] = b;
    i32[i + REQUEST_AT.routeId] = route;
    i32[i + REQUEST_AT.target] = target;
    i32[i + REQUEST_AT.decision] = decision;
    i32[i + REQUEST_AT.method] = method;
    i32[i + REQUEST_AT.fallback] = fallback;
    i32[i + REQUEST_AT.code] = code;
    i32[i + REQUEST_AT.status] = f.status;
    v.f64[(off >> 3) + REQUEST_AT_F64.time] = time;
    v.f64[(off >> 3) + REQUEST_AT_F64.durationMs] = f.durationMs;
    i32[i + REQUEST_AT.reqIdLength] = reqId.length;
    i32[i + REQUEST_AT.pathLength] = path.length;
    return this.#commit(off, size);
  }

  /** The id of a string, appending its DEFINE record the first time; -2 when it cannot have one. */
  #id(s: string): number {
    const id = this.#ids.get(s);
    if (id !== undefined) return id;
    const length = Buffer.byteLength(s);
    if (this.#names.length >= MAX_IDS || align8(DEFINE_HEAD + length) > this.maxRecord) return -2;
    const size = align8(DEFINE_HEAD + length);
    const off = this.#reserve(size);
    if (off < 0) return -2;
    const v = this.#v;
    const next = this.#names.length;
    v.buf.write(s, off + DEFINE_HEAD);
    v.i32[(off >> 2) + AT.kind] = KIND.define;
    v.i32[(off >> 2) + DEFINE_AT.id] = next;
    v.i32[(off >> 2) + DEFINE_AT.length] = length;
    this.#commit(off, size);
    this.#ids.set(s, next);
    this.#names.push(s);
    return next;
  }

  /** The offset of room for a record of `size` bytes (after a PAD if it would cross the end), or -1 when full. */
  #reserve(size: number): number {
    const v = this.#v;
    const off = this.#w & v.mask;
    const tail = v.size - off;
    const need = size <= tail ? size : tail + size;
    if (((this.#w - this.#r) | 0) + need > v.size) {
      // Full as of the last `read` seen: look again.
      this.#r = Atomics.load(v.ctrl, CTRL.read);
      const used = (this.#w - this.#r) | 0;
      if (used < v.size / 2) this.#rang = false;
      else if (!this.#rang) {
        this.#rang = true;
        this.ring();
      }
      if (used + need > v.size) return -1;
    }
    if (size <= tail) return off;
    v.i32[(off >> 2) + AT.size] = tail;
    v.i32[(off >> 2) + AT.kind] = KIND.pad;
    this.#w = (this.#w + tail) | 0;
    return 0;
  }

  #commitLine(off: number, length: number): true {
    this.#v.i32[(off >> 2) + AT.kind] = KIND.line;
    this.#v.i32[(off >> 2) + LINE_AT.length] = length;
    return this.#commit(off, align8(LINE_HEAD + length));
  }

  #commit(off: number, size: number): true {
    this.#v.i32[(off >> 2) + AT.size] = size;
    this.#w = (this.#w + size) | 0;
    Atomics.store(this.#v.ctrl, CTRL.write, this.#w);
    return true;
  }
}

/** Copies a string of Latin-1 characters one byte each; false at the first character beyond. */
function latin1(u8: Uint8Array, at: number, s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) return false;
    u8[at + i] = c;
  }
  return true;
}

/** The reading side: turns records into text. The log thread runs one; the event loop makes one if that thread dies. */
export class RingReader {
  readonly #v: RingViews;
  #r: number;
  readonly #names: string[];
  readonly #format = new RequestLineFormat();
  readonly #out: Buffer;
  #used = 0;

  /** `names`: the strings already defined (a reader taking over from a log thread that died). */
  constructor(ctrl: SharedArrayBuffer, data: SharedArrayBuffer, names: string[] = [], outBytes = 256 * 1024) {
    this.#v = new RingViews(ctrl, data);
    this.#r = Atomics.load(this.#v.ctrl, CTRL.read);
    this.#names = names;
    this.#out = Buffer.allocUnsafe(outBytes);
  }

  /** Whether every record appended so far has been read. */
  get idle(): boolean {
    return this.#r === Atomics.load(this.#v.ctrl, CTRL.write);
  }

  /**
   * Writes the text of every record appended so far with `write`, in batches, publishing `read` after each batch is
   * written (so a flush that sees `read` reach its mark knows the lines are with the operating system).
   */
  drain(write: (bytes: Uint8Array) => void): void {
    const v = this.#v;
    const w = Atomics.load(v.ctrl, CTRL.write);
    while (this.#r !== w) {
      const off = this.#r & v.mask;
      const i = off >> 2;
      const size = v.i32[i + AT.size] as number;
      const kind = v.i32[i + AT.kind];
      if (kind === KIND.line) {
        const n = v.i32[i + LINE_AT.length] as number;
        if (this.#used + n > this.#out.length) this.#flush(write);
        if (n > this.#out.length) write(v.u8.subarray(off + LINE_HEAD, off + LINE_HEAD + n));
        else {
          this.#out.set(v.u8.subarray(off + LINE_HEAD, off + LINE_HEAD + n), this.#used);
          this.#used += n;
        }
      } else if (kind === KIND.define) {
        const id = v.i32[i + DEFINE_AT.id] as number;
        const n = v.i32[i + DEFINE_AT.length] as number;
        this.#names[id] = v.buf.toString('utf8', off + DEFINE_HEAD, off + DEFINE_HEAD + n);
      } else if (kind === KIND.request) {
        const line = this.#requestLine(off);
        if (this.#used + line.length * 3 > this.#out.length) this.#flush(write);
        if (line.length * 3 > this.#out.length) write(Buffer.from(line));
        else this.#used += this.#out.write(line, this.#used);
      }
      this.#r = (this.#r + size) | 0;
    }
    this.#flush(write);
  }

  #flush(write: (bytes: Uint8Array) => void): void {
    if (this.#used > 0) write(this.#out.subarray(0, this.#used));
    this.#used = 0;
    Atomics.store(this.#v.ctrl, CTRL.read, this.#r);
    Atomics.notify(this.#v.ctrl, CTRL.read);
  }

  #requestLine(off: number): string {
    const { i32, f64, buf } = this.#v;
    const slot = (at: number): number => i32[(off >> 2) + at] as number;
    const name = (at: number): string | undefined => {
      const id = slot(at);
      return id < 0 ? undefined : this.#names[id];
    };
    const pathAt = off + REQUEST_HEAD + slot(REQUEST_AT.reqIdLength);
    return this.#format.line(REQUEST_EVENTS[slot(REQUEST_AT.event)] as RequestEvent, slot(REQUEST_AT.level), timeField(f64[(off >> 3) + REQUEST_AT_F64.time] as number), name(REQUEST_AT.bindings) ?? '', {
      reqId: buf.toString('latin1', off + REQUEST_HEAD, pathAt),
      routeId: name(REQUEST_AT.routeId) ?? '',
      target: name(REQUEST_AT.target) ?? '',
      decision: name(REQUEST_AT.decision) ?? '',
      status: slot(REQUEST_AT.status),
      durationMs: f64[(off >> 3) + REQUEST_AT_F64.durationMs] as number,
      method: name(REQUEST_AT.method),
      path: buf.toString('latin1', pathAt, pathAt + slot(REQUEST_AT.pathLength)),
      fallback: name(REQUEST_AT.fallback) ?? null,
      code: name(REQUEST_AT.code),
    });
  }
}
