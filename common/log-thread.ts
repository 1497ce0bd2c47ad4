/**
 * The log thread: drains the shared ring (common/log-ring.ts) into a file descriptor, off the event loop. Started by
 * common/log-destination.ts through common/log-thread-entry.js. It wakes when the event loop rings (a flush, the ring
 * half full, a stop) and otherwise every `pollMs`, so lines reach the file at most that late.
 *
 * A descriptor that is not ready (EAGAIN: a non-blocking pipe whose reader is behind) is retried: this thread can
 * wait, and the event loop keeps what does not fit in the ring. One that cannot be written (EPIPE, EBADF, ...) turns
 * logging off (`state` broken, records read and dropped) instead of failing requests, as pino does for EPIPE.
 */
import { fstatSync, writeSync } from 'node:fs';
import { CTRL, RingReader, STATE } from './log-ring.ts';

export interface LogThreadData {
  ctrl: SharedArrayBuffer;
  data: SharedArrayBuffer;
  fd: number;
  pollMs: number;
}

const pause = new Int32Array(new SharedArrayBuffer(4));

/** Sleeps this thread (Atomics.wait: allowed off and on node's main thread). */
export function sleep(ms: number): void {
  Atomics.wait(pause, 0, 0, ms);
}

/**
 * Writes all of `bytes` to `fd`, waiting out EAGAIN for up to `patienceMs` (forever when Infinity). Throws the error
 * of a descriptor that cannot be written.
 */
export function writeAll(fd: number, bytes: Uint8Array, patienceMs: number): void {
  let off = 0;
  let waited = 0;
  while (off < bytes.length) {
    try {
      off += writeSync(fd, bytes, off);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN' || waited >= patienceMs) throw err;
      sleep(5);
      waited += 5;
    }
  }
}

/**
 * The most a write to `fd` may carry for it to land whole: PIPE_BUF (4 KiB on Linux) for a pipe or socket, which
 * several processes share when a clustered gateway's workers write to the same stdout (a longer write to a full pipe
 * can interleave with theirs mid-line); no limit for a file.
 */
export function atomicWriteBytes(fd: number): number {
  try {
    const st = fstatSync(fd);
    return st.isFIFO() || st.isSocket() ? 4096 : Infinity;
  } catch {
    return Infinity;
  }
}

/** writeAll in pieces of at most `limit` bytes that end at line ends (a longer line goes alone, in one write). */
export function writeLines(fd: number, bytes: Uint8Array, limit: number, patienceMs: number): void {
  if (bytes.length <= limit) return writeAll(fd, bytes, patienceMs);
  for (let start = 0; start < bytes.length; ) {
    let end = start + limit;
    if (end >= bytes.length) end = bytes.length;
    else {
      const last = bytes.lastIndexOf(0x0a, end - 1);
      if (last >= start) end = last + 1;
      else {
        const next = bytes.indexOf(0x0a, end);
        end = next < 0 ? bytes.length : next + 1;
      }
    }
    writeAll(fd, bytes.subarray(start, end), patienceMs);
    start = end;
  }
}

/**
 * Where a ring reader writes: `fd` in line-aligned pieces (writeLines), until a write fails; then the ring's `state`
 * is broken and the rest is dropped. The log thread waits out EAGAIN for as long as it takes; the event loop, reading
 * the ring after the thread is gone, for `patienceMs`.
 */
export function fdSink(control: Int32Array, fd: number, patienceMs: number): (bytes: Uint8Array) => void {
  const limit = atomicWriteBytes(fd);
  return (bytes) => {
    if (Atomics.load(control, CTRL.state) === STATE.broken) return;
    try {
      writeLines(fd, bytes, limit, patienceMs);
    } catch {
      Atomics.store(control, CTRL.state, STATE.broken);
    }
  };
}

/** Drains the ring until the event loop sets `state` to stopping and everything is written. */
export function runLogThread({ ctrl, data, fd, pollMs }: LogThreadData): void {
  const control = new Int32Array(ctrl);
  Atomics.store(control, CTRL.started, 1);
  const reader = new RingReader(ctrl, data);
  const write = fdSink(control, fd, Infinity);
  for (;;) {
    const bell = Atomics.load(control, CTRL.doorbell);
    reader.drain(write);
    if (Atomics.load(control, CTRL.state) === STATE.stopping && reader.idle) return;
    Atomics.wait(control, CTRL.doorbell, bell, pollMs);
  }
}
