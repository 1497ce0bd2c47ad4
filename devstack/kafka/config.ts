/** Every setting of the dev broker and its default, in one place. Units are in the names. */
import type { Logger } from '../../common/logger.ts';
import type { Clock } from './state/clock.ts';

/**
 * When appended batches and committed offsets are fsynced. In every mode the data is written to the file
 * (one write(2)) before the request is acknowledged, so it survives kill -9 of the broker; fsync only adds
 * safety against power loss or a kernel crash.
 * - `always`: fdatasync before answering Produce (acks ≠ 0) and OffsetCommit.
 * - `interval`: fdatasync dirty files every `fsyncIntervalMs` (default).
 * - `never`: leave write-back to the OS.
 */
export type FsyncPolicy = 'always' | 'interval' | 'never';

/** TLS for the listener (Kafka's SSL / SASL_SSL listeners): PEM text or bytes of the certificate chain and key. */
export interface KafkaTlsOptions {
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
  /**
   * Mutual TLS: PEM certificate(s) of the CA(s) client certificates must be signed by. When set, every client must
   * present such a certificate during the handshake (Kafka's `ssl.client.auth=required` with `ssl.truststore`);
   * a client without one, or with one from another CA, is refused before any Kafka request. Omitted = no client
   * certificates are asked for.
   */
  readonly clientCa?: string | Buffer;
}

export type SaslMechanism = 'PLAIN' | 'SCRAM-SHA-256' | 'SCRAM-SHA-512';
export const SASL_MECHANISMS: readonly SaslMechanism[] = ['PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512'];

/**
 * SASL authentication (Kafka's SASL_PLAINTEXT, or SASL_SSL together with `tls`): every connection must
 * authenticate as one of `users` (name → password) with one of `mechanisms` before any other request.
 */
export interface KafkaSaslOptions {
  readonly users: Readonly<Record<string, string>>;
  /** Default: all three. */
  readonly mechanisms?: readonly SaslMechanism[];
}

export interface KafkaBrokerOptions {
  /** Interface to bind. `localhost` binds 127.0.0.1 and ::1 on the same port. Default 127.0.0.1. */
  host?: string;
  /** 0 picks a free port; the advertised port is always the bound one. */
  port?: number;
  /** Host put in Metadata/FindCoordinator; defaults to the bound address (127.0.0.1 for wildcard binds). */
  advertisedHost?: string;
  /** Directory for partition logs, topics.json and offsets.log; omitted = in memory only. */
  dataDir?: string;
  autoCreateTopics?: boolean;
  defaultPartitions?: number;
  groupMinSessionTimeoutMs?: number;
  groupMaxSessionTimeoutMs?: number;
  /** Kafka's group.initial.rebalance.delay.ms: wait this long after the first join of an empty group. */
  initialRebalanceDelayMs?: number;
  /**
   * For this long after start, FindCoordinator answers COORDINATOR_NOT_AVAILABLE, as a restarted Kafka broker does
   * while it loads `__consumer_offsets` (how a client rides out a slow coordinator is then testable). Default 0.
   */
  coordinatorLoadMs?: number;
  /** Frames larger than this close the connection (Kafka's socket.request.max.bytes). */
  maxFrameBytes?: number;
  /** Default max.message.bytes of topics (Kafka's default 1048588). */
  maxMessageBytes?: number;
  fsync?: FsyncPolicy;
  fsyncIntervalMs?: number;
  nodeId?: number;
  clusterId?: string;
  /** Serve TLS instead of plaintext on the listener. */
  tls?: KafkaTlsOptions;
  /** Require SASL authentication on every connection. */
  sasl?: KafkaSaslOptions;
  logger?: Logger;
  clock?: Clock;
}

export type KafkaDefaults = Required<Omit<KafkaBrokerOptions, 'dataDir' | 'advertisedHost' | 'logger' | 'clock' | 'tls' | 'sasl'>>;

export const KAFKA_DEFAULTS: Readonly<KafkaDefaults> = {
  host: '127.0.0.1',
  port: 9092,
  autoCreateTopics: true,
  defaultPartitions: 1,
  groupMinSessionTimeoutMs: 6000,
  groupMaxSessionTimeoutMs: 1_800_000,
  initialRebalanceDelayMs: 0,
  coordinatorLoadMs: 0,
  maxFrameBytes: 100 * 1024 * 1024,
  maxMessageBytes: 1_048_588,
  fsync: 'interval',
  fsyncIntervalMs: 1000,
  nodeId: 0,
  clusterId: 'strangler-dev-kafka',
};
