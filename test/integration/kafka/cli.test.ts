/** `strangler devstack kafka` as a real process: starts, serves kafkajs, stops on SIGTERM, keeps data across runs. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
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
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /CLI_USAGE: devstack kafka: --fsync expects always, interval or never/);
  const help = spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'devstack/kafka/main.ts'), '--help'], { encoding: 'utf8', cwd: REPO_ROOT });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /--data-dir DIR/);
  assert.match(help.stdout, /--fsync POLICY/);
});
