import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BufferedDestination } from '../../../common/log-destination.ts';
import { createLogger, flushLogger } from '../../../common/logger.ts';

const dir = mkdtempSync(join(tmpdir(), 'strangler-logdest-'));
const fds: number[] = [];
after(() => {
  for (const fd of fds) closeSync(fd);
  rmSync(dir, { recursive: true, force: true });
});

function file(name: string): { path: string; fd: number } {
  const path = join(dir, name);
  const fd = openSync(path, 'a');
  fds.push(fd);
  return { path, fd };
}

const flush = (d: BufferedDestination) => new Promise<void>((resolve, reject) => d.flush((err) => (err ? reject(err) : resolve())));

test('lines are held until flushed, then written whole and in order', async () => {
  const f = file('order.log');
  const d = new BufferedDestination(f.fd, { batchBytes: 1 << 20, flushMs: 60_000 });
  const lines = Array.from({ length: 1000 }, (_, i) => `{"n":${i}}\n`);
  for (const l of lines) d.write(l);
  assert.equal(readFileSync(f.path, 'utf8'), '', 'nothing written before a batch fills or the timer fires');
  await flush(d);
  assert.equal(readFileSync(f.path, 'utf8'), lines.join(''));
  d.end();
});

test('a full batch is written without a flush; lines logged during a write follow it in order', async () => {
  const f = file('batch.log');
  const d = new BufferedDestination(f.fd, { batchBytes: 100, flushMs: 60_000 });
  const lines = Array.from({ length: 500 }, (_, i) => `line ${i} ${'x'.repeat(i % 17)}\n`);
  for (const l of lines) d.write(l);
  await flush(d);
  assert.equal(readFileSync(f.path, 'utf8'), lines.join(''));
  d.end();
});

test('the timer writes a partial batch; flushSync writes what is buffered at once; flush with nothing buffered calls back', async () => {
  const f = file('timer.log');
  const d = new BufferedDestination(f.fd, { batchBytes: 1 << 20, flushMs: 5 });
  d.write('first\n');
  const deadline = Date.now() + 5_000;
  while (readFileSync(f.path, 'utf8') !== 'first\n') {
    assert.ok(Date.now() < deadline, 'timer flush did not happen within 5 s');
    await new Promise((r) => setImmediate(r));
  }
  await flush(d);
  const s = file('sync.log');
  const d2 = new BufferedDestination(s.fd, { batchBytes: 1 << 20, flushMs: 60_000 });
  d2.write('a\n');
  d2.write('b\n');
  d2.flushSync();
  assert.equal(readFileSync(s.path, 'utf8'), 'a\nb\n');
  await flush(d2);
  d.end();
  d2.end();
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

test('multi-byte characters and lines larger than a batch are written byte for byte, in order', async () => {
  for (const batchBytes of [100, 4096, 1 << 20]) {
    const f = file(`bytes-${batchBytes}.log`);
    const d = new BufferedDestination(f.fd, { batchBytes, flushMs: 60_000 });
    const lines: string[] = [];
    for (let i = 0; i < 500; i++) lines.push(`{"n":${i},"s":"${'é€😀'.repeat(i % 7)}"}\n`);
    lines.splice(250, 0, `{"big":"${'ü'.repeat(200_000)}"}\n`);
    for (const l of lines) d.write(l);
    await flush(d);
    assert.equal(readFileSync(f.path, 'utf8'), lines.join(''), `batchBytes ${batchBytes}`);
    d.end();
  }
});
