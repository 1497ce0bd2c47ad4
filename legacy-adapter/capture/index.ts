/**
 * Change capture for the monolith's (legacy) database: install/uninstall the same-transaction triggers and run the
 * relay that publishes them to Kafka. The implementation is shared with services/kit (side "service").
 */
import type { Logger } from '../../common/logger.ts';
import { isStranglerError } from '../../common/errors.ts';
import type { KafkaConfig, Side, SyncConfig } from '../../migration-scripts/config-schema.ts';
import { retryTransient, type Pools } from '../../migration-scripts/db.ts';
import { createKafka, ensureTopics, KafkaSink, sideTopics } from '../../migration-scripts/kafka.ts';
import { recordWorkerError } from '../../migration-scripts/state.ts';
import { installCapture, uninstallCapture, type InstallResult } from './install.ts';
import { ChangeRelay } from './relay.ts';

export { installCapture, uninstallCapture, captureInstalled, compileFromDatabases } from './install.ts';
export { ChangeRelay, type EventSink, type OutgoingMessage } from './relay.ts';

export interface RunningRelay { relay: ChangeRelay; done: Promise<void>; stop(): Promise<void> }

/** Starts a relay for one side's database publishing to Kafka; one implementation for both sides. */
export async function startRelay(o: { config: SyncConfig; kafka: KafkaConfig; pools: Pools; side: Side; log?: Logger }): Promise<RunningRelay> {
  const kafka = createKafka(o.kafka, `relay-${o.side}`);
  // Starting while the broker or the database restarts is normal under a supervisor: wait for them. A refusal that
  // retrying cannot fix (a compacted topic, a TLS failure) is recorded for `sync status`, as the relay's own stops are.
  let sink: KafkaSink;
  try {
    await retryTransient('relay: create topics', () => ensureTopics(kafka, sideTopics(o.config, o.side), o.config.topics.partitions));
    sink = await retryTransient('relay: connect producer', () => KafkaSink.connect(kafka));
  } catch (err) {
    if (isStranglerError(err) && !err.retriable) {
      await recordWorkerError(o.pools[o.side], o.config.stateSchema, { worker: 'relay', source: o.side, code: err.code, message: err.message }).catch(() => {});
    }
    throw err;
  }
  const relay = new ChangeRelay({ config: o.config, pool: o.pools[o.side], side: o.side, sink, log: o.log });
  // One relay per database publishes; a second one is a hot standby that takes over when the holder's session ends.
  const standby = setTimeout(() => o.log?.info({ side: o.side }, 'relay: another relay holds the lock; standing by until it is released'), 1_000);
  try {
    await relay.lock(Number.POSITIVE_INFINITY);
  } catch (err) {
    await sink.close();
    throw err;
  } finally {
    clearTimeout(standby);
  }
  const done = relay.run();
  return { relay, done, stop: async () => { await relay.stop(); await sink.close(); } };
}

export const installLegacyCapture = (config: SyncConfig, pools: Pools): Promise<InstallResult> => installCapture(config, pools, 'legacy');
export const uninstallLegacyCapture = (config: SyncConfig, pools: Pools): Promise<void> => uninstallCapture(config, pools, 'legacy');
export const startLegacyRelay = (o: { config: SyncConfig; kafka: KafkaConfig; pools: Pools; log?: Logger }): Promise<RunningRelay> => startRelay({ ...o, side: 'legacy' });
