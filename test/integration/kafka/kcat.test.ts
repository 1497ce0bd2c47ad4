/**
 * librdkafka 2.0.2 through Debian's kcat against the dev broker: -L, -P, -C -o beginning -e, -G, compression
 * pass-through, and both directions with kafkajs. Without kcat on PATH these tests are reported as skipped with
 * the reason; under CI (CI=true) a missing kcat is a failure.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import type { KafkaBroker } from '../../../devstack/kafka/index.ts';
import { kcat, kcatSkip, startTestBroker, tempDir, unique, waitFor } from './support.ts';

const skip = kcatSkip('the librdkafka tests');

const GROUP_TUNING = ['-X', 'session.timeout.ms=6000', '-X', 'heartbeat.interval.ms=500', '-X', 'auto.offset.reset=earliest'];

describe('kcat (librdkafka) against the dev broker', { skip }, () => {
  let broker: KafkaBroker;
  let kafka: Kafka;
  const dir = tempDir('kcat');
  before(async () => {
    broker = await startTestBroker({ dataDir: dir.path, defaultPartitions: 2 });
    kafka = new Kafka({ brokers: [broker.address], clientId: 'kcat-test', logLevel: logLevel.NOTHING });
  });
  after(async () => {
    await broker?.close();
    dir.remove();
  });

  test('-L lists the broker as controller and the topics; librdkafka enables MsgVer2, group, OffsetTime and ZSTD features', async () => {
    const topic = unique('listed');
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 3 }] });
    await admin.disconnect();
    const run = await kcat(['-b', broker.address, '-L', '-d', 'feature']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, new RegExp(`broker 0 at ${broker.address.replace(/\./g, '\\.')} \\(controller\\)`));
    assert.match(run.stdout, new RegExp(`topic "${topic}" with 3 partitions`));
    for (const feature of ['MsgVer2', 'BrokerBalancedConsumer', 'BrokerGroupCoordinator', 'OffsetTime', 'ZSTD']) {
      assert.match(run.stderr, new RegExp(`Enabling feature ${feature}\\b`), feature);
    }
  });

  test('-P with keys and headers, then -C -o beginning -e prints exactly that and exits', async () => {
    const topic = unique('pc');
    const produced = await kcat(['-b', broker.address, '-P', '-t', topic, '-K:', '-H', 'h=v'], 'k1:one\nk2:two\nk1:three\n');
    assert.equal(produced.code, 0, produced.stderr);
    const consumed = await kcat(['-b', broker.address, '-C', '-t', topic, '-o', 'beginning', '-e', '-q', '-f', '%k %s %h\n']);
    assert.equal(consumed.code, 0, consumed.stderr);
    assert.deepEqual(consumed.stdout.trim().split('\n').sort(), ['k1 one h=v', 'k1 three h=v', 'k2 two h=v']);
  });

  test('compressed batches (gzip, snappy, lz4, zstd) are stored as received and read back by librdkafka', async () => {
    for (const codec of ['gzip', 'snappy', 'lz4', 'zstd']) {
      const topic = unique(`z-${codec}`);
      const lines = Array.from({ length: 50 }, (_, i) => `${codec}-${i}-${'x'.repeat(100)}`);
      const produced = await kcat(['-b', broker.address, '-P', '-t', topic, '-p', '0', '-z', codec], `${lines.join('\n')}\n`);
      assert.equal(produced.code, 0, produced.stderr);
      const consumed = await kcat(['-b', broker.address, '-C', '-t', topic, '-o', 'beginning', '-e', '-q']);
      assert.equal(consumed.code, 0, consumed.stderr);
      assert.deepEqual(consumed.stdout.trim().split('\n'), lines, codec);
    }
  });

  test('kafkajs produce → kcat consume, and kcat produce → kafkajs consume', async () => {
    const topic = unique('cross');
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    await producer.send({ topic, messages: Array.from({ length: 20 }, (_, i) => ({ key: `k${i}`, value: `from-kafkajs-${i}` })) });
    await producer.disconnect();
    const consumed = await kcat(['-b', broker.address, '-C', '-t', topic, '-o', 'beginning', '-e', '-q', '-f', '%s\n']);
    assert.equal(consumed.code, 0, consumed.stderr);
    assert.deepEqual(consumed.stdout.trim().split('\n').sort(), Array.from({ length: 20 }, (_, i) => `from-kafkajs-${i}`).sort());

    const produced = await kcat(['-b', broker.address, '-P', '-t', topic, '-K:'], Array.from({ length: 10 }, (_, i) => `kk${i}:from-kcat-${i}`).join('\n') + '\n');
    assert.equal(produced.code, 0, produced.stderr);
    const seen: string[] = [];
    const consumer = kafka.consumer({ groupId: unique('g'), sessionTimeout: 3000, heartbeatInterval: 300, maxWaitTimeInMs: 100 });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({ eachMessage: async ({ message }) => { seen.push(message.value!.toString()); } });
    try {
      await waitFor('30 messages in kafkajs', () => seen.length >= 30);
    } finally {
      await consumer.disconnect();
    }
    assert.equal(seen.filter((v) => v.startsWith('from-kcat-')).length, 10);
    assert.equal(seen.length, 30);
  });

  test('by timestamp (kcat -o s@<ts>, kafkajs fetchTopicOffsetsByTimestamp) starts at the record, not at the start of its batch', async () => {
    const topic = unique('by-time');
    const t0 = Date.now() - 60_000;
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    // One send = one batch holding three timestamps (e.g. change events stamped with their source commit time).
    await producer.send({ topic, messages: [0, 1000, 2000].map((d) => ({ partition: 0, value: `at+${d}`, timestamp: String(t0 + d) })) });
    await producer.disconnect();
    const consumed = await kcat(['-b', broker.address, '-C', '-t', topic, '-p', '0', '-o', `s@${t0 + 1000}`, '-e', '-q', '-f', '%o %s\n']);
    assert.equal(consumed.code, 0, consumed.stderr);
    assert.deepEqual(consumed.stdout.trim().split('\n'), ['1 at+1000', '2 at+2000']);
    const admin = kafka.admin();
    await admin.connect();
    try {
      const byTime = await admin.fetchTopicOffsetsByTimestamp(topic, t0 + 500);
      assert.equal(byTime.find((p) => p.partition === 0)!.offset, '1');
    } finally {
      await admin.disconnect();
    }
  });

  test('message.timestamp.type=LogAppendTime: kafkajs and kcat both read the broker\'s append time; a bad value is refused', async () => {
    const topic = unique('log-append');
    const admin = kafka.admin();
    await admin.connect();
    try {
      await admin.createTopics({ topics: [{ topic, numPartitions: 1, configEntries: [{ name: 'message.timestamp.type', value: 'LogAppendTime' }] }] });
      await assert.rejects(admin.createTopics({ topics: [{ topic: unique('bad-type'), configEntries: [{ name: 'message.timestamp.type', value: 'AppendTime' }] }] }),
        (err: Error & { errors?: { type?: string }[] }) => err.errors?.[0]?.type === 'INVALID_CONFIG');
    } finally {
      await admin.disconnect();
    }
    const hourAgo = Date.now() - 3_600_000;
    const before = Date.now();
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    await producer.send({ topic, messages: [{ value: 'from-kafkajs', timestamp: String(hourAgo) }] });
    await producer.disconnect();
    assert.equal((await kcat(['-b', broker.address, '-P', '-t', topic], 'from-kcat\n')).code, 0);
    const consumed = await kcat(['-b', broker.address, '-C', '-t', topic, '-o', 'beginning', '-e', '-q', '-f', '%T %s\n']);
    assert.equal(consumed.code, 0, consumed.stderr);
    const lines = consumed.stdout.trim().split('\n').map((l) => l.split(' '));
    assert.deepEqual(lines.map((l) => l[1]), ['from-kafkajs', 'from-kcat']);
    for (const [ts] of lines) assert.ok(Number(ts) >= before && Number(ts) <= Date.now(), `kcat sees the append time, got ${ts}`);
    const consumer = kafka.consumer({ groupId: unique('g'), sessionTimeout: 3000, heartbeatInterval: 300, maxWaitTimeInMs: 100 });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const stamps: number[] = [];
    await consumer.run({ eachMessage: async ({ message }) => { stamps.push(Number(message.timestamp)); } });
    try {
      await waitFor('2 messages in kafkajs', () => stamps.length >= 2);
    } finally {
      await consumer.disconnect();
    }
    assert.ok(stamps.every((ts) => ts >= before), `kafkajs sees the append time, got ${stamps.join(', ')}`);
  });

  test('static membership (group.instance.id): a restarted member gets its partitions back at once, the others do not rebalance; a duplicate instance is fenced', async () => {
    const topic = unique('static');
    const group = unique('static-group');
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 4 }] });
    await admin.disconnect();
    // A static member's session is typically long (a restart should not rebalance): 30 s here, far above the waits below.
    const member = (instance: string): { child: ChildProcess; stderr: () => string } => {
      const child = spawn('kcat', ['-b', broker.address, '-G', group, '-X', 'session.timeout.ms=30000', '-X', 'heartbeat.interval.ms=500', '-X', `group.instance.id=${instance}`, topic], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
      children.push(child);
      return { child, stderr: () => err };
    };
    const children: ChildProcess[] = [];
    try {
      const a = member('i-a');
      await waitFor('A assigned', () => /assigned: /.test(a.stderr()));
      const b = member('i-b');
      await waitFor('B assigned', () => /assigned: /.test(b.stderr()));
      await waitFor('A rebalanced to make room for B', () => (a.stderr().match(/assigned: /g) ?? []).length === 2);
      const bPartitions = /assigned: (.*)/.exec(b.stderr())![1];
      b.child.kill('SIGKILL'); // no LeaveGroup
      const b2 = member('i-b');
      await waitFor('the restarted B assigned', () => /assigned: /.test(b2.stderr()), 10_000);
      assert.equal(/assigned: (.*)/.exec(b2.stderr())![1], bPartitions, 'same partitions as before the restart');
      assert.equal((a.stderr().match(/revoked: /g) ?? []).length, 1, 'A saw only the rebalance for B\'s first join');
      const b3 = member('i-b');
      await waitFor('the older process with the same instance id fenced', () => /fenced/i.test(b2.stderr()), 10_000);
      void b3;
    } finally {
      for (const c of children) c.kill('SIGKILL');
    }
  });

  test('a kcat member cannot join a kafkajs group (no common assignor): INCONSISTENT_GROUP_PROTOCOL, as on Kafka', async () => {
    const topic = unique('mixed');
    const group = unique('mixed-group');
    const consumer = kafka.consumer({ groupId: group, sessionTimeout: 3000, heartbeatInterval: 300, maxWaitTimeInMs: 100 });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const joined = new Promise((r) => consumer.on(consumer.events.GROUP_JOIN, r));
    await consumer.run({ eachMessage: async () => {} });
    try {
      await joined;
      const run = await kcat(['-b', broker.address, '-G', group, ...GROUP_TUNING, topic], undefined, 10_000);
      assert.notEqual(run.code, 0);
      assert.match(run.stderr, /Inconsistent group protocol/);
    } finally {
      await consumer.disconnect();
    }
  });

  test('IPv6: -b [::1]:port produces and consumes against a broker bound to ::1', async () => {
    const v6 = await startTestBroker({ host: '::1' });
    try {
      const topic = unique('v6');
      assert.equal((await kcat(['-b', v6.address, '-P', '-t', topic], 'over-ipv6\n')).code, 0);
      const consumed = await kcat(['-b', v6.address, '-C', '-t', topic, '-o', 'beginning', '-e', '-q']);
      assert.equal(consumed.code, 0, consumed.stderr);
      assert.equal(consumed.stdout.trim(), 'over-ipv6');
    } finally {
      await v6.close();
    }
  });

  test('-G consumes as a group, commits on exit, and a second run resumes after the commit', async () => {
    const topic = unique('grp');
    const group = unique('kcat-group');
    assert.equal((await kcat(['-b', broker.address, '-P', '-t', topic, '-K:'], 'a:1\nb:2\nc:3\nd:4\n')).code, 0);
    const first = await kcat(['-b', broker.address, '-G', group, ...GROUP_TUNING, '-e', '-q', '-f', '%s\n', topic]);
    assert.equal(first.code, 0, first.stderr);
    assert.deepEqual(first.stdout.trim().split('\n').sort(), ['1', '2', '3', '4']);
    const admin = kafka.admin();
    await admin.connect();
    const offsets = await admin.fetchOffsets({ groupId: group, topics: [topic] });
    await admin.disconnect();
    assert.equal(offsets[0]!.partitions.reduce((s, p) => s + Math.max(0, Number(p.offset)), 0), 4, 'kcat committed on exit');
    assert.equal((await kcat(['-b', broker.address, '-P', '-t', topic, '-K:'], 'e:5\nf:6\n')).code, 0);
    const second = await kcat(['-b', broker.address, '-G', group, ...GROUP_TUNING, '-e', '-q', '-f', '%s\n', topic]);
    assert.equal(second.code, 0, second.stderr);
    assert.deepEqual(second.stdout.trim().split('\n').sort(), ['5', '6']);
  });
});
