/** Admin APIs: CreateTopics, DeleteTopics, DescribeGroups, ListGroups, DeleteGroups, InitProducerId. */
import { KAFKA_LOG } from '../log-events.ts';
import { KafkaError } from '../protocol/error-codes.ts';
import { Writer } from '../protocol/writer.ts';
import { storageFailed, type BrokerState, type Handler } from '../server/context.ts';
import { isValidTopicName, TIMESTAMP_TYPES } from '../state/topics.ts';

/** One file descriptor per partition: a dev broker has no use for more, and a bad request must not exhaust fds. */
export const MAX_PARTITIONS_PER_TOPIC = 1000;

export const handleCreateTopics: Handler = (broker, header, r) => {
  const v = header.apiVersion;
  const topics = r.array((t) => ({
    name: t.string(),
    partitions: t.int32(),
    replicationFactor: t.int16(),
    assignments: t.array((a) => ({ partition: a.int32(), brokers: a.array((b) => b.int32()) })),
    configs: t.array((c) => ({ name: c.string(), value: c.nullableString() })),
  }));
  r.int32(); // timeout_ms: creation is synchronous
  const validateOnly = v >= 1 ? r.bool() : false;
  const results = topics.map((t): { name: string; error: number; message: string | null } => {
    const fail = (error: number, message: string) => ({ name: t.name, error, message });
    if (!isValidTopicName(t.name)) return fail(KafkaError.INVALID_TOPIC_EXCEPTION, `invalid topic name "${t.name}"`);
    if (broker.topics.get(t.name)) return fail(KafkaError.TOPIC_ALREADY_EXISTS, `topic "${t.name}" already exists`);
    const count = t.partitions === -1 ? (t.assignments.length || broker.defaultPartitions) : t.partitions;
    if (count < 1 || count > MAX_PARTITIONS_PER_TOPIC) return fail(KafkaError.INVALID_PARTITIONS, `number of partitions must be -1 or 1…${MAX_PARTITIONS_PER_TOPIC}, got ${t.partitions}`);
    if (t.replicationFactor === 0 || t.replicationFactor < -1) return fail(KafkaError.INVALID_REPLICATION_FACTOR, `replication factor must be ≥ 1 or -1, got ${t.replicationFactor}`);
    const configs: Record<string, string | null> = {};
    for (const c of t.configs) configs[c.name] = c.value;
    const max = configs['max.message.bytes'];
    if (max !== undefined && !(max !== null && /^\d+$/.test(max) && Number(max) > 0)) return fail(KafkaError.INVALID_CONFIG, `max.message.bytes must be a positive integer, got ${String(max)}`);
    const timestampType = configs['message.timestamp.type'];
    if (timestampType !== undefined && !TIMESTAMP_TYPES.includes(timestampType ?? '')) return fail(KafkaError.INVALID_CONFIG, `message.timestamp.type must be one of ${TIMESTAMP_TYPES.join(', ')}, got ${String(timestampType)}`);
    if (t.replicationFactor > 1) broker.logger.info({ topic: t.name, replicationFactor: t.replicationFactor }, KAFKA_LOG.replicationFactorIgnored);
    if (!validateOnly) {
      try {
        broker.topics.create(t.name, count, configs);
      } catch (err) {
        return fail(storageFailed(broker, { topic: t.name }, err), `topic "${t.name}" not created: writing the data dir failed (${(err as Error).message}); free space and retry`);
      }
    }
    return { name: t.name, error: 0, message: null };
  });
  const w = new Writer(128);
  if (v >= 2) w.int32(0);
  w.array(results, (w, t) => {
    w.string(t.name).int16(t.error);
    if (v >= 1) w.nullableString(t.message);
  });
  return w;
};

export const handleDeleteTopics: Handler = (broker, header, r) => {
  const names = r.array((t) => t.string());
  r.int32();
  const w = new Writer(64);
  if (header.apiVersion >= 1) w.int32(0);
  w.array(names, (w, name) => w.string(name).int16(deleteTopic(broker, name)));
  return w;
};

function deleteTopic(broker: BrokerState, name: string): number {
  try {
    return broker.topics.delete(name) ? 0 : KafkaError.UNKNOWN_TOPIC_OR_PARTITION;
  } catch (err) {
    return storageFailed(broker, { topic: name }, err);
  }
}

export const handleDescribeGroups: Handler = (broker, header, r) => {
  const ids = r.array((g) => g.string());
  const w = new Writer(256);
  if (header.apiVersion >= 1) w.int32(0);
  w.array(ids, (w, id) => {
    const d = broker.groups.describe(id);
    w.int16(0).string(d.groupId).string(d.state).string(d.protocolType).string(d.protocol);
    w.array(d.members, (w, m) => w.string(m.memberId).string(m.clientId).string(m.clientHost).bytes(m.metadata).bytes(m.assignment));
  });
  return w;
};

export const handleListGroups: Handler = (broker, header) => {
  const w = new Writer(128);
  if (header.apiVersion >= 1) w.int32(0);
  w.int16(0);
  w.array(broker.groups.list(), (w, g) => w.string(g.groupId).string(g.protocolType));
  return w;
};

export const handleDeleteGroups: Handler = (broker, _header, r) => {
  const ids = r.array((g) => g.string());
  const w = new Writer(64);
  w.int32(0);
  w.array(ids, (w, id) => w.string(id).int16(broker.groups.delete(id)));
  return w;
};

/** Idempotent producers get increasing ids (sequences are accepted unchecked); transactions are refused early. */
export const handleInitProducerId: Handler = (broker, _header, r) => {
  const transactionalId = r.nullableString();
  r.int32();
  const w = new Writer(32);
  w.int32(0);
  if (transactionalId !== null) return w.int16(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED).int64(-1).int16(-1);
  const id = broker.nextProducerId++;
  return w.int16(0).int64(id).int16(0);
};
