/**
 * Classifying TLS failures with Kafka brokers (migration-scripts/kafka-tls-check.ts): which codes are final and which
 * config field each points at; kafkajs's own errors (its retries exhausted on a certificate failure) mapped to the
 * same error; a client certificate and key that do not make a pair; retryTransient leaving a final error alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import kafkajs from 'kafkajs';
import { isStranglerError, StranglerError } from '../../../common/errors.ts';
import { CLOSED_AFTER_HANDSHAKE, isFatalTlsCode, tlsCertificateError, tlsFailureOf, tlsReason } from '../../../migration-scripts/kafka-tls-check.ts';
import { kafkaRetry, kafkaTlsOptions } from '../../../migration-scripts/kafka.ts';
import { retryTransient } from '../../../migration-scripts/db.ts';

// kafkajs spreads its error classes into module.exports, which node's named-export detection for CommonJS misses.
const { KafkaJSConnectionError, KafkaJSNumberOfRetriesExceeded } = kafkajs;
const TLS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../fixtures/kafka-tls');
const SSL = { caFile: '/etc/strangler/kafka-ca.pem', certFile: '/etc/strangler/client.pem', keyFile: '/etc/strangler/client.key', rejectUnauthorized: true };

test('each final TLS code names the config field to fix, the code and the current value of that field', () => {
  const cases: [string, string, RegExp][] = [
    ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'kafka.ssl.caFile', /not signed by a CA the client trusts.*kafka\.ssl\.caFile is \/etc\/strangler\/kafka-ca\.pem/],
    ['SELF_SIGNED_CERT_IN_CHAIN', 'kafka.ssl.caFile', /not signed by a CA the client trusts/],
    ['DEPTH_ZERO_SELF_SIGNED_CERT', 'kafka.ssl.caFile', /not signed by a CA the client trusts/],
    ['CERT_HAS_EXPIRED', 'kafka.ssl.caFile', /outside its validity period.*renew/],
    ['CERT_NOT_YET_VALID', 'kafka.ssl.caFile', /outside its validity period.*clock/],
    ['ERR_TLS_CERT_ALTNAME_INVALID', 'kafka.ssl.servername', /does not name the host dialled.*kafka\.ssl\.servername is \(not set: the host dialled\)/],
    ['ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', 'kafka.ssl.certFile', /requires a client certificate/],
    ['ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', 'kafka.ssl.certFile', /refused the client certificate.*kafka\.ssl\.certFile is \/etc\/strangler\/client\.pem/],
    ['ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE', 'kafka.ssl.certFile', /refused the client certificate/],
    ['ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED', 'kafka.ssl.certFile', /client certificate has expired/],
    [CLOSED_AFTER_HANDSHAKE, 'kafka.ssl.certFile', /closed the connection right after the TLS handshake/],
  ];
  for (const [code, field, message] of cases) {
    assert.ok(isFatalTlsCode(code), code);
    const err = tlsCertificateError(SSL, 'kafka-1:9093', code, 'reason from node');
    assert.equal(err.code, 'KAFKA_TLS_CERTIFICATE_REJECTED');
    assert.equal(err.retriable, false);
    assert.deepEqual(err.details, { field, tlsCode: code, broker: 'kafka-1:9093' });
    assert.ok(err.message.startsWith(`${field}: `), err.message);
    assert.match(err.message, new RegExp(`TLS ${code}: reason from node`));
    assert.match(err.message, message, code);
  }
  assert.match(tlsCertificateError(true, 'k:1', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'x').message, /kafka\.ssl\.caFile is \(not set: the system CAs\)/);
});

test('network failures are not TLS certificate failures: kafkajs keeps retrying those', () => {
  for (const code of ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EPIPE', undefined]) assert.equal(isFatalTlsCode(code), false, String(code));
});

test('kafkajs giving up on a certificate failure (retries exceeded, the socket code inside) maps to the same error', () => {
  const connection = new KafkaJSConnectionError('Connection error: self-signed certificate', { broker: '127.0.0.1:9093', code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
  const exhausted = new KafkaJSNumberOfRetriesExceeded(connection, { retryCount: 8, retryTime: 2_000 });
  const mapped = tlsFailureOf(exhausted, SSL);
  assert.ok(mapped);
  assert.deepEqual(mapped.details, { field: 'kafka.ssl.caFile', tlsCode: 'DEPTH_ZERO_SELF_SIGNED_CERT', broker: '127.0.0.1:9093' });
  assert.equal(mapped.cause, exhausted);
  assert.equal(tlsFailureOf(mapped, SSL), mapped, 'already mapped');
  const refused = new KafkaJSNumberOfRetriesExceeded(new KafkaJSConnectionError('Connection error: connect ECONNREFUSED', { broker: 'b:1', code: 'ECONNREFUSED' }), { retryCount: 8, retryTime: 2_000 });
  assert.equal(tlsFailureOf(refused, SSL), undefined);
  assert.equal(tlsFailureOf(new Error('plain'), SSL), undefined);
});

test('a client certificate with a key that is not its own: KAFKA_TLS_KEY_MISMATCH naming both files, at client creation', () => {
  const certFile = join(TLS_DIR, 'client.crt');
  const keyFile = join(TLS_DIR, 'untrusted-client.key');
  assert.throws(() => kafkaTlsOptions({ caFile: join(TLS_DIR, 'broker.crt'), certFile, keyFile, rejectUnauthorized: true }), (err: unknown) => {
    assert.ok(isStranglerError(err));
    assert.equal(err.code, 'KAFKA_TLS_KEY_MISMATCH');
    assert.ok(err.message.includes(`kafka.ssl.certFile "${certFile}" and kafka.ssl.keyFile "${keyFile}" are not a usable pair`), err.message);
    assert.match(err.message, /KEY_VALUES_MISMATCH/);
    return true;
  });
  const ok = kafkaTlsOptions({ certFile, keyFile: join(TLS_DIR, 'client.key'), rejectUnauthorized: true });
  assert.ok(typeof ok === 'object' && ok.cert !== undefined && ok.key !== undefined);
});

test('retryTransient does not retry a StranglerError that is not retriable, even if its message says "Connection"', async () => {
  let calls = 0;
  const final = new StranglerError('KAFKA_TLS_CERTIFICATE_REJECTED', 'kafka.ssl.caFile: … (TLS X: Connection error: self-signed certificate)');
  await assert.rejects(retryTransient('test', () => { calls += 1; return Promise.reject(final); }, 5_000), final);
  assert.equal(calls, 1);
});

test('retry.restartOnFailure (kafkajs\'s hook for a crashed consumer): no restart for a certificate failure, restart otherwise', async () => {
  const { restartOnFailure } = kafkaRetry({ ssl: SSL });
  assert.ok(restartOnFailure);
  const certificate = new KafkaJSNumberOfRetriesExceeded(new KafkaJSConnectionError('Connection error: unable to verify the first certificate', { broker: 'b:1', code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' }), { retryCount: 8, retryTime: 2_000 });
  assert.equal(await restartOnFailure(certificate), false);
  const network = new KafkaJSNumberOfRetriesExceeded(new KafkaJSConnectionError('Connection error: read ECONNRESET', { broker: 'b:1', code: 'ECONNRESET' }), { retryCount: 8, retryTime: 2_000 });
  assert.equal(await restartOnFailure(network), true);
});

test('OpenSSL\'s error line is cut to its reason and alert number; other messages stay as they are', () => {
  assert.equal(tlsReason('809CC53D477F0000:error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 116\n'),
    'tlsv13 alert certificate required (SSL alert number 116)');
  assert.equal(tlsReason('80AC:error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:../deps/openssl/openssl/ssl/statem/statem_clnt.c:1889:'), 'certificate verify failed');
  assert.equal(tlsReason('self-signed certificate'), 'self-signed certificate');
  assert.equal(tlsReason('Connection error: unable to verify the first certificate'), 'Connection error: unable to verify the first certificate');
});
