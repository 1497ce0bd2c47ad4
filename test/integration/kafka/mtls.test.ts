/**
 * Mutual TLS on the dev broker (tls.clientCa / --tls-client-ca) with the sync's own Kafka path
 * (migration-scripts/kafka.ts from a `kafka.ssl` with caFile + certFile + keyFile): produce and consume; a client
 * without a certificate and one with a certificate from another CA refused at once with the config field to fix;
 * the broker logging the subject of each accepted client certificate and never key material; bad clientCa refused.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { KafkaBroker } from '../../../devstack/kafka/index.ts';
import { createLogger } from '../../../common/logger.ts';
import { isStranglerError } from '../../../common/errors.ts';
import { KAFKA_LOG } from '../../../devstack/kafka/log-events.ts';
import { kafkaConfigSchema, type KafkaConfig } from '../../../migration-scripts/config-schema.ts';
import { createKafka, ensureTopics, kafkaBacklog, KafkaSink } from '../../../migration-scripts/kafka.ts';
import { REPO_ROOT, roundTrip, startTestBroker, unique, waitFor } from './support.ts';

const TLS_DIR = join(REPO_ROOT, 'test/fixtures/kafka-tls');
const file = (name: string): string => join(TLS_DIR, name);
const TLS = { cert: readFileSync(file('broker.crt')), key: readFileSync(file('broker.key')), clientCa: readFileSync(file('client-ca.crt')) };
const CLIENT = { caFile: file('broker.crt'), certFile: file('client.crt'), keyFile: file('client.key') };

interface LogLine { msg: string; subject?: string; issuer?: string; code?: string | null; fingerprint256?: string }

describe('dev broker with mutual TLS (tls.clientCa)', () => {
  const lines: string[] = [];
  const events = (msg: string): LogLine[] => lines.map((l) => JSON.parse(l) as LogLine).filter((e) => e.msg === msg);
  let broker: KafkaBroker;
  const config = (ssl: Record<string, unknown>): KafkaConfig =>
    kafkaConfigSchema.parse({ brokers: [broker.address], clientId: 'mtls-test', connectionTimeoutMs: 2_000, requestTimeoutMs: 10_000, ssl });
  before(async () => {
    const destination = new Writable({ write(chunk: Buffer, _enc, done) { lines.push(chunk.toString()); done(); } });
    broker = await startTestBroker({ tls: TLS, logger: createLogger({ level: 'debug', destination }) });
  });
  after(async () => { await broker?.close(); });

  test('kafka.ssl with caFile + certFile + keyFile: the sync producer, topic setup and backlog work, and kafkajs produces and consumes', async () => {
    assert.equal(broker.tls, true);
    assert.equal(broker.tlsClientAuth, true);
    const kafka = createKafka(config(CLIENT), 'mtls');
    const topic = unique('mtls');
    await ensureTopics(kafka, [topic], 1);
    const sink = await KafkaSink.connect(kafka);
    try {
      await sink.publish([{ topic, key: 'k1', value: 'one', position: 1 }, { topic, key: 'k2', value: 'two', position: 2 }]);
    } finally {
      await sink.close();
    }
    assert.equal(await kafkaBacklog(kafka, [topic], () => Promise.resolve(new Map<number, string>())), 2);
    await roundTrip(kafka);
  });

  test('the broker logs the subject, issuer and fingerprint of each accepted client certificate, and no key material', () => {
    const accepted = events(KAFKA_LOG.tlsClientCertificate);
    assert.ok(accepted.length > 0);
    for (const e of accepted) {
      assert.equal(e.subject, 'CN=strangler-sync, O=strangler test');
      assert.equal(e.issuer, 'CN=strangler test: client CA');
      assert.match(e.fingerprint256 ?? '', /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    }
    const all = lines.join('');
    const keyBody = readFileSync(file('client.key'), 'utf8').split('\n')[1] ?? '';
    assert.ok(keyBody.length > 20 && !all.includes(keyBody) && !all.includes('PRIVATE KEY'), 'no key material in the broker log');
  });

  test('without a client certificate: refused at once with KAFKA_TLS_CERTIFICATE_REJECTED naming kafka.ssl.certFile and the TLS alert', async () => {
    const refusedBefore = events(KAFKA_LOG.tlsHandshakeFailed).length;
    const kafka = createKafka(config({ caFile: CLIENT.caFile }), 'mtls-no-cert');
    const started = Date.now();
    await assert.rejects(KafkaSink.connect(kafka), (err: unknown) => {
      assert.ok(isStranglerError(err));
      assert.equal(err.code, 'KAFKA_TLS_CERTIFICATE_REJECTED');
      assert.deepEqual(err.details, { field: 'kafka.ssl.certFile', tlsCode: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', broker: broker.address });
      assert.match(err.message, /^kafka\.ssl\.certFile: the broker requires a client certificate \(mutual TLS\) and none was sent/);
      assert.ok(err.message.includes('TLS ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: tlsv13 alert certificate required (SSL alert number 116); kafka.ssl.certFile is (not set)'), err.message);
      assert.equal(err.retriable, false);
      return true;
    });
    // One probe, and kafkajs never dialled: exactly one refused handshake (its retry path makes nine, over ~9 s).
    await waitFor('the broker to log the refusal', () => events(KAFKA_LOG.tlsHandshakeFailed).length > refusedBefore, 2_000);
    const refused = events(KAFKA_LOG.tlsHandshakeFailed).slice(refusedBefore);
    assert.deepEqual(refused.map((e) => e.code), ['ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE']);
    assert.ok(Date.now() - started < 5_000, 'far from the ~9 s of kafkajs retries');
  });

  test('with a certificate from another CA: refused at once naming kafka.ssl.certFile; the broker logs why', async () => {
    const refusedBefore = events(KAFKA_LOG.tlsHandshakeFailed).length;
    const kafka = createKafka(config({ ...CLIENT, certFile: file('untrusted-client.crt'), keyFile: file('untrusted-client.key') }), 'mtls-untrusted');
    await assert.rejects(ensureTopics(kafka, [unique('never')], 1), (err: unknown) => {
      assert.ok(isStranglerError(err));
      assert.equal(err.code, 'KAFKA_TLS_CERTIFICATE_REJECTED');
      // node's TLS server sends no alert for an untrusted certificate (real Kafka sends one): it completes the
      // handshake and closes, which the check recognises when it happens twice in a row.
      assert.deepEqual(err.details, { field: 'kafka.ssl.certFile', tlsCode: 'CLOSED_AFTER_HANDSHAKE', broker: broker.address });
      assert.match(err.message, /untrusted-client\.crt/);
      return true;
    });
    await waitFor('the broker to log both refusals', () => events(KAFKA_LOG.tlsHandshakeFailed).length >= refusedBefore + 2, 2_000);
    const refused = events(KAFKA_LOG.tlsHandshakeFailed).slice(refusedBefore);
    assert.deepEqual(refused.map((e) => e.code), ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'], 'two probes, no kafkajs attempt');
  });

  test('after the refusals the broker still serves a client with a good certificate', async () => {
    await roundTrip(createKafka(config(CLIENT), 'mtls-after'));
  });
});

describe('dev broker tls.clientCa validation', () => {
  test('a clientCa that holds no certificate, or one that does not parse, is KAFKA_DEV_BROKER_OPTIONS_INVALID', async () => {
    const attempts: [string | Buffer, RegExp][] = [
      [readFileSync(file('client.key')), /tls\.clientCa \(--tls-client-ca\) holds no "-----BEGIN CERTIFICATE-----" block/],
      ['-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n', /certificate 1 of 1 does not parse/],
    ];
    for (const [clientCa, message] of attempts) {
      await assert.rejects(startTestBroker({ tls: { cert: TLS.cert, key: TLS.key, clientCa } }), (err: unknown) => {
        assert.ok(isStranglerError(err));
        assert.equal(err.code, 'KAFKA_DEV_BROKER_OPTIONS_INVALID');
        assert.match(err.message, message);
        return true;
      });
    }
  });

  test('a certificate with a key that is not its own is KAFKA_DEV_BROKER_OPTIONS_INVALID before the broker opens anything', async () => {
    await assert.rejects(startTestBroker({ tls: { cert: TLS.cert, key: readFileSync(file('client.key')) } }), (err: unknown) => {
      assert.ok(isStranglerError(err));
      assert.equal(err.code, 'KAFKA_DEV_BROKER_OPTIONS_INVALID');
      assert.match(err.message, /the TLS certificate or key is not usable/);
      return true;
    });
  });
});
