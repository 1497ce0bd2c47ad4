/**
 * Fetch v4–11 with long-poll. Response entries mirror the request's (kafkajs repeats a topic in several entries).
 * Records are whole stored batches from the one containing fetch_offset; the first batch of the first partition
 * with data is always included even if over the limits (KIP-74). With fewer than min_bytes available the request
 * parks until an append to a requested partition, a topic deletion, broker close or max_wait_ms; as on Kafka,
 * min_bytes ≤ 0 or a request naming no partition is answered at once.
 */
import { KafkaError } from '../protocol/error-codes.ts';
import { Writer } from '../protocol/writer.ts';
import type { BrokerState, Handler } from '../server/context.ts';

interface PartitionRequest { partition: number; fetchOffset: number; maxBytes: number }
interface TopicRequest { topic: string; partitions: PartitionRequest[] }

interface PartitionResponse { partition: number; error: number; hw: number; logStart: number; records: Buffer[] }

/** Bytes available for the request, or -1 if any partition answers with an error (answer at once). */
function available(broker: BrokerState, topics: readonly TopicRequest[]): number {
  let total = 0;
  for (const t of topics) {
    const topic = broker.topics.get(t.topic);
    for (const p of t.partitions) {
      const log = topic?.partitions[p.partition];
      if (!log || p.fetchOffset > log.highWatermark || p.fetchOffset < log.logStartOffset) return -1;
      total += log.bytesFrom(p.fetchOffset);
    }
  }
  return total;
}

async function waitForData(broker: BrokerState, topics: readonly TopicRequest[], ms: number): Promise<void> {
  await new Promise<void>((resolve) => {
    const unsubscribe: (() => void)[] = [];
    const done = (): void => {
      for (const u of unsubscribe) u();
      timer.cancel();
      broker.onClose.delete(done);
      resolve();
    };
    for (const t of topics) {
      const topic = broker.topics.get(t.topic);
      for (const p of t.partitions) {
        const log = topic?.partitions[p.partition];
        if (log) unsubscribe.push(log.onAppend(done));
      }
    }
    broker.onClose.add(done);
    const timer = broker.clock.setTimeout(done, ms);
  });
}

function collect(broker: BrokerState, topics: readonly TopicRequest[], maxBytes: number): PartitionResponse[][] {
  let total = 0;
  return topics.map((t) => {
    const topic = broker.topics.get(t.topic);
    return t.partitions.map((p): PartitionResponse => {
      const log = topic?.partitions[p.partition];
      if (!log) return { partition: p.partition, error: KafkaError.UNKNOWN_TOPIC_OR_PARTITION, hw: -1, logStart: -1, records: [] };
      const base = { partition: p.partition, hw: log.highWatermark, logStart: log.logStartOffset };
      const limit = Math.max(0, Math.min(p.maxBytes, maxBytes - total));
      const read = log.read(p.fetchOffset, limit, total === 0);
      if (read.kind === 'out-of-range') return { ...base, error: KafkaError.OFFSET_OUT_OF_RANGE, records: [] };
      total += read.bytes;
      return { ...base, error: 0, records: read.batches };
    });
  });
}

export const handleFetch: Handler = async (broker, header, r) => {
  const v = header.apiVersion;
  r.int32(); // replica_id
  const maxWaitMs = r.int32();
  const minBytes = r.int32();
  const maxBytes = r.int32();
  r.int8(); // isolation_level: no transactions, so read_committed = read_uncommitted
  if (v >= 7) { r.int32(); r.int32(); } // session id/epoch: fetch sessions are not supported; we answer session 0
  const topics: TopicRequest[] = r.array((t) => ({
    topic: t.string(),
    partitions: t.array((p) => {
      const partition = p.int32();
      if (v >= 9) p.int32(); // current_leader_epoch
      const fetchOffset = p.int64n();
      if (v >= 5) p.int64(); // log_start_offset (followers only)
      return { partition, fetchOffset, maxBytes: p.int32() };
    }),
  }));
  if (v >= 7) r.array((f) => { f.string(); f.array((x) => x.int32()); });
  if (v >= 11) r.string(); // rack_id

  const partitionCount = topics.reduce((n, t) => n + t.partitions.length, 0);
  const deadline = broker.clock.now() + maxWaitMs;
  for (;;) {
    const bytes = available(broker, topics);
    if (partitionCount === 0 || bytes < 0 || bytes >= minBytes || broker.closed) break;
    const left = deadline - broker.clock.now();
    if (left <= 0) break;
    await waitForData(broker, topics, left);
  }
  if (broker.closed) return null;

  const results = collect(broker, topics, maxBytes);
  const w = new Writer(256);
  w.int32(0);
  if (v >= 7) w.int16(0).int32(0);
  w.int32(topics.length);
  topics.forEach((t, i) => {
    w.string(t.topic);
    w.array(results[i]!, (w, p) => {
      w.int32(p.partition).int16(p.error).int64(p.hw).int64(p.hw);
      if (v >= 5) w.int64(p.logStart);
      w.int32(0); // aborted transactions: none
      if (v >= 11) w.int32(-1); // preferred_read_replica: any other value redirects the client
      w.bytesChunks(p.records);
    });
  });
  return w;
};
