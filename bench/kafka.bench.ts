/**
 * Dev Kafka broker throughput: a kafkajs producer (1 KB messages, batches of 100, acks=-1) and a kafkajs group
 * consumer against the broker running in its own process, so its CPU and memory are measured apart from the
 * clients. Reports produced and end-to-end (produced → consumed) messages/s, the ratio to the 30,000 msg/s target,
 * broker CPU time and peak RSS.
 */
import { readFileSync } from 'node:fs';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import { spawnBroker, tempDir } from '../test/integration/kafka/support.ts';
import type { Bench } from './run.ts';

const MESSAGES = Number(process.env.KAFKA_BENCH_MESSAGES ?? 200_000);
const BATCH = 100;
const IN_FLIGHT = 4;
const PARTITIONS = 4;
const TARGET = 30_000;

/** utime + stime of a process in ms (Linux /proc). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // fields 14, 15 of stat; USER_HZ = 100
}

function rssMb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith(field))!;
  return Number(line.split(/\s+/)[1]) / 1024;
}

export default {
  name: 'kafka broker',
  async run() {
    const dir = tempDir('kafka-bench');
    const broker = await spawnBroker(dir.path);
    const pid = broker.child.pid!;
    const kafka = new Kafka({ brokers: [broker.address], clientId: 'bench', logLevel: logLevel.NOTHING });
    try {
      const admin = kafka.admin();
      await admin.connect();
      await admin.createTopics({ topics: [{ topic: 'bench', numPartitions: PARTITIONS }] });
      await admin.disconnect();

      const value = Buffer.alloc(1024, 'x');
      const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
      const consumer = kafka.consumer({ groupId: 'bench', maxWaitTimeInMs: 100, maxBytes: 10 * 1024 * 1024 });
      await producer.connect();
      await consumer.connect();
      await consumer.subscribe({ topic: 'bench', fromBeginning: true });
      let consumed = 0;
      let resolveDone: () => void = () => {};
      const allConsumed = new Promise<void>((r) => { resolveDone = r; });
      const joined = new Promise<void>((r) => consumer.on(consumer.events.GROUP_JOIN, () => r()));
      await consumer.run({
        eachBatch: async ({ batch }) => {
          consumed += batch.messages.length;
          if (consumed >= MESSAGES) resolveDone();
        },
      });
      await joined;

      const cpuBefore = cpuMs(pid);
      const started = performance.now();
      let sent = 0;
      let seq = 0;
      const worker = async (): Promise<void> => {
        while (sent < MESSAGES) {
          sent += BATCH;
          const messages = Array.from({ length: BATCH }, () => ({ key: String(seq++ % 1000), value }));
          await producer.send({ topic: 'bench', messages, acks: -1 });
        }
      };
      await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
      const producedMs = performance.now() - started;
      await allConsumed;
      const endToEndMs = performance.now() - started;
      const brokerCpuMs = cpuMs(pid) - cpuBefore;
      const rss = rssMb(pid, 'VmRSS');
      const peak = rssMb(pid, 'VmHWM');
      await consumer.disconnect();
      await producer.disconnect();

      const producedRate = (MESSAGES / producedMs) * 1000;
      const e2eRate = (MESSAGES / endToEndMs) * 1000;
      console.table([
        { metric: 'messages (1 KB, batches of 100, acks=-1)', value: MESSAGES },
        { metric: 'produced msg/s', value: Math.round(producedRate) },
        { metric: 'end-to-end msg/s (produced → consumed)', value: Math.round(e2eRate) },
        { metric: `end-to-end vs target ${TARGET} msg/s`, value: `${(e2eRate / TARGET).toFixed(2)}x` },
        { metric: 'end-to-end MB/s', value: ((e2eRate * 1024) / 1e6).toFixed(1) },
        { metric: 'broker CPU (ms) during run', value: Math.round(brokerCpuMs) },
        { metric: 'broker CPU (% of one core)', value: `${Math.round((brokerCpuMs / endToEndMs) * 100)}%` },
        { metric: 'broker RSS after run (MB)', value: rss.toFixed(0) },
        { metric: 'broker peak RSS (MB)', value: peak.toFixed(0) },
      ]);
    } finally {
      await broker.stop();
      dir.remove();
    }
  },
} satisfies Bench;
