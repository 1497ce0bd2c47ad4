/**
 * The log thread destination: lines and request records written in order, byte for byte, with nothing lost when the
 * file is slow, the thread dies, or the process exits; a file that cannot be written turns logging off.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readFileSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LogThreadDestination } from '../../../common/log-destination.ts';
import { createLogger, flushLogger } from '../../../common/logger.ts';
import { RequestLineFormat, timeField, type RequestLineFields } from '../../../common/request-line.ts';
import { waitFor } from '../../helpers/wait.ts';

const dir = mkdtempSync(join(tmpdir(), 'strangler-logdest-'));
const fds: number[] = [];
const destinations: LogThreadDestination[] = [];
after(() => {
  for (const d of destinations) d.end();
  for (const fd of fds) closeSync(fd);
  rmSync(dir, { recursive: true, force: true });
});

function file(name: string): { path: string; fd: number } {
  const path = join(dir, name);
  const fd = openSync(path, 'a');
  fds.push(fd);
  return { path, fd };
}

function destination(fd: number, options: ConstructorParameters<typeof LogThreadDestination>[1] = {}): LogThreadDestination {
  const d = new LogThreadDestination(fd, options);
  destinations.push(d);
  return d;
}

const flush = (d: LogThreadDestination) => new Promise<void>((resolve, reject) => d.flush((err?: Error) => (err ? reject(err) : resolve())));

const base: RequestLineFields = { reqId: 'a1b2', routeId: 'orders', target: 'service', decision: 'flag-on', status: 200, durationMs: 1.234, method: 'GET', path: '/api/orders/42', fallback: null, code: undefined };
const BINDINGS = ',"pid":1,"name":"gateway"';

/** The text the event loop makes for a request record written at `ms`. */
function made(fields: RequestLineFields, ms: number, event: 'request.completed' | 'request.failed' = 'request.completed', level = 30): string {
  return new RequestLineFormat().line(event, level, timeField(ms), BINDINGS, fields);
}

/** The time each line carries, so expected lines can be made with the same timestamp. */
const timeOf = (line: string): number => Date.parse(/"time":"([^"]+)"/.exec(line)?.[1] ?? '');

test('lines and request records are written in order, each request line as the event loop would make it', async () => {
  const f = file('order.log');
  const d = destination(f.fd, { pollMs: 60_000 });
  const expected: (string | RequestLineFields)[] = [];
  for (let i = 0; i < 3000; i++) {
    if (i % 3 === 0) {
      const line = `{"n":${i}}\n`;
      d.write(line);
      expected.push(line);
    } else {
      const fields: RequestLineFields = { ...base, reqId: `req-${i}`, status: 200 + (i % 7), durationMs: i / 7, method: i % 2 ? 'GET' : undefined, fallback: i % 5 ? null : 'service-timeout', code: i % 11 ? undefined : 'UPSTREAM_TIMEOUT' };
      d.writeRequest('request.completed', 30, BINDINGS, fields);
      expected.push(fields);
    }
  }
  await flush(d);
  const lines = readFileSync(f.path, 'utf8').split(/(?<=\n)/);
  assert.equal(lines.length, expected.length);
  for (const [i, want] of expected.entries()) {
    const got = lines[i] as string;
    assert.equal(got, typeof want === 'string' ? want : made(want, timeOf(got)), `line ${i}`);
  }
});

test('strings the ring cannot carry as they are still make the same line: beyond Latin-1, more distinct ids than it keeps', async () => {
  const f = file('strings.log');
  const d = destination(f.fd, { pollMs: 60_000 });
  const cases: RequestLineFields[] = [
    { ...base, path: '/api/caf\u00e9/\u00ff' },
    { ...base, path: '/api/\u2028/\u{1f600}', reqId: 'emoji' },
    { ...base, path: '/quote"and\\backslash\u0001' },
    // a request line longer than the thread's write batch
    { ...base, path: `/${'\u00e9'.repeat(150_000)}`, reqId: 'long' },
    ...Array.from({ length: 1500 }, (_, i): RequestLineFields => ({ ...base, routeId: `route-${i}`, reqId: `r${i}` })),
  ];
  for (const c of cases) d.writeRequest('request.failed', 40, BINDINGS, c);
  await flush(d);
  const lines = readFileSync(f.path, 'utf8').split(/(?<=\n)/);
  assert.equal(lines.length, cases.length);
  for (const [i, c] of cases.entries()) assert.equal(lines[i], made(c, timeOf(lines[i] as string), 'request.failed', 40), `case ${i}`);
  for (const line of lines) JSON.parse(line);
});

test('without a flush, the thread writes within its poll interval', async () => {
  const f = file('poll.log');
  const d = destination(f.fd, { pollMs: 5 });
  d.write('first\n');
  await waitFor('the line written by the thread', () => readFileSync(f.path, 'utf8') === 'first\n', 5000);
});

test('multi-byte characters, and lines larger than the ring, are written byte for byte and in order', async () => {
  for (const ringBytes of [4096, 65_536, 1 << 22]) {
    const f = file(`bytes-${ringBytes}.log`);
    const d = destination(f.fd, { ringBytes, pollMs: 60_000 });
    const lines: string[] = [];
    for (let i = 0; i < 500; i++) lines.push(`{"n":${i},"s":"${'é€😀'.repeat(i % 7)}"}\n`);
    lines.splice(250, 0, `{"big":"${'ü€'.repeat(100_000)}"}\n`);
    for (const l of lines) d.write(l);
    await flush(d);
    assert.equal(readFileSync(f.path, 'utf8'), lines.join(''), `ring of ${ringBytes} bytes`);
  }
});

/** A named pipe: its read end (non-blocking, for the test) and its write end (blocking, for the thread). */
function fifo(name: string): { read: number; write: number } {
  const path = join(dir, name);
  execFileSync('mkfifo', [path]);
  const read = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const write = openSync(path, 'w');
  fds.push(read, write);
  return { read, write };
}

/** Reads `bytes` bytes from the non-blocking read end of a pipe, as they come. */
async function readPipe(fd: number, bytes: number): Promise<string> {
  const chunks: Buffer[] = [];
  let got = 0;
  const chunk = Buffer.alloc(65_536);
  await waitFor('every line through the pipe', () => {
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, chunk);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return got >= bytes;
        throw err;
      }
      chunks.push(Buffer.from(chunk.subarray(0, n)));
      got += n;
    }
  }, 20_000);
  return Buffer.concat(chunks).toString();
}

test('a reader that falls behind stalls only the thread: the event loop keeps logging, and every line arrives in order', async () => {
  const pipe = fifo('slow.fifo');
  const d = destination(pipe.write, { ringBytes: 16_384, pollMs: 5 });
  const lines = Array.from({ length: 20_000 }, (_, i) => `{"n":${i},"pad":"${'x'.repeat(i % 40)}"}\n`);
  // Far more than the pipe (64 KiB) and the ring hold together: with nobody reading, the thread is blocked in a
  // write and the rest waits in memory. Were the event loop blocked instead, this loop would never end.
  for (const l of lines) d.write(l);
  const want = Buffer.byteLength(lines.join(''));
  const flushed = flush(d);
  const text = await readPipe(pipe.read, want);
  await flushed;
  assert.equal(text, lines.join(''));
});

test('processes sharing a pipe (a clustered gateway\'s stdout) never tear each other\'s lines', async () => {
  const pipe = fifo('shared.fifo');
  const writers = [destination(pipe.write, { pollMs: 5 }), destination(pipe.write, { pollMs: 5 })];
  const lines = (w: number) => Array.from({ length: 20_000 }, (_, i) => `{"w":${w},"n":${i},"pad":"${'y'.repeat(i % 90)}"}\n`);
  // Both fill their rings before anyone reads: each thread then writes into a pipe that is full.
  for (const [w, d] of writers.entries()) for (const l of lines(w)) d.write(l);
  const want = writers.reduce((n, _, w) => n + Buffer.byteLength(lines(w).join('')), 0);
  const flushed = Promise.all(writers.map(flush));
  const text = await readPipe(pipe.read, want);
  await flushed;
  const got = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { w: number; n: number });
  for (const w of [0, 1]) assert.deepEqual(got.filter((l) => l.w === w).map((l) => l.n), lines(w).map((_, i) => i), `writer ${w}`);
});

test('when the thread dies, the event loop writes the ring itself: nothing lost, order kept', async () => {
  const f = file('takeover.log');
  const d = destination(f.fd, { pollMs: 60_000 });
  const lines: string[] = [];
  const put = (i: number) => {
    const fields = { ...base, reqId: `r${i}` };
    d.writeRequest('request.completed', 30, BINDINGS, fields);
    lines.push(`r${i}`);
  };
  for (let i = 0; i < 100; i++) put(i);
  await flush(d);
  const thread = d.thread;
  assert.ok(thread);
  for (let i = 100; i < 200; i++) put(i);
  await thread.terminate();
  for (let i = 200; i < 300; i++) put(i);
  await waitFor('the destination to see the thread gone', () => d.thread === null, 5000);
  for (let i = 300; i < 400; i++) put(i);
  await flush(d);
  const logged = readFileSync(f.path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { reqId?: string; msg: string; level: number });
  const failed = logged.findIndex((l) => l.msg === 'log.thread_failed');
  assert.ok(failed >= 200, 'the takeover is logged, after the lines logged before it');
  assert.equal(logged[failed]?.level, 40);
  assert.deepEqual(logged.filter((l) => l.msg !== 'log.thread_failed').map((l) => l.reqId), lines);
});

test('a file that cannot be written turns logging off without failing the caller; flush reports it', async () => {
  const pipe = fifo('closed.fifo');
  closeSync(pipe.read);
  fds.splice(fds.indexOf(pipe.read), 1);
  const d = destination(pipe.write, { pollMs: 5 });
  d.write('lost\n');
  await assert.rejects(flush(d), /cannot be written/);
  for (let i = 0; i < 10_000; i++) d.write(`{"after":${i}}\n`);
  d.writeRequest('request.completed', 30, BINDINGS, base);
  await assert.rejects(flush(d), /cannot be written/);
});

test('a buffered logger still redacts credentials and loses nothing on flushLogger', async () => {
  const f = file('logger.log');
  const log = createLogger({ level: 'info', buffer: true, fd: f.fd });
  log.info({ req: { headers: { authorization: 'Bearer s3cret-a', accept: 'text/html' } }, token: 's3cret-b' }, 'request');
  for (let i = 0; i < 200; i++) log.info({ i }, 'request.completed');
  await flushLogger(log);
  const text = readFileSync(f.path, 'utf8');
  assert.ok(!text.includes('s3cret'), `a secret leaked: ${text.slice(0, 300)}`);
  assert.ok(text.includes('text/html'));
  assert.equal(text.split('\n').filter(Boolean).length, 201);
});

const BROKEN_ENTRY = new URL('./no-such-log-thread.js', import.meta.url);

test('a thread that cannot start leaves the writing to the event loop', async () => {
  const f = file('no-thread.log');
  const d = destination(f.fd, { entry: BROKEN_ENTRY });
  const lines = Array.from({ length: 1000 }, (_, i) => `{"n":${i}}\n`);
  for (const l of lines) d.write(l);
  await flush(d);
  const text = readFileSync(f.path, 'utf8');
  assert.ok(text.startsWith(lines.join('')), 'every line, in order');
  assert.match(text.slice(lines.join('').length), /"msg":"log.thread_failed"/);
});

test('a process that exits without flushing still writes every line: thread starting, started, or unable to start', () => {
  const destinationModule = new URL('../../../common/log-destination.ts', import.meta.url).href;
  const cases = [
    { wait: 0, how: 'process.exit(0)', entry: undefined },
    { wait: 0, how: '', entry: undefined },
    { wait: 300, how: 'process.exit(0)', entry: undefined },
    { wait: 300, how: '', entry: undefined },
    { wait: 0, how: 'process.exit(0)', entry: BROKEN_ENTRY.href },
  ];
  for (const [n, c] of cases.entries()) {
    const path = join(dir, `exit-${n}.log`);
    const options = c.entry ? `{ entry: new URL(${JSON.stringify(c.entry)}), exitWaitMs: 300 }` : '{}';
    const script = `
      import { openSync } from 'node:fs';
      import { LogThreadDestination } from '${destinationModule}';
      const d = new LogThreadDestination(openSync(${JSON.stringify(path)}, 'w'), ${options});
      await new Promise((r) => setTimeout(r, ${c.wait}));
      for (let i = 0; i < 5000; i++) d.write(JSON.stringify({ i }) + '\\n');
      ${c.how};`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    const lines = readFileSync(path, 'utf8').split('\n').filter((l) => l && !l.includes('log.thread_failed'));
    assert.deepEqual(lines.map((l) => (JSON.parse(l) as { i: number }).i), Array.from({ length: 5000 }, (_, i) => i), JSON.stringify(c));
  }
});
