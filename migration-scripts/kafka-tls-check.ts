/**
 * Fast, named failure for TLS certificate problems with the Kafka brokers.
 *
 * Why this exists: kafkajs 2.2.4 turns every socket error into a KafkaJSConnectionError, which is always retriable,
 * and its broker pool retries the seed connection until `retry.retries` is used up (~9 s with our settings) before
 * giving up with "Connection error: self-signed certificate". It has no option to classify a connection error
 * (`retry` takes only numbers and the consumer-only `restartOnFailure`), and a certificate that does not verify
 * will not verify on the next attempt either. So before a client first connects, `checkKafkaTls` makes one TLS
 * connection per seed broker with exactly the options kafkajs will use (its default socket factory's: servername =
 * the host unless it is an IP, then our `ssl` object), sends ApiVersions v0 and waits for the answer:
 *
 *   TLS handshake ──► server certificate verified? ──► client certificate accepted? ──► ApiVersions answered: ok
 *        │                    │ no: caFile / servername          │ no (a TLS alert, after the handshake in TLS 1.3)
 *        │                    ▼                                  ▼
 *        │            KAFKA_TLS_CERTIFICATE_REJECTED naming the config field and the TLS error code
 *        └─ refused, unreachable, timed out: inconclusive, left to kafkajs and its retries (those are transient)
 *
 * `tlsFailureOf` maps an error kafkajs gave up with (its cause chain carries the socket's TLS code) to the same
 * StranglerError, for certificate failures that start after a client is up (a broker's certificate renewed with
 * another CA).
 */
import { isIP } from 'node:net';
import { connect, type ConnectionOptions } from 'node:tls';
import { causeChain, StranglerError } from '../common/errors.ts';
import type { KafkaConfig } from './config-schema.ts';

/** Which config field a TLS failure code points at, and what to do about it. */
interface TlsCodeAdvice { readonly field: string; readonly problem: string; readonly fix: string }

const UNTRUSTED = { field: 'caFile', problem: 'the broker\'s certificate is not signed by a CA the client trusts', fix: 'set kafka.ssl.caFile to the PEM of the CA that signed the brokers\' certificates (omitted = the system CAs)' };
const EXPIRED = { field: 'caFile', problem: 'the broker\'s certificate (or a CA in its chain) is outside its validity period', fix: 'renew the brokers\' certificate (and check the clock of this machine); kafka.ssl.caFile must hold the CA that signed the renewed one' };
const CLIENT_REFUSED = { field: 'certFile', problem: 'the broker refused the client certificate', fix: 'set kafka.ssl.certFile and kafka.ssl.keyFile to a certificate signed by a CA the brokers trust for clients (their ssl.truststore), and its key' };
const NO_CLIENT_CERTIFICATE = { ...CLIENT_REFUSED, problem: 'the broker requires a client certificate (mutual TLS) and none was sent', fix: 'set kafka.ssl.certFile and kafka.ssl.keyFile to a client certificate signed by a CA the brokers trust, and its key' };

/**
 * Node/OpenSSL codes that retrying cannot fix. Server-side verification codes come from the client's own check of
 * the broker's certificate; the ERR_SSL_*_ALERT_* codes are alerts the broker sent about our certificate.
 */
const TLS_CODE_ADVICE: Readonly<Record<string, TlsCodeAdvice>> = {
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: UNTRUSTED,
  SELF_SIGNED_CERT_IN_CHAIN: UNTRUSTED,
  DEPTH_ZERO_SELF_SIGNED_CERT: UNTRUSTED,
  UNABLE_TO_GET_ISSUER_CERT: UNTRUSTED,
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: UNTRUSTED,
  UNABLE_TO_DECRYPT_CERT_SIGNATURE: UNTRUSTED,
  UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY: UNTRUSTED,
  CERT_SIGNATURE_FAILURE: UNTRUSTED,
  CERT_UNTRUSTED: UNTRUSTED,
  CERT_REJECTED: UNTRUSTED,
  INVALID_CA: UNTRUSTED,
  INVALID_PURPOSE: UNTRUSTED,
  PATH_LENGTH_EXCEEDED: UNTRUSTED,
  CERT_CHAIN_TOO_LONG: UNTRUSTED,
  CERT_HAS_EXPIRED: EXPIRED,
  CERT_NOT_YET_VALID: EXPIRED,
  ERR_TLS_CERT_ALTNAME_INVALID: {
    field: 'servername', problem: 'the broker\'s certificate does not name the host dialled',
    fix: 'dial the brokers by a name their certificate holds (kafka.brokers, and the advertised listeners), or set kafka.ssl.servername to the name it holds',
  },
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: NO_CLIENT_CERTIFICATE,
  ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE: NO_CLIENT_CERTIFICATE,
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA: CLIENT_REFUSED,
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: CLIENT_REFUSED,
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN: CLIENT_REFUSED,
  ERR_SSL_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE: CLIENT_REFUSED,
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_REVOKED: { ...CLIENT_REFUSED, problem: 'the broker says the client certificate is revoked' },
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED: { ...CLIENT_REFUSED, problem: 'the broker says the client certificate has expired' },
  ERR_SSL_TLSV1_ALERT_ACCESS_DENIED: CLIENT_REFUSED,
};

/**
 * A node TLS server (such as strangler's dev broker) cannot send a TLS alert for a client certificate it does not
 * trust: it completes the handshake and closes at once. Our label for that outcome, when we did send a certificate.
 */
export const CLOSED_AFTER_HANDSHAKE = 'CLOSED_AFTER_HANDSHAKE';
const CLOSED_ADVICE: TlsCodeAdvice = {
  ...CLIENT_REFUSED,
  problem: 'the broker closed the connection right after the TLS handshake without answering ApiVersions, twice; a broker that cannot send a TLS alert refuses a client certificate it does not trust this way',
};

/** Whether `code` is a TLS failure that retrying cannot fix. */
export function isFatalTlsCode(code: string | undefined): boolean {
  return code !== undefined && (Object.hasOwn(TLS_CODE_ADVICE, code) || code === CLOSED_AFTER_HANDSHAKE);
}

/** The StranglerError for a fatal TLS failure with `broker`: the config field to fix, the TLS code, what to do. */
export function tlsCertificateError(ssl: KafkaConfig['ssl'], broker: string, code: string, reason: string, cause?: unknown): StranglerError {
  const advice = code === CLOSED_AFTER_HANDSHAKE ? CLOSED_ADVICE : TLS_CODE_ADVICE[code] ?? UNTRUSTED;
  const field = `kafka.ssl.${advice.field}`;
  const object = typeof ssl === 'object' ? ssl : undefined;
  const current = advice.field === 'caFile' ? object?.caFile ?? '(not set: the system CAs)'
    : advice.field === 'certFile' ? object?.certFile ?? '(not set)'
      : object?.servername ?? '(not set: the host dialled)';
  return new StranglerError('KAFKA_TLS_CERTIFICATE_REJECTED',
    `${field}: ${advice.problem} (broker ${broker}, TLS ${code}: ${reason}; ${field} is ${current}); ${advice.fix}. Not retried: a certificate check fails the same way every time`,
    { ...(cause === undefined ? {} : { cause }), details: { field, tlsCode: code, broker } });
}

/**
 * The KAFKA_TLS_CERTIFICATE_REJECTED error for `err` when a TLS certificate failure is what it comes down to (for
 * example the KafkaJSNumberOfRetriesExceeded of a producer whose broker renewed its certificate); else undefined.
 */
export function tlsFailureOf(err: unknown, ssl: KafkaConfig['ssl']): StranglerError | undefined {
  if (err instanceof StranglerError && err.code === 'KAFKA_TLS_CERTIFICATE_REJECTED') return err;
  const chain = [...causeChain(err)];
  const code = chain.map((e) => e.code).find((c): c is string => typeof c === 'string' && isFatalTlsCode(c));
  if (code === undefined) return undefined;
  const broker = chain.map((e) => e.broker).find((b): b is string => typeof b === 'string') ?? '?';
  return tlsCertificateError(ssl, broker, code, tlsReason(err instanceof Error ? err.message : String(err)), err);
}

/**
 * node's message for an OpenSSL error is OpenSSL's whole error line ("8096…:error:0A00045C:SSL routines:
 * ssl3_read_bytes:tlsv13 alert certificate required:../deps/…/rec_layer_s3.c:1601:SSL alert number 116"); keep
 * the reason and the alert number.
 */
export function tlsReason(message: string): string {
  const line = message.split('\n')[0] ?? message;
  const m = /SSL routines:[^:]*:([^:]+):.*?(SSL alert number \d+)?$/.exec(line);
  return m ? `${m[1] ?? ''}${m[2] ? ` (${m[2]})` : ''}` : line;
}

/** ApiVersions v0 with correlation id 1 and a null client id: every Kafka version answers it, before SASL too. */
const API_VERSIONS_V0 = Buffer.from([0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);

export type TlsProbeOutcome =
  | { readonly kind: 'ok' }
  | { readonly kind: 'fatal'; readonly code: string; readonly reason: string; readonly cause?: unknown }
  /** Refused, reset, timed out, unresolvable: transient as far as we can tell; kafkajs retries those. */
  | { readonly kind: 'inconclusive'; readonly reason: string };

function splitBroker(broker: string): { host: string; port: number } {
  const colon = broker.lastIndexOf(':');
  const host = broker.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(broker.slice(colon + 1)) };
}

/** One TLS connection to `broker` as kafkajs would make it, up to the answer to ApiVersions v0. */
export function probeTls(broker: string, tls: ConnectionOptions, timeoutMs: number): Promise<TlsProbeOutcome> {
  const { host, port } = splitBroker(broker);
  return new Promise((resolve) => {
    let handshakeDone = false;
    let settled = false;
    const finish = (outcome: TlsProbeOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    // Same options as kafkajs's default socket factory, so the probe sees what kafkajs will see.
    const socket = connect({ host, port, ...(isIP(host) ? {} : { servername: host }), ...tls }, () => {
      handshakeDone = true;
      socket.write(API_VERSIONS_V0);
    });
    const timer = setTimeout(() => finish({ kind: 'inconclusive', reason: `no answer within ${timeoutMs} ms` }), timeoutMs);
    socket.on('data', () => finish({ kind: 'ok' }));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      finish(isFatalTlsCode(err.code)
        ? { kind: 'fatal', code: err.code as string, reason: tlsReason(err.message), cause: err }
        : { kind: 'inconclusive', reason: err.code ?? err.message });
    });
    socket.on('close', () => {
      const withCertificate = tls.cert !== undefined;
      finish(handshakeDone && withCertificate
        ? { kind: 'fatal', code: CLOSED_AFTER_HANDSHAKE, reason: 'closed by the broker after the handshake, before answering' }
        : { kind: 'inconclusive', reason: 'closed by the broker' });
    });
  });
}

/**
 * Probes every seed broker once (in parallel) and throws KAFKA_TLS_CERTIFICATE_REJECTED for the first certificate
 * failure. A silent close after the handshake is probed a second time before it counts, since a broker going down
 * at that moment looks the same once. Unreachable brokers are left to kafkajs.
 */
export async function checkTlsWithBrokers(config: Pick<KafkaConfig, 'brokers' | 'ssl' | 'connectionTimeoutMs'>, tls: ConnectionOptions): Promise<void> {
  const outcomes = await Promise.all(config.brokers.map(async (broker) => {
    let outcome = await probeTls(broker, tls, config.connectionTimeoutMs);
    if (outcome.kind === 'fatal' && outcome.code === CLOSED_AFTER_HANDSHAKE) outcome = await probeTls(broker, tls, config.connectionTimeoutMs);
    return { broker, outcome };
  }));
  for (const { broker, outcome } of outcomes) {
    if (outcome.kind === 'fatal') throw tlsCertificateError(config.ssl, broker, outcome.code, outcome.reason, outcome.cause);
  }
}
