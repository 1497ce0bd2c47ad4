/**
 * `strangler devstack kafka` as a real process: starts, serves kafkajs, stops on SIGTERM, keeps data across runs;
 * the TLS (and mutual TLS) and SASL flags.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import { kafkaConfigSchema } from '../../../migration-scripts/config-schema.ts';
import { createKafka, ensureTopics } from '../../../migration-scripts/kafka.ts';
import { REPO_ROOT, spawnBroker, tempDir, unique, type ChildBroker } from './support.ts';

const dir = tempDir('cli');
const running: ChildBroker[] = [];
after(async () => {
  for (const b of running) await b.stop();
  dir.remove();
});

test('strangler devstack kafka --port 0 --data-dir DIR serves, stops on SIGTERM with exit 0, and restarts with the data', async () => {
  const topic = unique('cli');
  const first = await spawnBroker(dir.path, ['--fsync', 'always', '--partitions', '2'], true);
  running.push(first);
  const kafka = new Kafka({ brokers: [first.address], logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  await producer.send({ topic, messages: Array.from({ length: 10 }, (_, i) => ({ key: `k${i}`, value: `v${i}` })) });
  await producer.disconnect();
  first.child.kill('SIGTERM');
  assert.equal(await first.exited, 0);

  const second = await spawnBroker(dir.path, [], true);
  running.push(second);
  const admin = new Kafka({ brokers: [second.address], logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  const offsets = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  assert.equal(offsets.length, 2, '--partitions applied to the auto-created topic');
  assert.equal(offsets.reduce((s, p) => s + Number(p.high), 0), 10);
});

test('bad options exit non-zero with a usage message; --help describes the options', () => {
  const bad = spawnSync(process.execPath, [join(REPO_ROOT, 'bin/strangler.js'), 'devstack', 'kafka', '--fsync', 'sometimes'], { encoding: 'utf8', cwd: REPO_ROOT });
  assert.equal(bad.status, 2, 'a usage error exits 2');
  assert.match(bad.stderr, /CLI_USAGE: devstack kafka: --fsync expects always, interval or never/);
  const help = spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'devstack/kafka/main.ts'), '--help'], { encoding: 'utf8', cwd: REPO_ROOT });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /--data-dir DIR/);
  assert.match(help.stdout, /--fsync POLICY/);
});

test('--tls-cert/--tls-key and --sasl-user/--sasl-mechanisms: a SASL_SSL broker that kafkajs (via createKafka) authenticates to', async () => {
  const tlsDir = join(REPO_ROOT, 'test/fixtures/kafka-tls');
  const broker = await spawnBroker(dir.path, [
    '--tls-cert', join(tlsDir, 'broker.crt'), '--tls-key', join(tlsDir, 'broker.key'),
    '--sasl-user', 'app:first:password', '--sasl-user', 'other:x', '--sasl-mechanisms', 'scram-sha-512,PLAIN',
  ], true);
  running.push(broker);
  const config = kafkaConfigSchema.parse({ brokers: [broker.address], ssl: { caFile: join(tlsDir, 'broker.crt') }, sasl: { mechanism: 'scram-sha-512', username: 'app', password: 'first:password' } });
  const admin = createKafka(config, 'cli-test').admin();
  await admin.connect();
  const topic = unique('cli-secured');
  assert.equal(await admin.createTopics({ topics: [{ topic }] }), true);
  assert.ok((await admin.listTopics()).includes(topic));
  await admin.disconnect();
  const scram256 = createKafka({ ...config, sasl: { mechanism: 'scram-sha-256', username: 'app', password: 'first:password' } }, 'cli-test-256').admin();
  await assert.rejects(scram256.connect(), /The broker does not support the requested SASL mechanism/);
  await scram256.disconnect();
});

test('--sasl-users-file FILE: the passwords stay off the command line that any local user can read (ps)', async () => {
  const file = join(dir.path, 'sasl-users');
  writeFileSync(file, '# dev broker users\napp:FILE-ONLY-secret:pw\n\nother:x\n', { mode: 0o600 });
  const broker = await spawnBroker(dir.path, ['--sasl-users-file', file, '--sasl-mechanisms', 'SCRAM-SHA-256'], true);
  running.push(broker);
  const cmdline = readFileSync(`/proc/${broker.child.pid}/cmdline`, 'utf8');
  assert.ok(cmdline.includes('--sasl-users-file') && !cmdline.includes('FILE-ONLY-secret'), cmdline);
  const config = kafkaConfigSchema.parse({ brokers: [broker.address], sasl: { mechanism: 'scram-sha-256', username: 'app', password: 'FILE-ONLY-secret:pw' } });
  const admin = createKafka(config, 'cli-users-file').admin();
  await admin.connect();
  assert.ok(Array.isArray(await admin.listTopics()));
  await admin.disconnect();

  const run = (args: string[]) => spawnSync(process.execPath, [join(REPO_ROOT, 'bin/strangler.js'), 'devstack', 'kafka', '--port', '0', ...args], { encoding: 'utf8', cwd: REPO_ROOT });
  const bad = join(dir.path, 'sasl-users-bad');
  writeFileSync(bad, 'app:ok\nno-colon-secretish\n');
  const badLine = run(['--sasl-users-file', bad]);
  assert.equal(badLine.status, 2);
  assert.match(badLine.stderr, /--sasl-users-file: .*sasl-users-bad line 2 is not NAME:PASSWORD/);
  assert.ok(!badLine.stderr.includes('secretish'));
  assert.match(run(['--sasl-users-file', join(dir.path, 'absent')]).stderr, /--sasl-users-file: cannot read ".*absent" \(ENOENT\)/);
});

test('bad TLS/SASL options are usage errors that do not echo the password', () => {
  const run = (args: string[]) => spawnSync(process.execPath, [join(REPO_ROOT, 'bin/strangler.js'), 'devstack', 'kafka', '--port', '0', ...args], { encoding: 'utf8', cwd: REPO_ROOT });
  const noKey = run(['--tls-cert', 'x.crt']);
  assert.equal(noKey.status, 2);
  assert.match(noKey.stderr, /--tls-cert and --tls-key go together/);
  const missing = run(['--tls-cert', 'missing.crt', '--tls-key', 'missing.key']);
  assert.match(missing.stderr, /--tls-cert: cannot read "missing.crt" \(ENOENT\)/);
  const noColon = run(['--sasl-user', 'justaname-secretish']);
  assert.match(noColon.stderr, /--sasl-user expects NAME:PASSWORD/);
  assert.ok(!noColon.stderr.includes('secretish'));
  const badMech = run(['--sasl-user', 'a:b', '--sasl-mechanisms', 'GSSAPI']);
  assert.match(badMech.stderr, /--sasl-mechanisms: unknown mechanism "GSSAPI"/);
  const help = run(['--help']);
  assert.match(help.stdout, /--sasl-user NAME:PASSWORD/);
  assert.match(help.stdout, /--tls-cert FILE/);
  assert.match(help.stdout, /--tls-client-ca FILE/);
});

test('--tls-client-ca FILE: a mutual-TLS broker that serves createKafka with certFile/keyFile; bad uses are clear errors', async () => {
  const tlsDir = join(REPO_ROOT, 'test/fixtures/kafka-tls');
  const tlsArgs = ['--tls-cert', join(tlsDir, 'broker.crt'), '--tls-key', join(tlsDir, 'broker.key')];
  const broker = await spawnBroker(dir.path, [...tlsArgs, '--tls-client-ca', join(tlsDir, 'client-ca.crt')], true);
  running.push(broker);
  const config = kafkaConfigSchema.parse({ brokers: [broker.address], ssl: { caFile: join(tlsDir, 'broker.crt'), certFile: join(tlsDir, 'client.crt'), keyFile: join(tlsDir, 'client.key') } });
  const kafka = createKafka(config, 'cli-mtls');
  const topic = unique('cli-mtls');
  await ensureTopics(kafka, [topic], 1);
  const admin = kafka.admin();
  await admin.connect();
  assert.ok((await admin.listTopics()).includes(topic));
  await admin.disconnect();

  const run = (args: string[]) => spawnSync(process.execPath, [join(REPO_ROOT, 'bin/strangler.js'), 'devstack', 'kafka', '--port', '0', ...args], { encoding: 'utf8', cwd: REPO_ROOT });
  const alone = run(['--tls-client-ca', join(tlsDir, 'client-ca.crt')]);
  assert.equal(alone.status, 2);
  assert.match(alone.stderr, /CLI_USAGE: devstack kafka: --tls-client-ca needs a TLS listener: pass --tls-cert and --tls-key too/);
  const missing = run([...tlsArgs, '--tls-client-ca', 'missing-ca.crt']);
  assert.match(missing.stderr, /--tls-client-ca: cannot read "missing-ca.crt" \(ENOENT\)/);
  const notACertificate = run([...tlsArgs, '--tls-client-ca', join(tlsDir, 'client.key')]);
  assert.equal(notACertificate.status, 1);
  assert.match(notACertificate.stderr, /KAFKA_DEV_BROKER_OPTIONS_INVALID: kafka dev broker: tls\.clientCa \(--tls-client-ca\) holds no "-----BEGIN CERTIFICATE-----" block/);
  assert.ok(!notACertificate.stderr.includes('PRIVATE KEY'), 'the file\'s content is not echoed');
});
