/**
 * The narrow port to Kafka (kafkajs): a producer sink for the relay, a consumer-group loop for apply, and backlog
 * figures for status. Nothing here is a source of truth: the relay's positions and the target database's stored
 * positions and offsets are; Kafka commits only reduce redelivery (kafkajs has no rebalance listener, #1088).
 */
import type { ConnectionOptions } from 'node:tls';
import { Kafka, logLevel, type Admin, type ConfigResourceTypes, type Consumer, type ConsumerRunConfig, type Producer, type RetryOptions, type SASLOptions } from 'kafkajs';
import type { Logger } from '../common/logger.ts';
import { silentLogger } from '../common/logger.ts';
import { StranglerError, causeChain, isStranglerError, messageOf } from '../common/errors.ts';
import type { KafkaConfig, Side, SyncConfig } from './config-schema.ts';
import type { EventSink, OutgoingMessage } from '../legacy-adapter/capture/relay.ts';
import { topicFor, type CompiledTable } from './mapping.ts';
import type { Applier } from './apply.ts';
import type { ConsumedEvent } from './event.ts';
import { retryTransient } from './db.ts';
import { settlesWithin } from '../common/timeout.ts';
import { SYNC_LOG } from './log-events.ts';
import { checkTlsWithBrokers, tlsFailureOf } from './kafka-tls-check.ts';
import { tlsClientOptions } from '../common/tls.ts';

/**
 * kafkajs `ssl` from the config: false, true (system CAs), or TLS options with the PEM files read now. A client
 * certificate and key that do not make a pair fail here, naming both files: inside kafkajs the same mistake is a
 * connection error it retries for seconds.
 */
export function kafkaTlsOptions(ssl: NonNullable<KafkaConfig['ssl']>): boolean | ConnectionOptions {
  if (typeof ssl === 'boolean') return ssl;
  const read = tlsClientOptions(ssl);
  if ('options' in read) return read.options;
  const p = read.problem;
  if (p.kind === 'unreadable') {
    throw new StranglerError('KAFKA_TLS_FILE_UNREADABLE', `kafka.ssl.${p.field}: cannot read "${p.file}" (${p.code}); expected a readable PEM file (relative paths are resolved against ${process.cwd()})`);
  }
  throw new StranglerError('KAFKA_TLS_KEY_MISMATCH', `kafka.ssl.certFile "${p.certFile}" and kafka.ssl.keyFile "${p.keyFile}" are not a usable pair (${p.code}: ${p.detail}); expected a PEM client certificate and the PEM private key it was made for`);
}

/** The config behind each client createKafka made, to name its fields in errors. */
const clientConfigs = new WeakMap<Kafka, KafkaConfig>();

/** The config and TLS options behind each client createKafka made, for the one-time certificate check. */
const tlsChecks = new WeakMap<Kafka, { config: KafkaConfig; tls: ConnectionOptions; passed?: Promise<void> }>();

/**
 * Before a client made by createKafka first connects: one TLS probe per seed broker, so a certificate problem
 * fails at once with KAFKA_TLS_CERTIFICATE_REJECTED (config field + TLS code) instead of after kafkajs's ~9 s of
 * retries (kafka-tls-check.ts says why kafkajs cannot be told). Passes once per client; unreachable brokers are
 * left to kafkajs. A no-op without TLS or for clients not made by createKafka.
 */
async function checkKafkaTls(kafka: Kafka): Promise<void> {
  const entry = tlsChecks.get(kafka);
  if (!entry) return;
  entry.passed ??= checkTlsWithBrokers(entry.config, entry.tls).catch((err: unknown) => {
    entry.passed = undefined;
    throw err;
  });
  await entry.passed;
}

/** `err` as KAFKA_TLS_CERTIFICATE_REJECTED when a certificate failure is its cause (kafkajs gave up on one), else `err`. */
function withTlsCause(kafka: Kafka, err: unknown): unknown {
  const entry = tlsChecks.get(kafka);
  return (entry && tlsFailureOf(err, entry.config.ssl)) ?? err;
}

/**
 * `err` as KAFKA_SASL_AUTHENTICATION_FAILED when a broker refused the SASL login (kafkajs fails at once with
 * KafkaJSSASLAuthenticationError, which has no code: the CLI printed it as a stack trace), else undefined.
 */
export function saslFailureOf(err: unknown, sasl: KafkaConfig['sasl']): StranglerError | undefined {
  for (const e of causeChain(err)) {
    if (e.name !== 'KafkaJSSASLAuthenticationError') continue;
    const who = sasl ? `user "${sasl.username}" with mechanism ${sasl.mechanism} (kafka.sasl.username, kafka.sasl.password, kafka.sasl.mechanism)` : 'this client';
    return new StranglerError('KAFKA_SASL_AUTHENTICATION_FAILED',
      `the Kafka broker refused the SASL login of ${who}: ${messageOf(e)}. Check the user, its password and that the broker enables that mechanism; not retried`, { cause: e });
  }
  return undefined;
}

/** `connect` after the certificate check; a certificate or SASL login failure kafkajs ends with reported as one. */
async function connectChecked(kafka: Kafka, connect: () => Promise<void>): Promise<void> {
  await checkKafkaTls(kafka);
  try {
    await connect();
  } catch (err) {
    throw saslFailureOf(err, clientConfigs.get(kafka)?.sasl) ?? withTlsCause(kafka, err);
  }
}

function kafkaSasl({ mechanism, username, password }: NonNullable<KafkaConfig['sasl']>): SASLOptions {
  return { mechanism, username, password };
}

/**
 * kafkajs `retry` of every client: by default ~9 s of connection retries (100 ms doubling to 2 s, 8 times), and its
 * hook for a consumer that crashed after them: restart, unless a TLS certificate failure or one of our errors that is
 * not retriable is the cause (restarting cannot fix it: events lost from Kafka, a lost replication slot).
 */
export function kafkaRetry(config: Pick<KafkaConfig, 'ssl'>, retries = 8): RetryOptions {
  return {
    initialRetryTime: 100, retries, maxRetryTime: 2_000,
    restartOnFailure: (err) => Promise.resolve(tlsFailureOf(err, config.ssl) === undefined && fatalCause(err) === undefined),
  };
}

/**
 * kafkajs gave up finding or keeping the group coordinator (FindCoordinator kept failing, e.g. a restarted Kafka
 * loading `__consumer_offsets`, or NOT_COORDINATOR after a coordinator moved). kafkajs treats that as not retriable
 * and never restarts the consumer (kafkajs issues #1445, #1630), though it is as passing as a lost connection.
 */
export function coordinatorLost(err: unknown): boolean {
  for (const e of causeChain(err)) {
    if (e.name === 'KafkaJSGroupCoordinatorNotFound' || e.type === 'NOT_COORDINATOR_FOR_GROUP' || e.type === 'GROUP_COORDINATOR_NOT_AVAILABLE' || e.type === 'GROUP_LOAD_IN_PROGRESS') return true;
  }
  return false;
}

/** The first StranglerError that is not retriable in `err` or its causes (kafkajs wraps what eachBatch threw). */
export function fatalCause(err: unknown): StranglerError | undefined {
  for (const e of causeChain(err)) if (isStranglerError(e) && !e.retriable) return e;
  return undefined;
}

/**
 * A kafkajs client for one role. TLS files are read here, so a missing CA or key fails at start with the config
 * field that names it; the SASL password is handed to kafkajs only (its logging is off) and never logged by us.
 */
export function createKafka(config: KafkaConfig, role: string, options: { retries?: number } = {}): Kafka {
  const ssl = kafkaTlsOptions(config.ssl ?? false);
  const kafka = new Kafka({
    clientId: `${config.clientId}-${role}`,
    brokers: config.brokers,
    connectionTimeout: config.connectionTimeoutMs,
    requestTimeout: config.requestTimeoutMs,
    logLevel: logLevel.NOTHING,
    retry: kafkaRetry(config, options.retries),
    ssl,
    ...(config.sasl ? { sasl: kafkaSasl(config.sasl) } : {}),
  });
  clientConfigs.set(kafka, config);
  if (ssl !== false) tlsChecks.set(kafka, { config, tls: ssl === true ? {} : ssl });
  return kafka;
}

/**
 * The client `status` readers use (the CLI, the gateway's GET /admin/sync, the dashboard's poll): one retry, so an
 * unreachable Kafka is reported as `kafkaError` within about a second instead of after ~9 s of retries.
 */
export function createStatusKafka(config: KafkaConfig, role: string): Kafka {
  return createKafka(config, role, { retries: 1 });
}

export function sideTopics(config: SyncConfig, source: Side): string[] {
  return config.tables.map((t) => topicFor(config, source, t.name));
}

/**
 * admin.listTopics(), with kafkajs 2.2's failure when no broker answered its metadata request (a broker restarting
 * after the client connected: withBroker swallows each broker's error and returns null, which listTopics
 * destructures, a TypeError) reported as the passing Kafka failure it is, so the callers' retries go on.
 */
async function listTopics(admin: Admin): Promise<string[]> {
  try {
    return await admin.listTopics();
  } catch (err) {
    if (!(err instanceof TypeError && err.message.includes('topicMetadata'))) throw err;
    throw new StranglerError('SYNC_KAFKA_FAILED', 'listing Kafka topics failed: no broker answered the metadata request (a broker restarting?)', { cause: err });
  }
}

/** kafkajs's ConfigResourceTypes.TOPIC (a CommonJS enum its ESM entry does not export by name). */
const TOPIC_RESOURCE = 2 as ConfigResourceTypes;

/**
 * Creates the sync topics that do not exist yet (cleanup.policy=delete, Kafka's default), and refuses topics that
 * exist with a `compact` cleanup.policy (SYNC_TOPIC_COMPACTED): compaction leaves offset gaps that apply cannot tell
 * from lost events (it would stop with a false SYNC_EVENTS_LOST) and drops a key's older changes.
 */
export async function ensureTopics(kafka: Kafka, topics: readonly string[], partitions: number): Promise<void> {
  const admin = kafka.admin();
  await connectChecked(kafka, () => admin.connect());
  try {
    const existing = new Set(await listTopics(admin));
    const missing = topics.filter((t) => !existing.has(t));
    const present = topics.filter((t) => existing.has(t));
    if (present.length > 0) {
      // Without the DescribeConfigs ACL on the topics the check is skipped (as before it existed), not a failure to start.
      const described = await admin.describeConfigs({ includeSynonyms: false, resources: present.map((name) => ({ type: TOPIC_RESOURCE, name, configNames: ['cleanup.policy'] })) })
        .catch((err: unknown) => { if (/AUTHORIZATION_FAILED/.test(String((err as { type?: unknown }).type))) return { resources: [] }; throw err; });
      const compacted = described.resources.flatMap((r) => r.configEntries.filter((c) => c.configName === 'cleanup.policy' && /compact/.test(c.configValue ?? '')).map((c) => `${r.resourceName} (cleanup.policy=${c.configValue})`));
      if (compacted.length > 0) {
        throw new StranglerError('SYNC_TOPIC_COMPACTED',
          `Kafka topic ${compacted.join(', ')} is compacted: compaction removes a key's older changes and leaves offset gaps that apply must treat as lost events. ` +
          'Sync needs topics with cleanup.policy=delete: delete the topic (after its events are applied, or accept a verify and repair) and let sync create it, ' +
          `or recreate it with kafka-topics --create --topic <name> --partitions ${partitions} --config cleanup.policy=delete, or give sync topics of its own with sync.topics.pattern`);
      }
    }
    if (missing.length > 0) await admin.createTopics({ topics: missing.map((topic) => ({ topic, numPartitions: partitions })), waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}

/**
 * Bytes one message adds to a produce request besides its key and value: its record header (length, attributes,
 * timestamp and offset deltas, key and value lengths, header count: at most ~32 bytes) and, at worst, a record batch
 * header of its own (61 bytes, when it is alone in its partition's batch).
 */
const MESSAGE_OVERHEAD_BYTES = 100;

/** A message's size on the wire as the broker counts it against max.message.bytes (UTF-8 bytes, not string length). */
export function messageBytes(m: Pick<OutgoingMessage, 'key' | 'value'>): number {
  return Buffer.byteLength(m.key, 'utf8') + Buffer.byteLength(m.value, 'utf8') + MESSAGE_OVERHEAD_BYTES;
}

/** Whether a kafkajs error (or one it wraps) is the broker's MESSAGE_TOO_LARGE (a batch over max.message.bytes). */
function isMessageTooLarge(err: unknown, depth = 0): boolean {
  if (typeof err !== 'object' || err === null || depth > 5) return false;
  const e = err as { type?: unknown; cause?: unknown; errors?: unknown };
  if (e.type === 'MESSAGE_TOO_LARGE') return true;
  const inner = [e.cause, ...(Array.isArray(e.errors) ? e.errors as unknown[] : [])];
  return inner.some((x) => isMessageTooLarge(x, depth + 1));
}

/** Producer sink: idempotent, acks=all, one request in flight, so retries cannot reorder a partition. */
export class KafkaSink implements EventSink {
  readonly #kafka: Kafka;
  readonly #producer: Producer;
  readonly #maxRequestBytes: number;
  private constructor(kafka: Kafka, producer: Producer, maxRequestBytes: number) { this.#kafka = kafka; this.#producer = producer; this.#maxRequestBytes = maxRequestBytes; }
  /**
   * `maxRequestBytes`: the most message bytes (messageBytes) sent in one produce request; kept below Kafka's default
   * max.message.bytes (1048588), which each partition's batch in a request must not exceed.
   */
  static async connect(kafka: Kafka, maxRequestBytes = 512 * 1024): Promise<KafkaSink> {
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: true });
    await connectChecked(kafka, () => producer.connect());
    return new KafkaSink(kafka, producer, maxRequestBytes);
  }
  /**
   * Sends in order, in requests of at most maxRequestBytes (counted in bytes; a larger message goes alone), each
   * awaited before the next (acks=all), so a partition's messages keep their order. A request the broker refuses as
   * too large (a topic with a lower max.message.bytes) is sent again one message at a time; a single message it
   * refuses fails with SYNC_EVENT_TOO_LARGE, which the relay does not retry (see #tooLarge).
   */
  async publish(messages: readonly OutgoingMessage[]): Promise<void> {
    let start = 0;
    while (start < messages.length) {
      let end = start;
      let bytes = 0;
      while (end < messages.length) {
        const size = messageBytes(messages[end] as OutgoingMessage);
        if (end > start && bytes + size > this.#maxRequestBytes) break;
        bytes += size;
        end += 1;
      }
      const request = messages.slice(start, end);
      try {
        await this.#send(request);
      } catch (err) {
        if (!isMessageTooLarge(err)) throw err;
        if (request.length === 1) throw this.#tooLarge(request[0] as OutgoingMessage, err);
        // Resent one by one, in order; a partition of the refused request the broker did store comes twice (apply
        // drops the repeat by its position, as after a relay restart).
        for (const m of request) {
          await this.#send([m]).catch((e: unknown) => { throw isMessageTooLarge(e) ? this.#tooLarge(m, e) : e; });
        }
      }
      start = end;
    }
  }

  /**
   * The error for a change Kafka refuses as too large. Retrying cannot help and every later change of the database
   * waits behind it (per-key order), so the relay stops with this (as Debezium fails its connector); parking the
   * change would let later changes of its key overtake it.
   */
  #tooLarge(m: OutgoingMessage, err: unknown): StranglerError {
    const size = messageBytes(m);
    const table = m.table ?? m.topic;
    return new StranglerError('SYNC_EVENT_TOO_LARGE',
      `relay: the change of ${table} key ${m.key} (position ${m.position}) is a ${size}-byte event (before and after images, UTF-8) and Kafka refused it as larger than topic ${m.topic} accepts ` +
      `(max.message.bytes; the broker's default message.max.bytes is 1048588 bytes); the relay stopped, later changes wait behind it. ` +
      `Raise max.message.bytes of topic ${m.topic} above ${size} bytes (kafka-configs --alter --entity-type topics --entity-name ${m.topic} --add-config max.message.bytes=${2 ** Math.ceil(Math.log2(size))}; ` +
      `consumers fetch it with their max.partition.fetch.bytes) or stop syncing the large column, then restart the relay`, { cause: err });
  }

  async #send(messages: readonly OutgoingMessage[]): Promise<void> {
    const byTopic = new Map<string, { key: string; value: string }[]>();
    for (const m of messages) {
      let list = byTopic.get(m.topic);
      if (!list) { list = []; byTopic.set(m.topic, list); }
      list.push({ key: m.key, value: m.value });
    }
    try {
      await this.#producer.sendBatch({ acks: -1, topicMessages: [...byTopic].map(([topic, msgs]) => ({ topic, messages: msgs })) });
    } catch (err) {
      const tls = withTlsCause(this.#kafka, err);
      if (tls !== err) throw tls;
      throw new StranglerError('SYNC_KAFKA_FAILED', `relay: producing ${messages.length} messages failed: ${messageOf(err)}`, { cause: err });
    }
  }
  async close(): Promise<void> { await this.#producer.disconnect().catch(() => {}); }
}

export interface ApplyWorkerOptions {
  config: SyncConfig;
  kafka: Kafka;
  applier: Applier;
  source: Side;
  tables: readonly CompiledTable[];
  log?: Logger;
  sessionTimeoutMs?: number;
  /** Called after each committed apply transaction (bench/tests measure lag with it). */
  onApplied?: (events: readonly ConsumedEvent[]) => void;
}

/**
 * The apply consumer group. Per fetched batch: apply in one target transaction (positions and offsets stored
 * there), then commit the offset to Kafka (best effort). On assignment it seeks every partition to the offset
 * stored in the target database, so a Kafka offset that ran ahead of the database cannot skip events.
 */
export class ApplyWorker {
  readonly #o: ApplyWorkerOptions;
  readonly #log: Logger;
  #consumer: Consumer | undefined;
  #fail: (err: unknown) => void = () => {};
  /** Our own restarts of a consumer kafkajs gave up on after losing the coordinator (backoff; reset on joining). */
  #restarts = 0;
  #restartTimer: NodeJS.Timeout | undefined;
  #stopped = false;
  /** Partitions whose start #checkStart has checked since this member last joined the group. */
  readonly #startChecked = new Set<string>();
  /** Batches refused in a row because Kafka did not answer (#refuseBatch's backoff; reset by an applied batch). */
  #refusals = 0;
  /**
   * Whether the target may hold an error an apply worker of this direction stopped with (#record): unknown until the
   * first batch applied, which deletes it (one statement per process).
   */
  #errorRecorded: boolean | undefined;
  /**
   * Rejects when the consumer stopped for good (kafkajs will not restart it: a TLS certificate failure, events lost
   * from Kafka, a lost slot), with the cause; `strangler sync apply` exits with it instead of idling.
   */
  readonly done: Promise<never>;
  constructor(options: ApplyWorkerOptions) {
    this.#o = options;
    this.#log = options.log ?? silentLogger;
    this.done = new Promise<never>((_, reject) => { this.#fail = reject; });
    this.done.catch(() => {}); // (nobody needs to wait on it)
  }

  /** Connects, subscribes and runs the consumer; an error retrying cannot fix (a compacted topic, a TLS failure) is recorded (#record). */
  async start(): Promise<void> {
    try {
      await this.#start();
    } catch (err) {
      const fatal = fatalCause(err);
      if (fatal) await this.#record(fatal);
      throw err;
    }
  }

  /**
   * Records the error apply stops with in the target's state schema, so `sync status` and the dashboard report the
   * direction broken and why (a supervisor restarting apply into the same error shows only a growing lag otherwise).
   * Bounded: a target that does not answer must not keep the worker from stopping.
   */
  async #record(err: unknown): Promise<void> {
    const code = isStranglerError(err) ? err.code : 'SYNC_KAFKA_FAILED';
    const message = isStranglerError(err) ? err.message : `apply consumer stopped (kafkajs gave up): ${messageOf(err)}`;
    const recorded = await settlesWithin(this.#o.applier.recordStop(code, message), 5_000).catch((recordErr: unknown) => messageOf(recordErr));
    if (recorded === true) this.#errorRecorded = true;
    else this.#log.warn({ event: SYNC_LOG.applyStopped, code, err: recorded === false ? 'no answer within 5 s' : recorded }, 'recording the error apply stops with failed; status shows only the lag');
  }

  /** Stops for good: records why, then rejects `done`. */
  async #stopWith(err: unknown): Promise<void> {
    await this.#record(err);
    this.#fail(err);
  }

  /** A batch applied: an error an apply worker of this direction stopped with before is over (retried after the next batch if this fails). */
  async #passed(): Promise<void> {
    if (this.#errorRecorded === false) return;
    try {
      await this.#o.applier.clearStop();
      this.#errorRecorded = false;
    } catch (err) {
      this.#log.warn({ event: SYNC_LOG.applyRetry, err: messageOf(err) }, 'clearing the recorded stop error of apply failed; tried again after the next batch');
    }
  }

  async #start(): Promise<void> {
    const { config, kafka, applier, source } = this.#o;
    const topics = sideTopics(config, source);
    await retryTransient('apply: create topics', () => ensureTopics(kafka, topics, config.topics.partitions));
    const direction = `${source}-to-${applier.target}`;
    const consumer = kafka.consumer({
      groupId: `${config.apply.groupIdPrefix}.${direction}`,
      sessionTimeout: this.#o.sessionTimeoutMs ?? 10_000,
      heartbeatInterval: Math.max(50, Math.floor((this.#o.sessionTimeoutMs ?? 10_000) / 5)),
      rebalanceTimeout: Math.max(3_000, (this.#o.sessionTimeoutMs ?? 10_000) * 3),
      maxWaitTimeInMs: 50,
      allowAutoTopicCreation: false,
    });
    this.#consumer = consumer;
    // kafkajs restarts a crashed consumer unless createKafka's retry.restartOnFailure says no (a TLS certificate
    // failure, events lost) or it judged the error not retriable: then it has stopped for good, which must not go
    // unnoticed. A lost group coordinator is the exception: it passes, so we restart the consumer ourselves.
    // What this relies on (kafkajs 2.2.4, src/consumer/runner.js and index.js; docs "Configuration: Restart on
    // failure", "Instrumentation Events: consumer.crash"): an error eachBatch throws fails the fetch loop, which the
    // runner retries with `retry` (fetching the batch again); after `retries` it crashes with
    // KafkaJSNumberOfRetriesExceeded, emits CRASH with `restart` = (that, or an original cause with retriable: true)
    // and restartOnFailure, and when true starts the consumer again after the last retry time. So a retriable error
    // (SYNC_APPLY_FAILED after apply's own database retries, a pg connection error, a Kafka error) crashes and
    // restarts it, as often as it takes, each cycle backing off through the retries; the batch is fetched again from
    // the target's stored position. Each restart is logged, so a long outage is not a silent one.
    consumer.on(consumer.events.CRASH, (e) => {
      if (e.payload.restart) {
        const code = [...causeChain(e.payload.error)].filter(isStranglerError).map((c) => c.code)[0];
        this.#log.warn({ event: SYNC_LOG.applyRestart, direction, code, err: messageOf(e.payload.error) },
          'apply consumer crashed after its retries (the target or Kafka still failing); kafkajs restarts it and the batch is fetched again from the stored position');
        return;
      }
      const tls = withTlsCause(kafka, e.payload.error);
      const err = tls !== e.payload.error ? tls : fatalCause(e.payload.error) ?? tls;
      if (err === e.payload.error && coordinatorLost(err) && !this.#stopped) {
        const inMs = Math.min(30_000, 500 * 2 ** this.#restarts++);
        this.#log.warn({ event: SYNC_LOG.applyRestart, direction, err: messageOf(err), inMs }, 'apply consumer lost its group coordinator; restarting it');
        this.#restartTimer = setTimeout(() => {
          consumer.run(runOptions).catch((runErr: unknown) => this.#stopWith(runErr));
        }, inMs);
        return;
      }
      this.#log.error({ event: SYNC_LOG.applyStopped, direction, code: isStranglerError(err) ? err.code : undefined, err: messageOf(err) }, 'apply consumer stopped; restart the apply worker after fixing the cause');
      void this.#stopWith(err);
    });
    consumer.on(consumer.events.GROUP_JOIN, (e) => {
      this.#restarts = 0;
      const assignment = e.payload.memberAssignment as Record<string, number[]>;
      this.#startChecked.clear();
      // Partitions the target has no offset for are positioned by #checkStart at their first batch instead.
      void (async () => {
        for (const [topic, partitions] of Object.entries(assignment)) {
          const stored = await applier.storedOffsets(source, topic);
          for (const p of partitions) {
            const off = stored.get(p);
            if (off !== undefined) consumer.seek({ topic, partition: p, offset: String(BigInt(off) + 1n) });
          }
        }
      })().catch((err: unknown) => this.#log.warn({ event: SYNC_LOG.applyRetry, err: messageOf(err) },
        'seeking to stored offsets failed; the first batch is checked against the stored offset instead (a hole seeks back, repeats are dropped)'));
    });
    await retryTransient('apply: connect consumer', () => connectChecked(kafka, () => consumer.connect()));
    // Subscribing asks Kafka for the topics' metadata, which fails like a connection when the broker restarts now.
    await retryTransient('apply: subscribe', () => consumer.subscribe({ topics, fromBeginning: true }));
    const max = config.apply.maxBatchEvents;
    const runOptions: ConsumerRunConfig = {
      autoCommit: false,
      eachBatchAutoResolve: false,
      eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
        const first = batch.messages[0]?.offset;
        const started = await this.#checkStart(consumer, batch.topic, batch.partition, first)
          .catch((err: unknown) => this.#refuseBatch(consumer, batch.topic, batch.partition, first, err, heartbeat, isRunning).then(() => false));
        if (!started) return;
        for (let i = 0; i < batch.messages.length; i += max) {
          if (!isRunning() || isStale()) return;
          const slice = batch.messages.slice(i, i + max);
          const events: ConsumedEvent[] = slice.map((m) => ({ topic: batch.topic, partition: batch.partition, offset: m.offset, value: m.value ? m.value.toString('utf8') : '' }));
          const res = await applier.applyBatch(events).catch(async (err: unknown) => {
            try {
              // A hole after the stored offset whose events Kafka still holds: the consumer started at a committed offset
              // ahead of the database (its fetch beat the seek on join, or the database was restored): seek back. Only
              // Kafka's answer that they are gone makes it SYNC_EVENTS_LOST; failing to ask is retried (SYNC_KAFKA_FAILED).
              const next = isStranglerError(err) && err.code === 'SYNC_EVENTS_LOST' ? err.details?.nextOffset : undefined;
              if (typeof next === 'string') {
                const low = await this.#firstOffset(batch.topic, batch.partition, `check whether offsets ${next}.. of topic ${batch.topic} partition ${batch.partition} are still in Kafka`);
                if (BigInt(low) <= BigInt(next)) {
                  this.#log.warn({ event: SYNC_LOG.offsetsAhead, direction, topic: batch.topic, partition: batch.partition, offset: next }, 'consumer offset ahead of the applied one; seeking back');
                  consumer.seek({ topic: batch.topic, partition: batch.partition, offset: next });
                  return null;
                }
              }
            } catch (askErr) {
              if (!isStranglerError(askErr) || askErr.code !== 'SYNC_KAFKA_FAILED') throw askErr;
              await this.#refuseBatch(consumer, batch.topic, batch.partition, slice[0]?.offset, askErr, heartbeat, isRunning);
              return null;
            }
            // kafkajs retries the batch and restarts the consumer (its own logging is off): say why it does not move.
            this.#log.error({ event: SYNC_LOG.applyFailed, direction, topic: batch.topic, partition: batch.partition, code: isStranglerError(err) ? err.code : undefined, err: messageOf(err) },
              'apply batch failed; it is retried from the stored position');
            throw err;
          });
          if (res === null) return;
          const last = slice[slice.length - 1]?.offset as string;
          resolveOffset(last);
          this.#refusals = 0;
          await this.#passed();
          this.#o.onApplied?.(events);
          this.#log.debug({ event: SYNC_LOG.applyBatch, topic: batch.topic, partition: batch.partition, ...res }, 'applied batch');
          await consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: String(BigInt(last) + 1n) }])
            .catch((err: unknown) => this.#log.warn({ event: SYNC_LOG.applyRetry, err: messageOf(err) }, 'kafka offset commit failed; the database position stays the truth'));
          await heartbeat();
        }
      },
    };
    await consumer.run(runOptions);
    this.#log.info({ event: SYNC_LOG.applyStarted, direction, topics }, 'apply worker started');
  }

  /**
   * Before the first batch of a partition since joining: if the target has no offset stored for it (a database
   * restored from before sync's first apply, or its state reinstalled), the batch must start at the first event Kafka
   * holds, not at the group's committed offset, which would skip every event before it without a hole to notice
   * (#checkContiguous has no previous offset to compare with). A later batch is seeked to it (false: skip this one);
   * until Kafka answers, the batch is refused with SYNC_KAFKA_FAILED and retried. Repeats are dropped by the
   * version rules.
   */
  async #checkStart(consumer: Consumer, topic: string, partition: number, firstInBatch: string | undefined): Promise<boolean> {
    const key = `${topic}\u0000${partition}`;
    if (firstInBatch === undefined || this.#startChecked.has(key)) return true;
    if (!(await this.#o.applier.storedOffsets(this.#o.source, topic)).has(partition)) {
      const low = await this.#firstOffset(topic, partition, `find where to start topic ${topic} partition ${partition} (${this.#o.applier.target} has applied nothing from it)`);
      if (BigInt(firstInBatch) > BigInt(low)) {
        this.#log.warn({ event: SYNC_LOG.offsetsAhead, topic, partition, offset: low }, 'nothing applied from this partition yet; seeking to the first offset Kafka holds');
        consumer.seek({ topic, partition, offset: low });
        return false;
      }
    }
    this.#startChecked.add(key);
    return true;
  }

  /**
   * A batch that cannot be judged because Kafka did not answer (#firstOffset's SYNC_KAFKA_FAILED; anything else is
   * thrown): logged, then fetched again from `offset` after a backoff (heartbeating meanwhile, so the member keeps
   * its partitions), as often as it takes. Handled here rather than thrown to kafkajs, which would crash and restart
   * the consumer for a passing failure of a side request.
   */
  async #refuseBatch(consumer: Consumer, topic: string, partition: number, offset: string | undefined, err: unknown,
    heartbeat: () => Promise<void>, isRunning: () => boolean): Promise<void> {
    if (!isStranglerError(err) || err.code !== 'SYNC_KAFKA_FAILED' || offset === undefined) {
      // (#checkStart reading the target's stored offsets failed, e.g. the target database is down: kafkajs retries.)
      this.#log.error({ event: SYNC_LOG.applyFailed, topic, partition, code: isStranglerError(err) ? err.code : undefined, err: messageOf(err) },
        'apply batch not applied: reading the stored offsets failed; it is retried');
      throw err;
    }
    const inMs = Math.min(5_000, 250 * 2 ** this.#refusals++);
    this.#log.error({ event: SYNC_LOG.applyFailed, topic, partition, code: err.code, err: err.message, inMs }, 'apply batch not applied; it is fetched again');
    for (const until = Date.now() + inMs; Date.now() < until && isRunning();) {
      await new Promise((r) => setTimeout(r, Math.min(200, until - Date.now())));
      await heartbeat().catch(() => {}); // (a rebalance: the batch is fetched again by whoever gets the partition)
    }
    consumer.seek({ topic, partition, offset });
  }

  /** The first offset Kafka holds in a partition; failing to learn it is SYNC_KAFKA_FAILED (retried), saying what it was for. */
  async #firstOffset(topic: string, partition: number, purpose: string): Promise<string> {
    let low: string | undefined;
    try {
      low = (await firstOffsets(this.#o.kafka, topic)).get(partition);
    } catch (err) {
      const cause = withTlsCause(this.#o.kafka, err);
      if (isStranglerError(cause) && !cause.retriable) throw cause;
      throw new StranglerError('SYNC_KAFKA_FAILED', `apply: could not ${purpose}: asking Kafka for the partition's first offset failed (${messageOf(err)}); the batch is fetched again`, { cause: err });
    }
    if (low === undefined) throw new StranglerError('SYNC_KAFKA_FAILED', `apply: could not ${purpose}: Kafka's answer listed no partition ${partition}; the batch is fetched again`);
    return low;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#restartTimer);
    await this.#consumer?.disconnect().catch(() => {});
  }
}

/** The first offset Kafka still holds in each partition of a topic (one admin request for all of them). */
async function firstOffsets(kafka: Kafka, topic: string): Promise<Map<number, string>> {
  const admin = kafka.admin();
  await connectChecked(kafka, () => admin.connect());
  try {
    return new Map((await admin.fetchTopicOffsets(topic)).map((o) => [o.partition, o.low]));
  } finally {
    await admin.disconnect();
  }
}

/** A partition whose next event to apply is no longer in Kafka (below its first offset): those events are lost. */
export interface LostEvents { topic: string; partition: number; nextOffset: string; firstOffset: string }

/**
 * Events in Kafka not yet applied, per topic: high watermark minus the next offset stored in the target database.
 * `lost` lists partitions whose next offset to apply is below the first one Kafka still holds (retention deleted
 * events apply had not read; kafkajs would silently start at the first one). Rejects when Kafka cannot say (never a
 * partial sum: a topic it did not answer for would count as caught up).
 */
export async function kafkaBacklog(kafka: Kafka, topics: readonly string[], stored: (topic: string) => Promise<Map<number, string>>, lost: LostEvents[] = []): Promise<number> {
  const admin: Admin = kafka.admin();
  await connectChecked(kafka, () => admin.connect());
  try {
    let total = 0;
    // A topic that does not exist yet has no backlog; asking for its offsets would make kafkajs retry for ~30 s.
    const existing = new Set(await listTopics(admin));
    for (const topic of topics) {
      if (!existing.has(topic)) continue;
      // Kafka not answering for a topic (its partitions' leader unreachable, a timeout) makes the backlog unknown,
      // never 0: lag 0 is what operators wait for before verify or a rollback. The caller reports the error.
      const offsets = await admin.fetchTopicOffsets(topic).catch((err: unknown) => {
        const tls = withTlsCause(kafka, err);
        if (tls !== err) throw tls;
        throw new StranglerError('SYNC_KAFKA_FAILED', `reading the offsets of Kafka topic ${topic} failed (${messageOf(err)}); its backlog is unknown`, { cause: err });
      });
      const mine = await stored(topic);
      for (const o of offsets) {
        const applied = mine.get(o.partition);
        const next = applied === undefined ? BigInt(o.low) : BigInt(applied) + 1n;
        if (next < BigInt(o.low)) lost.push({ topic, partition: o.partition, nextOffset: next.toString(), firstOffset: o.low });
        // Past the end: the topic was recreated; the consumer will start over at its first offset.
        const lag = BigInt(o.high) - (next > BigInt(o.high) ? BigInt(o.low) : next);
        if (lag > 0n) total += Number(lag);
      }
    }
    return total;
  } finally {
    await admin.disconnect();
  }
}
