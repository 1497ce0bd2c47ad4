/**
 * `strangler start` (npm start) as a process, the way people stop it and the way it dies:
 *
 *   - npm runs it under `sh -c`; a SIGTERM to npm (a process manager, `timeout`, `kill <npm pid>`) ends npm and the
 *     shell but never reaches the demo. It used to keep running, orphaned, with PostgreSQL, Unleash, the broker, the
 *     monolith and the service, all holding their ports.
 *   - after a crash (kill -9) PostgreSQL, the monolith and the service used to outlive it, and the next start failed
 *     with "strangler: undefined" and exit code 0, ten seconds later.
 *
 * Real parts throughout: embedded PostgreSQL, unleash-server, the dev broker, both demo apps.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../../common/net.ts';
import { processAlive } from '../../../common/process.ts';

const root = fileURLToPath(new URL('../../../', import.meta.url));
let dataDir: string;
const started: ChildProcess[] = [];
const pidsSeen: number[] = [];

before(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'strangler-start-cmd-'));
  await chmod(dataDir, 0o755); // as root, PostgreSQL runs as `postgres` and must reach its folder below this one
});

after(async () => {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const pid of pidsSeen) if (ours(pid)) process.kill(pid, 'SIGKILL'); // only left when a test failed
  const postmaster = postmasterPid();
  if (postmaster && processAlive(postmaster)) process.kill(postmaster, 'SIGINT');
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

/** Still running, and still one of the demo's processes (not a recycled pid). */
function ours(pid: number): boolean {
  try {
    return /strangler\.js|main\.ts/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
  } catch {
    return false;
  }
}

function postmasterPid(): number | undefined {
  try {
    return Number(readFileSync(join(dataDir, 'demo', 'postgres', 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return undefined;
  }
}

async function waitGone(pids: Record<string, number>, timeoutMs = 30_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  const left = () => Object.entries(pids).filter(([, pid]) => processAlive(pid)).map(([name, pid]) => `${name} (pid ${pid})`);
  while (left().length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  return left();
}

interface Up { child: ChildProcess; output: () => string; pids: Record<string, number> }

/** The pids of a process's children (/proc/<pid>/task/<pid>/children, Linux). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * Runs `strangler start` and resolves once it printed `line` (a start step), with the demo's pid and its children:
 * the moment to stop it while it is still starting (Unleash booting).
 */
async function startUntil(viaShell: boolean, line: string, group = false): Promise<Up> {
  const args = ['bin/strangler.js', 'start', '--data-dir', join(dataDir, 'demo'),
    '--proxy-port', String(await freePort()), '--admin-port', String(await freePort()), '--unleash-port', String(await freePort()), '--kafka-port', String(await freePort())];
  const child = viaShell
    ? spawn('sh', ['-c', `${JSON.stringify(process.execPath)} ${args.map((a) => JSON.stringify(a)).join(' ')}; exit $?`], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], detached: group });
  started.push(child);
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => { out += c; });
  child.stderr!.setEncoding('utf8').on('data', (c: string) => { out += c; });
  const deadline = Date.now() + 180_000;
  while (!out.includes(line)) {
    if (child.exitCode !== null || Date.now() > deadline) assert.fail(`strangler start did not print "${line}":\n${out}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const postgres = postmasterPid()!;
  const stat = await readFile(`/proc/${postgres}/stat`, 'utf8');
  const demo = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  const pids: Record<string, number> = { demo, postgres };
  for (const pid of childrenOf(demo)) pids[`child ${pid}`] = pid; // the unleash-server child, among others
  pidsSeen.push(demo);
  return { child, output: () => out, pids };
}

/** Runs `strangler start` (through `sh -c` like npm when `viaShell`), resolves once it printed that it is up. */
async function startDemo(viaShell: boolean): Promise<Up> {
  const args = ['bin/strangler.js', 'start', '--data-dir', join(dataDir, 'demo'),
    '--proxy-port', String(await freePort()), '--admin-port', String(await freePort()), '--unleash-port', String(await freePort()), '--kafka-port', String(await freePort())];
  // `; exit $?` keeps the shell as a separate process (no exec of the last command), as npm's `sh -c` is with dash.
  const child = viaShell
    ? spawn('sh', ['-c', `${JSON.stringify(process.execPath)} ${args.map((a) => JSON.stringify(a)).join(' ')}; exit $?`], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(child);
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => { out += c; });
  child.stderr!.setEncoding('utf8').on('data', (c: string) => { out += c; });
  const deadline = Date.now() + 180_000;
  while (!out.includes('\nCtrl-C stops everything.\n')) {
    if (child.exitCode !== null || Date.now() > deadline) assert.fail(`strangler start did not come up:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const pid = (name: string) => Number(new RegExp(`${name} .*\\(pid (\\d+)\\)`).exec(out)?.[1]);
  const postgres = postmasterPid()!;
  // The demo process is PostgreSQL's parent (/proc/<pid>/stat: "pid (comm) state ppid ...").
  const stat = await readFile(`/proc/${postgres}/stat`, 'utf8');
  const demo = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  const pids = { demo, postgres, monolith: pid('monolith'), service: pid('orders service') };
  pidsSeen.push(demo, pids.monolith, pids.service);
  return { child, output: () => out, pids };
}

test('SIGTERM to the shell npm runs it in (kill <npm pid>) stops the demo and every child it started', async () => {
  const up = await startDemo(true);
  assert.ok(Object.values(up.pids).every((p) => Number.isInteger(p) && p > 0 && processAlive(p)), JSON.stringify(up.pids));
  up.child.kill('SIGTERM');
  await once(up.child, 'exit');
  assert.deepEqual(await waitGone(up.pids), [], `still running after the shell was stopped:\n${up.output()}`);
});

test('after a crash (kill -9) the apps exit with it, and the next start recovers and stops cleanly', async () => {
  const crashed = await startDemo(false);
  crashed.child.kill('SIGKILL');
  await once(crashed.child, 'exit');
  const { monolith, service } = crashed.pids;
  assert.deepEqual(await waitGone({ monolith: monolith!, service: service! }), [], 'the demo apps outlived the crashed demo');

  const next = await startDemo(false);
  assert.notEqual(next.pids.postgres, crashed.pids.postgres, 'a new PostgreSQL replaced the one the crash left running');
  assert.ok(!processAlive(crashed.pids.postgres!), 'the orphaned PostgreSQL was stopped');
  next.child.kill('SIGTERM');
  const [code] = (await once(next.child, 'exit')) as [number | null];
  assert.equal(code, 0, next.output());
  assert.deepEqual(await waitGone(next.pids), []);
});

test('Ctrl-C (SIGINT to the demo) while Unleash is still starting stops everything started so far', async () => {
  const starting = await startUntil(false, '✓ postgres');
  assert.ok(Object.keys(starting.pids).length > 2, `no unleash child yet: ${JSON.stringify(starting.pids)}`);
  starting.child.kill('SIGINT');
  const [code] = (await once(starting.child, 'exit')) as [number | null];
  // Before: the default SIGINT ended the process at once (signal, no code) and PostgreSQL kept running on the folder.
  assert.equal(code, 130, starting.output());
  assert.deepEqual(await waitGone(starting.pids), [], starting.output());
});

test('SIGTERM to the npm shell while the demo is still starting stops it once the step under way ends', async () => {
  const starting = await startUntil(true, '✓ postgres');
  starting.child.kill('SIGTERM');
  await once(starting.child, 'exit');
  // Before: the parent watch began only once the demo was up, after the shell was gone, so it never fired and the
  // orphaned demo came up and stayed up with every child.
  assert.deepEqual(await waitGone(starting.pids, 60_000), [], starting.output());
});

test('Ctrl-C in a terminal (SIGINT to the whole process group) while starting stops everything, without an error', async () => {
  const starting = await startUntil(false, '✓ postgres', true);
  process.kill(-starting.child.pid!, 'SIGINT'); // the demo leads its own group here, as npm does in a terminal
  const [code] = (await once(starting.child, 'exit')) as [number | null];
  assert.equal(code, 130, starting.output());
  assert.deepEqual(await waitGone(starting.pids), [], starting.output());
  // Before: the unleash-server child died of the SIGINT first, logged as "exited unexpectedly" at error level.
  assert.doesNotMatch(starting.output(), /exited unexpectedly|"level":50/, starting.output());
});
