import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Writable } from 'node:stream';
import { createLogger } from '../../../common/logger.ts';
import { forwardOutput, waitListening } from '../../../devstack/unleash/launcher.ts';
import { UNLEASH_LOG } from '../../../devstack/unleash/log-events.ts';
import { waitFor } from '../../helpers/wait.ts';

interface Line { level: number; msg: string; unleash?: string; code?: number | null; stderr?: string }

function capture(): { log: ReturnType<typeof createLogger>; lines: Line[] } {
  const lines: Line[] = [];
  const sink = new Writable({ write(chunk: Buffer, _enc, done) { for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Line); done(); } });
  return { log: createLogger({ level: 'debug', destination: sink }), lines };
}

/** A real child process standing in for the server: Unleash-style JSON log lines on stdout, then whatever `script` does. */
function child(script: string) {
  return spawn(process.execPath, ['-e', `process.stdout.write(JSON.stringify({ level: 'info', category: 'c', msg: 'routine' }) + '\\n');
process.stdout.write(JSON.stringify({ level: 'warn', category: 'c', msg: 'heads up' }) + '\\n');
${script}`], { stdio: ['ignore', 'pipe', 'pipe'] });
}

test('a server that dies of an uncaught exception: the exit error carries the stack trace node printed on stderr', async () => {
  const { log, lines } = capture();
  const proc = child(`setTimeout(() => { throw new Error('addon store exploded'); }, 10);`);
  forwardOutput(proc, log, () => false);
  await waitFor('the exit to be logged', () => lines.some((l) => l.msg === UNLEASH_LOG.childExitedUnexpectedly), 10_000);
  const exited = lines.find((l) => l.msg === UNLEASH_LOG.childExitedUnexpectedly);
  assert.equal(exited?.level, 50, 'logged at error');
  assert.equal(exited?.code, 1);
  assert.match(exited?.stderr ?? '', /Error: addon store exploded/, 'the reason is in the exit line');
  const stderrLines = lines.filter((l) => l.msg === UNLEASH_LOG.childOutput && /addon store exploded/.test(l.unleash ?? ''));
  assert.ok(stderrLines.length > 0 && stderrLines.every((l) => l.level === 40), 'stderr output is forwarded at warn, not debug');
  assert.equal(lines.find((l) => l.unleash === 'routine')?.level, 20, "Unleash's info lines stay at debug");
  assert.equal(lines.find((l) => l.unleash === 'heads up')?.level, 40, "Unleash's warnings are forwarded at warn");
});

test('a server stopped on purpose: its exit is logged at debug, with no error', async () => {
  const { log, lines } = capture();
  const proc = child(`process.stderr.write('shutting down\\n'); process.exit(0);`);
  forwardOutput(proc, log, () => true);
  await once(proc, 'exit');
  await waitFor('the exit to be logged', () => lines.some((l) => l.msg === UNLEASH_LOG.childExited), 10_000);
  assert.equal(lines.filter((l) => l.level >= 50).length, 0);
});

test('a server that dies of the same Ctrl-C that is stopping its caller: logged at debug, even when the caller learns of it just after the exit', async () => {
  const { log, lines } = capture();
  const proc = child(`process.kill(process.pid, 'SIGINT');`);
  let aborted = false;
  forwardOutput(proc, log, () => false, () => aborted);
  proc.once('exit', () => (aborted = true)); // after forwardOutput's own exit listener: the signal handler runs second
  await waitFor('the exit to be logged', () => lines.some((l) => l.msg === UNLEASH_LOG.childExited || l.msg === UNLEASH_LOG.childExitedUnexpectedly), 10_000);
  assert.deepEqual(lines.filter((l) => l.level >= 50).map((l) => l.msg), [], 'no error line for an exit the caller caused');
  assert.ok(lines.some((l) => l.msg === UNLEASH_LOG.childExited && l.level === 20));
});

test('a server gone before it gets its start options: the start fails with UNLEASH_UNREACHABLE instead of an uncaught EPIPE', async () => {
  const proc = spawn(process.execPath, ['-e', 'process.exit(0)'], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
  await once(proc, 'exit');
  const options = { databaseUrl: 'postgres://x@127.0.0.1:1/x', host: '127.0.0.1', port: 0, adminToken: 'a', backendToken: 'b', adminUser: { username: 'u', password: 'p' }, logLevel: 'warn' as const };
  await assert.rejects(waitListening(proc, options, 10_000), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'UNLEASH_UNREACHABLE');
    assert.match(err.message, /could not send unleash-server its start options/);
    return true;
  });
});
