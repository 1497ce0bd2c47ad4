/** ListOffsets v1–3: −2 → log start, −1 → high watermark (= last stable offset), ts ≥ 0 → first record at or after ts (and its timestamp). */
import { KafkaError } from '../protocol/error-codes.ts';
import { Writer } from '../protocol/writer.ts';
import type { Handler } from '../server/context.ts';

export const handleListOffsets: Handler = (broker, header, r) => {
  const v = header.apiVersion;
  r.int32(); // replica_id
  if (v >= 2) r.int8(); // isolation_level
  const topics = r.array((t) => ({ name: t.string(), partitions: t.array((p) => ({ partition: p.int32(), timestamp: p.int64n() })) }));
  const w = new Writer(128);
  if (v >= 2) w.int32(0);
  w.array(topics, (w, t) => {
    const topic = broker.topics.get(t.name);
    w.string(t.name);
    w.array(t.partitions, (w, p) => {
      const log = topic?.partitions[p.partition];
      w.int32(p.partition);
      if (!log) {
        w.int16(KafkaError.UNKNOWN_TOPIC_OR_PARTITION).int64(-1).int64(-1);
        return;
      }
      const found = p.timestamp === -2 ? { offset: log.logStartOffset, timestamp: -1 } : p.timestamp === -1 ? { offset: log.highWatermark, timestamp: -1 } : log.offsetForTimestamp(p.timestamp);
      w.int16(0).int64(found.timestamp).int64(found.offset);
    });
  });
  return w;
};
