/**
 * kill -9 of the broker process mid-stream: every message acknowledged with acks=-1 and every committed offset
 * is there after a restart on the same data dir, exactly once.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, test } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { commitOffsets } from './raw-client.ts';
import { REPO_ROOT, spawnBroker, tempDir, unique, waitFor, type ChildBroker } from './support.ts';

const dir = tempDir('crash');
const stops: (() => Promise<void>)[] = [];
after(async () => {
  for (const s of stops.reverse()) await s().catch(() => {});
  dir.remove();
});

function kafkaAt(address: string): Kafka {
  return new Kafka({ brokers: [address], clientId: 'crash-test', logLevel: logLevel.NOTHING, retry: { retries: 3, initialRetryTime: 100 } });
}

test('kill -9 mid-stream loses no acknowledged message and duplicates none; committed offsets survive', async () => {
  const topic = unique('crash');
  const groupId = unique('crash-group');
  let broker: ChildBroker = await spawnBroker(dir.path);
  stops.push(() => broker.stop());

  const admin = kafkaAt(broker.address).admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }] });

  const producer = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'test/integration/kafka/fixtures/acks-producer.ts'), broker.address, topic], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const producerExit = new Promise((r) => producer.once('exit', r));
  stops.push(async () => { producer.kill('SIGKILL'); await producerExit; });
  const acked = new Set<string>();
  createInterface({ input: producer.stdout! }).on('line', (line) => {
    const { from, to } = JSON.parse(line) as { from: number; to: number };
    for (let i = from; i < to; i++) acked.add(`m${i}`);
  });

  await admin.disconnect();
  await waitFor('a first acknowledged send', () => acked.size > 0, 30_000);
  // Committed mid-stream, as admin.setOffsets would (negative offsets are stored as given).
  assert.deepEqual(await commitOffsets(broker.port, groupId, topic, [{ partition: 0, offset: 7 }, { partition: 1, offset: -2 }]), [0, 0]);
  await waitFor('a stream of acknowledged sends', () => acked.size >= 2000, 30_000);
  broker.child.kill('SIGKILL');
  await broker.exited;
  await producerExit; // the producer exits on its first failed send
  const ackedAtKill = acked.size;

  broker = await spawnBroker(dir.path);
  const kafka = kafkaAt(broker.address);
  const admin2 = kafka.admin();
  await admin2.connect();
  stops.push(() => admin2.disconnect());
  const committed = await admin2.fetchOffsets({ groupId, topics: [topic] });
  assert.deepEqual(committed[0]!.partitions.map((p) => [p.partition, p.offset]).sort(), [[0, '7'], [1, '-2'], [2, '-1']]);
  const high = await admin2.fetchTopicOffsets(topic);
  const total = high.reduce((s, p) => s + Number(p.high), 0);
  assert.ok(total >= ackedAtKill, `stored ${total} ≥ acknowledged ${ackedAtKill}`);

  const values: string[] = [];
  const consumer = kafka.consumer({ groupId: unique('verify'), sessionTimeout: 3000, heartbeatInterval: 300, maxWaitTimeInMs: 100 });
  stops.push(() => consumer.disconnect());
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({ eachBatch: async ({ batch }) => { for (const m of batch.messages) values.push(m.value!.toString()); } });
  await waitFor('every stored message read back', () => values.length >= total, 30_000);
  await consumer.disconnect();
  assert.equal(values.length, total);
  assert.equal(new Set(values).size, values.length, 'no message stored twice');
  const stored = new Set(values);
  const missing = [...acked].filter((v) => !stored.has(v));
  assert.deepEqual(missing, [], 'every acknowledged message survived kill -9');
});
