/**
 * Public surface of the dev Kafka broker (development, tests and one-machine demos only; see README.md).
 *
 *   const broker = await startKafkaBroker({ host: '127.0.0.1', port: 0, dataDir: '/tmp/kafka' });
 *   new Kafka({ brokers: [broker.address] });
 *   await broker.close();
 *
 * startKafkaBroker(options?: KafkaBrokerOptions): Promise<KafkaBroker>
 *   options: host, port, advertisedHost, dataDir, autoCreateTopics, defaultPartitions, groupMinSessionTimeoutMs,
 *            groupMaxSessionTimeoutMs, initialRebalanceDelayMs, coordinatorLoadMs, maxFrameBytes, maxMessageBytes, fsync, fsyncIntervalMs,
 *            nodeId, clusterId, tls { cert, key, clientCa }, sasl { users, mechanisms }, logger, clock (defaults in KAFKA_DEFAULTS)
 *   result:  { host, port, address, dataDir, tls, tlsClientAuth, saslMechanisms, close(): Promise<void> }
 */
export { startKafkaBroker, type KafkaBroker } from './server/broker.ts';
export { KAFKA_DEFAULTS, SASL_MECHANISMS, type KafkaBrokerOptions, type FsyncPolicy, type KafkaTlsOptions, type KafkaSaslOptions, type SaslMechanism } from './config.ts';
export { KAFKA_LOG } from './log-events.ts';
