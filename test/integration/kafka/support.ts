/** Shared pieces of the dev-broker integration tests: temp dirs, brokers in-process or as child processes, polling. */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Kafka } from 'kafkajs';
import { startKafkaBroker, type KafkaBroker, type KafkaBrokerOptions } from '../../../devstack/kafka/index.ts';
import { KAFKA_LOG } from '../../../devstack/kafka/log-events.ts';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

let counter = 0;
/** Topic/group names unique per test run, so tests never see each other's data. */
export function unique(prefix: string): string {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter++}`;
}

export function tempDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `strangler-${prefix}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Test tuning from the reference §11: short sessions are allowed, no initial rebalance delay. */
export function startTestBroker(options: KafkaBrokerOptions = {}): Promise<KafkaBroker> {
  return startKafkaBroker({ host: '127.0.0.1', port: 0, groupMinSessionTimeoutMs: 500, initialRebalanceDelayMs: 0, ...options });
}

export { waitFor } from '../../helpers/wait.ts';

export interface ChildBroker {
  readonly child: ChildProcess;
  readonly port: number;
  readonly address: string;
  /** Every JSON log line the broker printed so far, from its start. */
  readonly logs: { msg?: string; [field: string]: unknown }[];
  /** Resolves when the process has exited. */
  readonly exited: Promise<number | null>;
  stop(): Promise<void>;
}

/**
 * Runs the broker as a child process and waits for its "listening" log line: devstack/kafka/main.ts, or with
 * `viaCli` the real `strangler devstack kafka` command.
 */
export async function spawnBroker(dataDir: string, extraArgs: string[] = [], viaCli = false): Promise<ChildBroker> {
  const entry = viaCli ? [join(REPO_ROOT, 'bin/strangler.js'), 'devstack', 'kafka'] : ['--import', 'tsx', join(REPO_ROOT, 'devstack/kafka/main.ts')];
  const child = spawn(process.execPath, [...entry, '--port', '0', '--data-dir', dataDir, '--min-session-timeout-ms', '500', ...extraArgs], {
    cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const logs: ChildBroker['logs'][number][] = [];
  const port = await new Promise<number>((resolvePort, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      try {
        const parsed = JSON.parse(line) as { msg?: string; port?: number };
        logs.push(parsed);
        if (parsed.msg === KAFKA_LOG.listening && parsed.port) resolvePort(parsed.port);
      } catch { /* not a log line */ }
    });
    void exited.then((code) => reject(new Error(`broker child exited (${code}) before listening: ${stderr}`)));
  });
  return {
    child, port, address: `127.0.0.1:${port}`, logs, exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * Whether the kcat tests can run: false when Debian's kcat is on PATH, else the reason they are skipped. Under CI
 * (CI=true) a missing kcat also registers a failing test, so it is never silently skipped there.
 */
export function kcatSkip(what: string): string | false {
  if (spawnSync('kcat', ['-V'], { encoding: 'utf8' }).status === 0) return false;
  const missing = `kcat not found on PATH: install the Debian package \`kcat\` (apt-get install -y kcat) to run ${what}`;
  console.error(`\n*** ${missing} ***\n`);
  if (process.env.CI === 'true') test('kcat is installed (required under CI=true)', () => assert.fail(missing));
  return missing;
}

/** Whether tests that limit a child's file size (prlimit(1), Linux) can run: false, or why they are skipped. */
export function prlimitSkip(): string | false {
  if (process.platform === 'linux' && spawnSync('prlimit', ['--version']).status === 0) return false;
  const missing = 'needs prlimit(1) from util-linux (Linux) to give the broker process a file size limit';
  // util-linux is part of every Debian install, so under CI a missing prlimit is a failure, never a silent skip.
  if (process.env.CI === 'true') test('prlimit is installed (required under CI=true)', () => assert.fail(missing));
  return missing;
}

/**
 * Sets the soft RLIMIT_FSIZE of process `pid`: a write past `bytes` in any file is cut short and the next one
 * fails with EFBIG, as a disk filling up mid-write would. 'unlimited' lifts it again.
 */
export function limitFileSize(pid: number, bytes: number | 'unlimited'): void {
  const run = spawnSync('prlimit', ['--pid', String(pid), `--fsize=${bytes}:`], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`prlimit --fsize=${bytes} failed: ${run.stderr}`);
}

export interface KcatRun { code: number | null; stdout: string; stderr: string }

/** Runs kcat asynchronously (the broker lives in the test process, so a synchronous spawn would starve it). */
export function kcat(args: string[], input?: string, timeoutMs = 20_000): Promise<KcatRun> {
  return new Promise((resolve) => {
    const child = execFile('kcat', args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
    child.stdin!.end(input ?? '');
  });
}

/** Produces three keyed messages and reads them back with a consumer group (two connections, both authenticated). */
export async function roundTrip(kafka: Kafka): Promise<void> {
  const topic = unique('secured');
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  const sent = ['one', 'two', 'three'];
  await producer.send({ topic, messages: sent.map((value, i) => ({ key: `k${i}`, value })) });
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: unique('secured-group'), sessionTimeout: 6_000, heartbeatInterval: 500, maxWaitTimeInMs: 100 });
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    const received: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`consumed only ${JSON.stringify(received)} within 20 s`)), 20_000);
      consumer.run({
        eachMessage: async ({ message }) => {
          received.push(`${message.key?.toString() ?? ''}=${message.value?.toString() ?? ''}`);
          if (received.length === sent.length) { clearTimeout(timer); resolve(); }
          await Promise.resolve();
        },
      }).catch(reject);
    });
    assert.deepEqual(received, sent.map((v, i) => `k${i}=${v}`));
  } finally {
    await consumer.disconnect();
  }
}

/** A failure that must come quickly: the promise rejects with a message matching `pattern` within `withinMs`. */
export async function failsClearly(what: Promise<unknown>, pattern: RegExp, withinMs: number): Promise<string> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`still pending after ${withinMs} ms`)), withinMs); });
  try {
    await Promise.race([what.then(() => { throw new Error('expected a failure, but it succeeded'); }), deadline]);
  } catch (err) {
    const message = (err as Error).message;
    assert.match(message, pattern);
    assert.ok(Date.now() - started < withinMs, `failed within ${withinMs} ms`);
    return message;
  } finally {
    clearTimeout(timer);
  }
  assert.fail('unreachable');
}
