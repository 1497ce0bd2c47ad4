/**
 * Starts the dev broker: state from the data dir, a TCP (or, with `tls`, TLS) listener, the fsync timer; close()
 * undoes all of it.
 */
import { mkdirSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { createSecureContext, createServer as createTlsServer, type TlsOptions, type TLSSocket } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { resolve } from 'node:path';
import { StranglerError } from '../../../common/errors.ts';
import { silentLogger } from '../../../common/logger.ts';
import { KAFKA_DEFAULTS, type KafkaBrokerOptions, type KafkaDefaults } from '../config.ts';
import { KAFKA_LOG } from '../log-events.ts';
import { OffsetsStore } from '../persistence/offsets-store.ts';
import { systemClock } from '../state/clock.ts';
import { GroupCoordinator } from '../state/group-coordinator.ts';
import { TopicRegistry } from '../state/topics.ts';
import { Connection } from './connection.ts';
import type { BrokerState } from './context.ts';
import { SaslAuthority } from './sasl.ts';

export interface KafkaBroker {
  /** Advertised host and bound port: what clients should dial. */
  readonly host: string;
  readonly port: number;
  /** `host:port` (IPv6 hosts in brackets), ready for kafkajs `brokers` or kcat `-b`. */
  readonly address: string;
  readonly dataDir: string | undefined;
  /** Whether the listener speaks TLS, whether it requires client certificates, and the SASL mechanisms it requires (empty = no SASL). */
  readonly tls: boolean;
  readonly tlsClientAuth: boolean;
  readonly saslMechanisms: readonly string[];
  /** Stops listening, drops connections, fsyncs and closes files. Idempotent. */
  close(): Promise<void>;
}

function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(err.code === 'EADDRINUSE' ? new StranglerError('PORT_IN_USE', `kafka dev broker: port ${port} on ${host} is already in use; pass --port (0 picks a free one)`, { cause: err }) : err);
    };
    server.once('error', onError);
    server.listen({ host, port, ipv6Only: host === '::1' }, () => {
      server.off('error', onError);
      resolvePort((server.address() as AddressInfo).port);
    });
  });
}

/**
 * Checks `tls.clientCa` before it reaches node: tls silently ignores a CA that is not PEM (then every client would be
 * refused with a misleading "unknown CA"), so each PEM block must parse as an X.509 certificate.
 */
function checkClientCa(pem: string | Buffer): void {
  const invalid = (why: string, cause?: unknown): StranglerError =>
    new StranglerError('KAFKA_DEV_BROKER_OPTIONS_INVALID', `kafka dev broker: tls.clientCa (--tls-client-ca) ${why}; expected the PEM certificate(s) of the CA that signs client certificates`, cause === undefined ? {} : { cause });
  const blocks = String(pem).match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw invalid('holds no "-----BEGIN CERTIFICATE-----" block');
  for (const [i, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch (err) {
      throw invalid(`certificate ${i + 1} of ${blocks.length} does not parse (${(err as Error).message})`, err);
    }
  }
}

/** "CN=a, O=b": the subject of a certificate as one line (X509Certificate.subject separates fields with newlines). */
function oneLine(name: string): string {
  return name.split('\n').filter((f) => f !== '').join(', ');
}

export async function startKafkaBroker(options: KafkaBrokerOptions = {}): Promise<KafkaBroker> {
  const o = { ...KAFKA_DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) } as KafkaDefaults & KafkaBrokerOptions;
  const logger = o.logger ?? silentLogger;
  const clock = o.clock ?? systemClock;
  const dataDir = o.dataDir ? resolve(o.dataDir) : undefined;
  const sasl = o.sasl ? new SaslAuthority(o.sasl) : undefined;
  const tls = o.tls;
  const clientAuth = tls?.clientCa !== undefined;
  // Mutual TLS: node verifies the client's chain against clientCa during the handshake and, with rejectUnauthorized,
  // ends a connection without a valid certificate before the secure-connection callback, so no Kafka request of an
  // unauthenticated client is ever read.
  const tlsOptions: TlsOptions | undefined = tls && {
    cert: tls.cert, key: tls.key,
    ...(clientAuth ? { ca: tls.clientCa, requestCert: true, rejectUnauthorized: true } : {}),
  };
  if (tls?.clientCa !== undefined) checkClientCa(tls.clientCa);
  if (tlsOptions) {
    // The context the TLS server will build from these options, built here first so that a bad certificate or key
    // fails before any state is opened.
    try {
      createSecureContext(tlsOptions);
    } catch (err) {
      throw new StranglerError('KAFKA_DEV_BROKER_OPTIONS_INVALID', `kafka dev broker: the TLS certificate or key is not usable: ${(err as Error).message}`, { cause: err });
    }
  }
  if (dataDir) mkdirSync(dataDir, { recursive: true });

  const topics = new TopicRegistry({ dataDir, logger, maxMessageBytes: o.maxMessageBytes });
  let offsets: OffsetsStore;
  try {
    offsets = new OffsetsStore(dataDir, logger, (topic) => topics.get(topic) !== undefined);
  } catch (err) {
    topics.close();
    throw err;
  }
  const groups = new GroupCoordinator({
    clock, logger, offsets,
    minSessionTimeoutMs: o.groupMinSessionTimeoutMs, maxSessionTimeoutMs: o.groupMaxSessionTimeoutMs, initialRebalanceDelayMs: o.initialRebalanceDelayMs,
  });
  if (dataDir) logger.info({ dataDir, topics: topics.list().length, groups: offsets.groups().length }, KAFKA_LOG.recovered);

  const state: BrokerState = {
    nodeId: o.nodeId, clusterId: o.clusterId, advertisedHost: '', advertisedPort: 0,
    autoCreateTopics: o.autoCreateTopics, defaultPartitions: o.defaultPartitions, fsync: o.fsync,
    topics, groups, coordinatorReadyAt: clock.now() + o.coordinatorLoadMs, offsets, clock, logger, sasl, closed: false, onClose: new Set(), nextProducerId: BigInt(Date.now()) * 1000n,
  };

  const sockets = new Set<Connection>();
  const onConnection = (socket: Socket): void => {
    const c = new Connection(socket, state, o.maxFrameBytes);
    sockets.add(c);
    socket.on('close', () => sockets.delete(c));
  };
  // TLS: connections start once the handshake is done; sockets still handshaking are tracked so close() ends them.
  const handshaking = new Set<Socket>();
  const makeServer = (): Server => {
    if (!tlsOptions) return createServer(onConnection);
    const server = createTlsServer(tlsOptions, (socket: TLSSocket) => {
      handshaking.delete(socket);
      if (clientAuth) {
        // Only the certificate's public identity is logged; the key never leaves the client.
        const peer = socket.getPeerX509Certificate();
        logger.debug({
          remote: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`,
          subject: peer ? oneLine(peer.subject) : null, issuer: peer ? oneLine(peer.issuer) : null,
          serialNumber: peer?.serialNumber ?? null, fingerprint256: peer?.fingerprint256 ?? null,
        }, KAFKA_LOG.tlsClientCertificate);
      }
      onConnection(socket);
    });
    server.on('connection', (raw: Socket) => {
      handshaking.add(raw);
      raw.once('close', () => handshaking.delete(raw));
    });
    server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
      // A client certificate that does not verify against clientCa: node completes the handshake, records why in
      // authorizationError and destroys the socket (no TLS alert, unlike Kafka), so `err` is only a reset and the
      // peer's address and certificate are gone by now; the verification code is what tells the reason.
      const refused = clientAuth ? socket.authorizationError : undefined;
      logger.info({
        remote: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`,
        err: refused ? `client certificate not signed by the client CA (${String(refused)})` : err.message,
        code: refused ? String(refused) : err.code ?? null,
      }, KAFKA_LOG.tlsHandshakeFailed);
    });
    return server;
  };
  const servers: Server[] = [];
  const bindHost = o.host === 'localhost' ? '127.0.0.1' : o.host;
  const main = makeServer();
  servers.push(main);
  let port: number;
  try {
    port = await listen(main, bindHost, o.port);
  } catch (err) {
    groups.close();
    topics.close();
    offsets.close();
    throw err;
  }
  if (o.host === 'localhost') {
    // `localhost` may resolve to ::1 first; listen there too on the same port so either family connects.
    const v6 = makeServer();
    try {
      await listen(v6, '::1', port);
      servers.push(v6);
    } catch {
      v6.close();
    }
  }
  const wildcard = bindHost === '0.0.0.0' || bindHost === '::';
  const host = o.advertisedHost ?? (wildcard ? '127.0.0.1' : bindHost);
  state.advertisedHost = host;
  state.advertisedPort = port;

  const fsyncTimer = o.fsync === 'interval'
    ? setInterval(() => {
      Promise.all([topics.syncAll(), offsets.sync()]).catch((err: unknown) => logger.error({ err: (err as Error).message }, KAFKA_LOG.fsyncFailed));
    }, o.fsyncIntervalMs)
    : undefined;
  fsyncTimer?.unref();

  const address = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  const saslMechanisms = sasl ? sasl.mechanisms : [];
  logger.info({ host, port, address, dataDir: dataDir ?? null, fsync: o.fsync, tls: tls !== undefined, tlsClientAuth: clientAuth, sasl: saslMechanisms }, KAFKA_LOG.listening);

  let closing: Promise<void> | undefined;
  return {
    host, port, address, dataDir, tls: tls !== undefined, tlsClientAuth: clientAuth, saslMechanisms,
    close() {
      closing ??= (async () => {
        logger.info({ address }, KAFKA_LOG.closing);
        state.closed = true;
        if (fsyncTimer) clearInterval(fsyncTimer);
        const stopped = servers.map((s) => new Promise<void>((r) => s.close(() => r())));
        for (const c of sockets) c.destroy();
        for (const raw of handshaking) raw.destroy();
        groups.close();
        for (const wake of [...state.onClose]) wake();
        await Promise.all(stopped);
        await Promise.all([topics.syncAll(), offsets.sync()]).catch((err: unknown) => logger.error({ err: (err as Error).message }, KAFKA_LOG.fsyncFailed));
        topics.close();
        offsets.close();
        logger.info({ address }, KAFKA_LOG.closed);
      })();
      return closing;
    },
  };
}
