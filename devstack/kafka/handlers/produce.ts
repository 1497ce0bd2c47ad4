/**
 * Produce v3–7 (RecordBatch v2 only). Each batch is validated (size, magic, CRC, codec, control bit, offset
 * delta, max.message.bytes), stored as received with its base offset rewritten (on LogAppendTime topics also its
 * timestamp type, max timestamp and CRC), and acknowledged after the
 * write; with fsync=always also after fdatasync. acks=0 gets no response at all. A failed write answers
 * KAFKA_STORAGE_ERROR for that partition (the store has cut the partial batch off again).
 */
import { KAFKA_LOG } from '../log-events.ts';
import { KafkaError } from '../protocol/error-codes.ts';
import { Writer } from '../protocol/writer.ts';
import { checkBatch, splitBatches, stampLogAppendTime, type BatchInfo } from '../records/record-batch.ts';
import { storageFailed, type Handler } from '../server/context.ts';
import type { PartitionLog } from '../state/partition-log.ts';
import { producerFields } from '../state/producer-state.ts';

interface PartitionResult { partition: number; error: number; baseOffset: number; logAppendTime?: number }

export const handleProduce: Handler = async (broker, header, r) => {
  const v = header.apiVersion;
  const transactionalId = r.nullableString();
  const acks = r.int16();
  r.int32(); // timeout_ms: appends are synchronous
  const topics = r.array((t) => ({ name: t.string(), partitions: t.array((p) => ({ partition: p.int32(), records: p.nullableBytes() })) }));

  const touched = new Set<PartitionLog>();
  const results = topics.map(({ name, partitions }) => {
    const topic = broker.topics.get(name);
    return {
      name,
      partitions: partitions.map(({ partition, records }): PartitionResult => {
        const log = topic?.partitions[partition];
        if (!topic || !log) return { partition, error: KafkaError.UNKNOWN_TOPIC_OR_PARTITION, baseOffset: -1 };
        if (transactionalId !== null) return { partition, error: KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, baseOffset: -1 };
        const batches = records ? splitBatches(records) : null;
        if (!batches || batches.length === 0) {
          broker.logger.warn({ topic: name, partition, reason: 'records do not divide into whole batches' }, KAFKA_LOG.produceRejected);
          return { partition, error: KafkaError.CORRUPT_MESSAGE, baseOffset: -1 };
        }
        const infos: BatchInfo[] = [];
        for (const b of batches) {
          const check = checkBatch(b, topic.maxMessageBytes);
          if (!check.ok) {
            broker.logger.warn({ topic: name, partition, errorCode: check.error, reason: check.reason }, KAFKA_LOG.produceRejected);
            return { partition, error: check.error, baseOffset: -1 };
          }
          infos.push(check.info);
        }
        let baseOffset = -1;
        const now = topic.logAppendTime ? broker.clock.now() : -1;
        for (const [i, b] of batches.entries()) {
          const verdict = log.producers.check(producerFields(b));
          if (verdict.kind === 'reject') {
            broker.logger.warn({ topic: name, partition, errorCode: verdict.error, reason: verdict.reason }, KAFKA_LOG.produceRejected);
            return { partition, error: verdict.error, baseOffset: -1 };
          }
          // A retried idempotent batch already stored: answer with its original offset, store nothing.
          let at: number;
          try {
            if (verdict.kind !== 'duplicate' && topic.logAppendTime) stampLogAppendTime(b, now);
            at = verdict.kind === 'duplicate' ? verdict.baseOffset : log.append(b, infos[i]!.lastOffsetDelta, topic.logAppendTime ? now : infos[i]!.maxTimestamp);
          } catch (err) {
            // Disk full or an I/O error: nothing of this batch is stored (earlier batches of the request are).
            // Retriable for the client, as on Kafka; the connection stays open.
            return { partition, error: storageFailed(broker, { topic: name, partition }, err), baseOffset: -1 };
          }
          if (i === 0) baseOffset = at;
        }
        touched.add(log);
        return { partition, error: 0, baseOffset, logAppendTime: now };
      }),
    };
  });

  if (acks === 0) return null;
  if (broker.fsync === 'always') await Promise.all([...touched].map((l) => l.store.sync()));

  const w = new Writer(128);
  w.array(results, (w, t) => {
    w.string(t.name);
    w.array(t.partitions, (w, p) => {
      w.int32(p.partition).int16(p.error).int64(p.baseOffset).int64(p.logAppendTime ?? -1);
      if (v >= 5) w.int64(broker.topics.get(t.name)?.partitions[p.partition]?.logStartOffset ?? -1);
    });
  });
  w.int32(0);
  return w;
};
