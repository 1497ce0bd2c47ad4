/**
 * Metadata v0–4. v1+: null topics = all, [] = none (brokers only); v0: [] = all. Auto-creation only when the
 * broker allows it and (v < 4 or the request's allow_auto_topic_creation). "All topics" answers list only
 * healthy topics (kafkajs throws on any topic error). controller_id is this node: kafkajs sends admin calls there.
 */
import { KafkaError } from '../protocol/error-codes.ts';
import { Writer } from '../protocol/writer.ts';
import { storageFailed, type BrokerState, type Handler } from '../server/context.ts';
import { isValidTopicName, type Topic } from '../state/topics.ts';

type Entry = { name: string; error: number; topic: Topic | undefined };

export function resolveTopics(broker: BrokerState, requested: readonly string[] | null, allowAutoCreate: boolean): Entry[] {
  if (requested === null) return broker.topics.list().map((topic) => ({ name: topic.name, error: 0, topic }));
  return requested.map((name) => {
    const existing = broker.topics.get(name);
    if (existing) return { name, error: 0, topic: existing };
    if (!isValidTopicName(name)) return { name, error: KafkaError.INVALID_TOPIC_EXCEPTION, topic: undefined };
    if (broker.autoCreateTopics && allowAutoCreate) {
      try {
        return { name, error: 0, topic: broker.topics.create(name, broker.defaultPartitions) };
      } catch (err) {
        return { name, error: storageFailed(broker, { topic: name }, err), topic: undefined };
      }
    }
    return { name, error: KafkaError.UNKNOWN_TOPIC_OR_PARTITION, topic: undefined };
  });
}

export const handleMetadata: Handler = (broker, header, r) => {
  const v = header.apiVersion;
  let requested = v >= 1 ? r.nullableArray((x) => x.string()) : r.array((x) => x.string());
  if (v === 0 && requested !== null && requested.length === 0) requested = null;
  const allowAutoCreate = v >= 4 ? r.bool() : true;
  const entries = resolveTopics(broker, requested, allowAutoCreate);

  const w = new Writer(512);
  if (v >= 3) w.int32(0);
  w.int32(1).int32(broker.nodeId).string(broker.advertisedHost).int32(broker.advertisedPort);
  if (v >= 1) w.nullableString(null);
  if (v >= 2) w.nullableString(broker.clusterId);
  if (v >= 1) w.int32(broker.nodeId);
  w.array(entries, (w, e) => {
    w.int16(e.error).string(e.name);
    if (v >= 1) w.bool(false);
    const count = e.topic?.partitions.length ?? 0;
    w.int32(count);
    for (let p = 0; p < count; p++) {
      w.int16(0).int32(p).int32(broker.nodeId);
      w.int32(1).int32(broker.nodeId); // replicas
      w.int32(1).int32(broker.nodeId); // isr
    }
  });
  return w;
};
