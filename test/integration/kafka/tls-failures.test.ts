/**
 * TLS certificate failures fail fast through the sync's Kafka path (migration-scripts/kafka.ts): a wrong CA file
 * (the other-ca.crt fixture) and a host name the broker's certificate does not hold stop the relay's producer, topic
 * setup and the status backlog at once with KAFKA_TLS_CERTIFICATE_REJECTED naming the config field and the TLS code,
 * after exactly one TLS attempt (kafkajs's own retry path makes nine over ~9 s); an unreachable broker is not
 * mistaken for one.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { KafkaBroker } from '../../../devstack/kafka/index.ts';
import { createLogger } from '../../../common/logger.ts';
import { isStranglerError } from '../../../common/errors.ts';
import { freePort } from '../../../common/net.ts';
import { KAFKA_LOG } from '../../../devstack/kafka/log-events.ts';
import { kafkaConfigSchema, type KafkaConfig } from '../../../migration-scripts/config-schema.ts';
import { createKafka, ensureTopics, kafkaBacklog, KafkaSink } from '../../../migration-scripts/kafka.ts';
import { probeTls } from '../../../migration-scripts/kafka-tls-check.ts';
import { REPO_ROOT, startTestBroker, unique, waitFor } from './support.ts';

const TLS_DIR = join(REPO_ROOT, 'test/fixtures/kafka-tls');
const TLS = { cert: readFileSync(join(TLS_DIR, 'broker.crt')), key: readFileSync(join(TLS_DIR, 'broker.key')) };
const OTHER_CA = join(TLS_DIR, 'other-ca.crt');

describe('TLS certificate failures with the dev broker fail fast and name the config field', () => {
  const lines: string[] = [];
  const handshakeFailures = (): number => lines.filter((l) => (JSON.parse(l) as { msg: string }).msg === KAFKA_LOG.tlsHandshakeFailed).length;
  let broker: KafkaBroker;
  const config = (ssl: Record<string, unknown>, brokers = [broker.address]): KafkaConfig =>
    kafkaConfigSchema.parse({ brokers, clientId: 'tls-failures', connectionTimeoutMs: 2_000, requestTimeoutMs: 10_000, ssl });
  before(async () => {
    const destination = new Writable({ write(chunk: Buffer, _enc, done) { lines.push(chunk.toString()); done(); } });
    broker = await startTestBroker({ tls: TLS, logger: createLogger({ level: 'info', destination }) });
  });
  after(async () => { await broker?.close(); });

  /** `what` rejects with KAFKA_TLS_CERTIFICATE_REJECTED for `field`/`tlsCode` after one refused handshake, well under 5 s. */
  async function failsFast(what: () => Promise<unknown>, field: string, tlsCode: string): Promise<void> {
    const before = handshakeFailures();
    const started = Date.now();
    await assert.rejects(what(), (err: unknown) => {
      assert.ok(isStranglerError(err), String(err));
      assert.equal(err.code, 'KAFKA_TLS_CERTIFICATE_REJECTED');
      assert.equal(err.retriable, false);
      assert.deepEqual(err.details, { field, tlsCode, broker: broker.address });
      assert.ok(err.message.startsWith(`${field}: `), err.message);
      return true;
    });
    assert.ok(Date.now() - started < 5_000, 'far from the ~9 s of kafkajs retries');
    // The probe is the only attempt: kafkajs never dialled (its retry path would add a refused handshake per retry).
    // The broker notices the client's alert a moment after the client gave up, hence the wait.
    await waitFor('the broker to log the refused handshake', () => handshakeFailures() > before, 2_000);
    assert.equal(handshakeFailures() - before, 1, 'exactly one TLS handshake attempt');
  }

  test('kafka.ssl.caFile of another CA (other-ca.crt): relay producer, topic setup and status backlog each stop at once', async () => {
    const kafka = createKafka(config({ caFile: OTHER_CA }), 'wrong-ca');
    await failsFast(() => KafkaSink.connect(kafka), 'kafka.ssl.caFile', 'DEPTH_ZERO_SELF_SIGNED_CERT');
    await failsFast(() => ensureTopics(kafka, [unique('never')], 1), 'kafka.ssl.caFile', 'DEPTH_ZERO_SELF_SIGNED_CERT');
    await failsFast(() => kafkaBacklog(kafka, ['t'], () => Promise.resolve(new Map<number, string>())), 'kafka.ssl.caFile', 'DEPTH_ZERO_SELF_SIGNED_CERT');
  });

  test('the message says what is wrong, with the file configured and the TLS code', async () => {
    const kafka = createKafka(config({ caFile: OTHER_CA }), 'wrong-ca-message');
    await assert.rejects(KafkaSink.connect(kafka), (err: unknown) => {
      assert.ok(isStranglerError(err));
      assert.ok(err.message.includes(`kafka.ssl.caFile: the broker's certificate is not signed by a CA the client trusts (broker ${broker.address}, TLS DEPTH_ZERO_SELF_SIGNED_CERT: self-signed certificate; kafka.ssl.caFile is ${OTHER_CA})`), err.message);
      return true;
    });
  });

  test('a host name the certificate does not hold (kafka.ssl.servername): ERR_TLS_CERT_ALTNAME_INVALID at once', async () => {
    const kafka = createKafka(config({ caFile: join(TLS_DIR, 'broker.crt'), servername: 'kafka.internal' }), 'wrong-name');
    await failsFast(() => KafkaSink.connect(kafka), 'kafka.ssl.servername', 'ERR_TLS_CERT_ALTNAME_INVALID');
  });

  test('the right CA passes the check once per client, and the client works', async () => {
    const kafka = createKafka(config({ caFile: join(TLS_DIR, 'broker.crt') }), 'right-ca');
    const topic = unique('tls-ok');
    await ensureTopics(kafka, [topic], 1);
    const sink = await KafkaSink.connect(kafka);
    await sink.publish([{ topic, key: 'k', value: 'v', position: 1 }]);
    await sink.close();
    assert.equal(await kafkaBacklog(kafka, [topic], () => Promise.resolve(new Map<number, string>())), 1);
  });

  test('an unreachable broker is inconclusive, not a certificate failure (kafkajs retries those)', async () => {
    const port = await freePort();
    assert.deepEqual(await probeTls(`127.0.0.1:${port}`, { ca: [TLS.cert] }, 2_000), { kind: 'inconclusive', reason: 'ECONNREFUSED' });
    // A plaintext listener answering garbage to the ClientHello is not a certificate failure either.
    const plain = await startTestBroker();
    try {
      const outcome = await probeTls(plain.address, { ca: [TLS.cert] }, 2_000);
      assert.equal(outcome.kind, 'inconclusive');
    } finally {
      await plain.close();
    }
  });
});
