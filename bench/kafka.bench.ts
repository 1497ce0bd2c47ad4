/**
 * Dev Kafka broker throughput: a kafkajs producer (1 KB messages, batches of 100, acks=-1) and a kafkajs group
 * consumer against the broker running in its own process, so its CPU and memory are measured apart from the
 * clients. Reports produced and end-to-end (produced → consumed) messages/s, the ratio to the 30,000 msg/s target,
 * broker CPU time and peak RSS.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
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

interface Result { producedRate: number; e2eRate: number; brokerCpuMs: number; endToEndMs: number; rss: number; peak: number }

async function measure(fsync: string): Promise<Result> {
  const dir = tempDir('kafka-bench');
  const broker = await spawnBroker(dir.path, ['--fsync', fsync]);
  const pid = broker.child.pid!;
  const kafka = new Kafka({ brokers: [broker.address], clientId: 'bench', logLevel: logLevel.NOTHING });
  let consumerPid: number | undefined;
  try {
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: 'bench', numPartitions: PARTITIONS }] });
    await admin.disconnect();

    const value = Buffer.alloc(1024, 'x');
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    // The consumer runs in its own process (as it would in a deployment), so producer and consumer do not
    // share one event loop; it prints "joined" once it owns the partitions and "done" after MESSAGES messages.
    const consumer = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url)], {
      env: { ...process.env, KAFKA_BENCH_ROLE: 'consumer', KAFKA_BENCH_BROKERS: broker.address },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    consumerPid = consumer.pid;
    const consumerExit = new Promise((r) => consumer.once('exit', r));
    const lines = createInterface({ input: consumer.stdout! });
    const nextLine = (expected: string): Promise<void> => new Promise((resolve, reject) => {
      const onLine = (line: string): void => { if (line === expected) { lines.off('line', onLine); resolve(); } };
      lines.on('line', onLine);
      void consumerExit.then(() => reject(new Error(`bench consumer exited before "${expected}"`)));
    });
    await nextLine('joined');
    const allConsumed = nextLine('done');
    allConsumed.catch(() => {}); // observed below; this only keeps an early exit from being an unhandled rejection

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
    const result = {
      producedRate: (MESSAGES / producedMs) * 1000,
      e2eRate: (MESSAGES / endToEndMs) * 1000,
      brokerCpuMs: cpuMs(pid) - cpuBefore,
      endToEndMs,
      rss: rssMb(pid, 'VmRSS'),
      peak: rssMb(pid, 'VmHWM'),
    };
    await producer.disconnect();
    await consumerExit;
    return result;
  } finally {
    if (consumerPid !== undefined) try { process.kill(consumerPid, 'SIGKILL'); } catch { /* already exited */ }
    await broker.stop();
    dir.remove();
  }
}

export default {
  name: 'kafka broker',
  async run() {
    const loadAtStart = loadavg();
    const rows: Record<string, Record<string, string | number>> = {};
    for (const fsync of ['interval', 'always']) {
      const r = await measure(fsync);
      rows[`fsync=${fsync}`] = {
        'produced msg/s': Math.round(r.producedRate),
        'end-to-end msg/s': Math.round(r.e2eRate),
        [`vs ${TARGET} target`]: `${(r.e2eRate / TARGET).toFixed(2)}x`,
        'end-to-end MB/s': Number(((r.e2eRate * 1024) / 1e6).toFixed(1)),
        'broker CPU ms': Math.round(r.brokerCpuMs),
        'broker CPU % of a core': Math.round((r.brokerCpuMs / r.endToEndMs) * 100),
        'broker RSS MB': Math.round(r.rss),
        'broker peak RSS MB': Math.round(r.peak),
      };
    }
    console.log(`load average before: ${loadAtStart.map((l) => l.toFixed(1)).join(' ')} (2 cores; other work on the machine lowers these figures)`);
    console.log(`${MESSAGES} messages of 1 KB, batches of ${BATCH}, acks=-1, ${IN_FLIGHT} sends in flight, ${PARTITIONS} partitions; one kafkajs group consumer in its own process`);
    console.table(rows);
  },
} satisfies Bench;

/** Consumer role: run when this file is started with KAFKA_BENCH_ROLE=consumer (see measure()). */
async function consumerRole(): Promise<void> {
  const kafka = new Kafka({ brokers: [process.env.KAFKA_BENCH_BROKERS!], clientId: 'bench-consumer', logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: 'bench', maxWaitTimeInMs: 100, maxBytes: 10 * 1024 * 1024 });
  await consumer.connect();
  await consumer.subscribe({ topic: 'bench', fromBeginning: true });
  consumer.on(consumer.events.GROUP_JOIN, () => process.stdout.write('joined\n'));
  let consumed = 0;
  let finish: () => void = () => {};
  const finished = new Promise<void>((r) => { finish = r; });
  await consumer.run({
    eachBatch: async ({ batch }) => {
      consumed += batch.messages.length;
      if (consumed >= MESSAGES) finish();
    },
  });
  await finished;
  process.stdout.write('done\n');
  await consumer.disconnect();
}

if (process.env.KAFKA_BENCH_ROLE === 'consumer') await consumerRole();
