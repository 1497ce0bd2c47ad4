/**
 * OffsetCommit v2–5 and OffsetFetch v1–4. Offsets are stored exactly as given (negatives too), for partitions that
 * exist (others: UNKNOWN_TOPIC_OR_PARTITION). OffsetFetch answers every requested partition (−1 when uncommitted
 * or the group is unknown, error 0); null topics (v2+) = every committed offset of the group.
 */
import { KafkaError } from '../protocol/error-codes.ts';
import { Writer } from '../protocol/writer.ts';
import { storageFailed, type Handler } from '../server/context.ts';

export const handleOffsetCommit: Handler = async (broker, header, r) => {
  const v = header.apiVersion;
  const groupId = r.string();
  const generationId = r.int32();
  const memberId = r.string();
  if (v <= 4) r.int64(); // retention_time: offsets are kept until the group is deleted
  const topics = r.array((t) => ({ name: t.string(), partitions: t.array((p) => ({ partition: p.int32(), offset: p.int64n(), metadata: p.nullableString() })) }));
  // As Kafka: a partition that does not exist gets UNKNOWN_TOPIC_OR_PARTITION and is not stored; the group
  // is checked (and its error answered) only for the existing ones.
  const exists = (topic: string, partition: number): boolean => broker.topics.get(topic)?.partitions[partition] !== undefined;
  const entries = topics.flatMap((t) => t.partitions.filter((p) => exists(t.name, p.partition)).map((p) => ({ topic: t.name, partition: p.partition, offset: p.offset, metadata: p.metadata })));
  let error = 0;
  try {
    if (entries.length > 0) error = broker.groups.commit(groupId, generationId, memberId, entries);
  } catch (err) {
    // offsets.log could not be written (disk full): nothing stored. Kafka answers this when the offsets
    // topic cannot take the write; clients retry.
    error = storageFailed(broker, { groupId }, err, KafkaError.COORDINATOR_NOT_AVAILABLE);
  }
  if (entries.length > 0 && error === 0 && broker.fsync === 'always') await broker.offsets.sync();
  const w = new Writer(128);
  if (v >= 3) w.int32(0);
  w.array(topics, (w, t) => {
    w.string(t.name);
    w.array(t.partitions, (w, p) => w.int32(p.partition).int16(exists(t.name, p.partition) ? error : KafkaError.UNKNOWN_TOPIC_OR_PARTITION));
  });
  return w;
};

export const handleOffsetFetch: Handler = (broker, header, r) => {
  const v = header.apiVersion;
  const groupId = r.string();
  const requested = v >= 2 ? r.nullableArray((t) => ({ name: t.string(), partitions: t.array((p) => p.int32()) })) : r.array((t) => ({ name: t.string(), partitions: t.array((p) => p.int32()) }));
  const topics = requested ?? [...broker.offsets.all(groupId)].map(([name, parts]) => ({ name, partitions: [...parts.keys()] }));
  const w = new Writer(128);
  if (v >= 3) w.int32(0);
  w.array(topics, (w, t) => {
    w.string(t.name);
    w.array(t.partitions, (w, p) => {
      const c = broker.offsets.get(groupId, t.name, p);
      w.int32(p).int64(c ? c.offset : -1).nullableString(c ? c.metadata : '').int16(0);
    });
  });
  if (v >= 2) w.int16(0);
  return w;
};
