/** Admin APIs: CreateTopics, DeleteTopics, DescribeConfigs, DescribeGroups, ListGroups, DeleteGroups, InitProducerId. */
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

/** Deletes the topic, then (as Kafka does) every group's committed offsets for it. */
function deleteTopic(broker: BrokerState, name: string): number {
  try {
    if (!broker.topics.delete(name)) return KafkaError.UNKNOWN_TOPIC_OR_PARTITION;
  } catch (err) {
    return storageFailed(broker, { topic: name }, err);
  }
  try {
    broker.offsets.deleteTopic(name);
  } catch (err) {
    // The topic is gone and its offsets are dropped from memory; the next start drops them from offsets.log too.
    storageFailed(broker, { topic: name, offsets: 'not deleted from offsets.log' }, err, 0);
  }
  return 0;
}

/** Kafka's config resource type of a topic (DescribeConfigs); other types (broker, logger) are not served. */
const TOPIC_RESOURCE = 2;
/** Kafka's config_source (DescribeConfigs v1+) of a config set on the topic, and of a default. */
const TOPIC_CONFIG = 1;
const DEFAULT_CONFIG = 5;

/**
 * DescribeConfigs v0–1, topics only: the configs given at creation (stored, reported as set on the topic) over the
 * defaults a client checks (cleanup.policy, retention, max.message.bytes, message.timestamp.type). Null config names
 * = all of them. Synonyms are never listed (an empty array at v1).
 */
export const handleDescribeConfigs: Handler = (broker, header, r) => {
  const v = header.apiVersion;
  const resources = r.array((x) => ({ type: x.int8(), name: x.string(), names: x.nullableArray((n) => n.string()) }));
  if (v >= 1) r.bool(); // include_synonyms
  const w = new Writer(256);
  w.int32(0);
  w.array(resources, (w, res) => {
    const topic = res.type === TOPIC_RESOURCE ? broker.topics.get(res.name) : undefined;
    const [error, message] = res.type !== TOPIC_RESOURCE ? [KafkaError.INVALID_REQUEST, `the dev broker describes topic configs only (resource type 2), got type ${res.type}`]
      : !topic ? [KafkaError.UNKNOWN_TOPIC_OR_PARTITION, `topic "${res.name}" does not exist`] : [0, null];
    w.int16(error).nullableString(message).int8(res.type).string(res.name);
    const defaults: Record<string, string> = {
      'cleanup.policy': 'delete', 'retention.ms': '604800000', 'retention.bytes': '-1',
      'max.message.bytes': String(topic?.maxMessageBytes ?? 0), 'message.timestamp.type': 'CreateTime',
    };
    const all = new Map<string, { value: string | null; set: boolean }>(Object.entries(defaults).map(([k, value]) => [k, { value, set: false }]));
    for (const [k, value] of Object.entries(topic?.configs ?? {})) all.set(k, { value, set: true });
    const entries = !topic ? [] : [...all].filter(([k]) => res.names === null || res.names.includes(k));
    w.array(entries, (w, [name, c]) => {
      w.string(name).nullableString(c.value).bool(false);
      if (v === 0) w.bool(!c.set);
      else w.int8(c.set ? TOPIC_CONFIG : DEFAULT_CONFIG);
      w.bool(false);
      if (v >= 1) w.int32(0);
    });
  });
  return w;
};

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
