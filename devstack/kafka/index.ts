/**
 * Public surface of the dev Kafka broker (development, tests and one-machine demos only; see README.md).
 *
 *   const broker = await startKafkaBroker({ host: '127.0.0.1', port: 0, dataDir: '/tmp/kafka' });
 *   new Kafka({ brokers: [broker.address] });
 *   await broker.close();
 *
 * startKafkaBroker(options?: KafkaBrokerOptions): Promise<KafkaBroker>
 *   options: host, port, advertisedHost, dataDir, autoCreateTopics, defaultPartitions, groupMinSessionTimeoutMs,
 *            groupMaxSessionTimeoutMs, initialRebalanceDelayMs, maxFrameBytes, maxMessageBytes, fsync, fsyncIntervalMs,
 *            nodeId, clusterId, logger, clock (defaults in KAFKA_DEFAULTS)
 *   result:  { host, port, address, dataDir, close(): Promise<void> }
 */
export { startKafkaBroker, type KafkaBroker } from './server/broker.ts';
export { KAFKA_DEFAULTS, type KafkaBrokerOptions, type FsyncPolicy } from './config.ts';
export { KAFKA_LOG } from './log-events.ts';
