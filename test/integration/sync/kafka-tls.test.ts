/**
 * The sync processes themselves (`strangler sync relay` and `sync apply` as child processes, real PostgreSQL and a
 * TLS dev broker) stop at once with KAFKA_TLS_CERTIFICATE_REJECTED naming kafka.ssl.caFile when the CA file is wrong
 * (other-ca.crt), rather than retrying: kafkajs alone would retry ~9 s, and the relay's and apply's start-up retry
 * loops would go on for two minutes. Likewise a SASL login the broker refuses: KAFKA_SASL_AUTHENTICATION_FAILED.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Writable } from 'node:stream';
import { startKafkaBroker, type KafkaBroker } from '../../../devstack/kafka/index.ts';
import { KAFKA_LOG } from '../../../devstack/kafka/log-events.ts';
import { createLogger } from '../../../common/logger.ts';
import { REPO_ROOT, SyncStack, waitFor } from './stack.ts';

const TLS_DIR = join(REPO_ROOT, 'test/fixtures/kafka-tls');
const stack = new SyncStack();
let broker: KafkaBroker;
/** A dev broker that requires SASL (no TLS), and a pair whose config gives it a wrong password. */
let saslBroker: KafkaBroker;
const SASL_PASSWORD = 'the right password';
let file = '';
let saslFile = '';
const lines: string[] = [];
const refusedHandshakes = (): number => lines.filter((l) => (JSON.parse(l) as { msg: string }).msg === KAFKA_LOG.tlsHandshakeFailed).length;

before(async () => {
  await stack.start();
  const destination = new Writable({ write(chunk: Buffer, _enc, done) { lines.push(chunk.toString()); done(); } });
  broker = await startKafkaBroker({
    host: '127.0.0.1', port: 0, logger: createLogger({ level: 'info', destination }),
    tls: { cert: readFileSync(join(TLS_DIR, 'broker.crt')), key: readFileSync(join(TLS_DIR, 'broker.key')) },
  });
  ({ file } = await stack.pair('tlsfail'));
  const doc = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  doc.kafka = { brokers: [broker.address], clientId: 'tlsfail', ssl: { caFile: join(TLS_DIR, 'other-ca.crt') } };
  writeFileSync(file, JSON.stringify(doc));
  saslBroker = await startKafkaBroker({ host: '127.0.0.1', port: 0, logger: createLogger({ level: 'silent' }), sasl: { users: { strangler: SASL_PASSWORD } } });
  ({ file: saslFile } = await stack.pair('saslfail'));
  const saslDoc = JSON.parse(readFileSync(saslFile, 'utf8')) as Record<string, unknown>;
  saslDoc.kafka = { brokers: [saslBroker.address], clientId: 'saslfail', sasl: { mechanism: 'scram-sha-256', username: 'strangler', password: 'not the password' } };
  writeFileSync(saslFile, JSON.stringify(saslDoc));
});
after(async () => {
  await saslBroker?.close();
  await broker?.close();
  await stack.stop();
});

/** Runs `strangler sync ARGS --config FILE` to its end (killed after 60 s): exit code, output, wall time. */
function sync(args: string[], config = file): Promise<{ code: number | null; output: string; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'cli/main.ts'), 'sync', ...args, '--config', config], {
      cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, STRANGLER_LOG_LEVEL: 'warn' },
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
    const kill = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('exit', (code) => { clearTimeout(kill); resolve({ code, output, ms: Date.now() - started }); });
  });
}

test('relay and apply with a kafka.ssl.caFile that did not sign the broker exit 1 at once, naming the field and the TLS code', async () => {
  assert.equal((await sync(['capture', 'install'])).code, 0);
  for (const args of [['relay', '--side', 'legacy'], ['apply', '--direction', 'legacy-to-service']]) {
    const before = refusedHandshakes();
    const run = await sync(args);
    assert.equal(run.code, 1, run.output);
    assert.match(run.output, /KAFKA_TLS_CERTIFICATE_REJECTED: kafka\.ssl\.caFile: the broker's certificate is not signed by a CA the client trusts \(broker 127\.0\.0\.1:\d+, TLS DEPTH_ZERO_SELF_SIGNED_CERT: self-signed certificate; kafka\.ssl\.caFile is .*other-ca\.crt\)/);
    // One TLS attempt per process: kafkajs's retries would make nine, and the start-up retry loops many more.
    await waitFor('the broker to log the refused handshake', () => refusedHandshakes() > before, 5_000);
    assert.equal(refusedHandshakes() - before, 1, `${args[0]}: one TLS attempt`);
    // Bound only against the two-minute start-up retry loop: process start-up (tsx) varies with load.
    assert.ok(run.ms < 30_000, `${args[0]} took ${run.ms} ms`);
  }
});

test('relay and apply whose SASL login the broker refuses exit 1 at once with KAFKA_SASL_AUTHENTICATION_FAILED naming user, mechanism and fields; no stack trace, no password', async () => {
  assert.equal((await sync(['capture', 'install'], saslFile)).code, 0);
  for (const args of [['relay', '--side', 'legacy'], ['apply', '--direction', 'legacy-to-service']]) {
    const run = await sync(args, saslFile);
    assert.equal(run.code, 1, run.output);
    assert.match(run.output, /^strangler: KAFKA_SASL_AUTHENTICATION_FAILED: the Kafka broker refused the SASL login of user "strangler" with mechanism scram-sha-256 \(kafka\.sasl\.username, kafka\.sasl\.password, kafka\.sasl\.mechanism\): SASL SCRAM SHA256 authentication failed: Authentication failed.*not retried$/m);
    assert.doesNotMatch(run.output, /^\s+at /m, 'no stack trace');
    assert.ok(!run.output.includes('not the password') && !run.output.includes(SASL_PASSWORD), 'no password');
    assert.ok(run.ms < 30_000, `${args[0]} took ${run.ms} ms`);
  }
});
