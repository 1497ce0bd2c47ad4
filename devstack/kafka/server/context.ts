/** What a request handler sees: the broker's state and the request's header. */
import type { Logger } from '../../../common/logger.ts';
import type { FsyncPolicy } from '../config.ts';
import { KAFKA_LOG } from '../log-events.ts';
import type { OffsetsStore } from '../persistence/offsets-store.ts';
import { KafkaError } from '../protocol/error-codes.ts';
import type { Reader } from '../protocol/reader.ts';
import type { Writer } from '../protocol/writer.ts';
import type { Clock } from '../state/clock.ts';
import type { GroupCoordinator } from '../state/group-coordinator.ts';
import type { TopicRegistry } from '../state/topics.ts';
import type { SaslAuthority } from './sasl.ts';

export interface BrokerState {
  readonly nodeId: number;
  readonly clusterId: string;
  /** Filled in once the listener is bound. */
  advertisedHost: string;
  advertisedPort: number;
  readonly autoCreateTopics: boolean;
  readonly defaultPartitions: number;
  readonly fsync: FsyncPolicy;
  readonly topics: TopicRegistry;
  readonly groups: GroupCoordinator;
  /** Until this time (clock ms) FindCoordinator answers COORDINATOR_NOT_AVAILABLE (the coordinator is loading). */
  readonly coordinatorReadyAt: number;
  readonly offsets: OffsetsStore;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Set when SASL is configured: every connection authenticates before anything else. */
  readonly sasl: SaslAuthority | undefined;
  closed: boolean;
  /** Callbacks run once when the broker closes (wakes parked fetches). */
  readonly onClose: Set<() => void>;
  nextProducerId: bigint;
}

export interface RequestHeader {
  readonly apiKey: number;
  readonly apiVersion: number;
  readonly correlationId: number;
  readonly clientId: string | null;
  readonly clientHost: string;
}

/**
 * Decodes the body from `reader` and returns the response body, or null when no response is sent (acks=0).
 * Throwing ProtocolError closes the connection.
 */
export type Handler = (broker: BrokerState, header: RequestHeader, reader: Reader) => Writer | null | Promise<Writer | null>;

/**
 * A write to the data dir failed (disk full, I/O error): logs it and returns `answer` (KAFKA_STORAGE_ERROR unless
 * given), the retriable per-partition/per-topic error to answer with, so the connection stays open and the client
 * retries.
 */
export function storageFailed(broker: BrokerState, fields: Record<string, unknown>, err: unknown, answer: number = KafkaError.KAFKA_STORAGE_ERROR): number {
  broker.logger.error({ ...fields, err: (err as Error).message, code: (err as NodeJS.ErrnoException).code, answer }, KAFKA_LOG.storageFailed);
  return answer;
}
