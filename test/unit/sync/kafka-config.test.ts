/**
 * The kafka section's TLS and SASL settings: schema defaults and refusals, ${ENV} expansion of the password,
 * PEM files read when the client is created (a missing one names the config field and the path), and the
 * password never appearing in a logged sasl object.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { ConfigError, validateConfig } from '../../../gateway/config/load.ts';
import { kafkaConfigSchema } from '../../../migration-scripts/config-schema.ts';
import { createKafka, kafkaTlsOptions } from '../../../migration-scripts/kafka.ts';
import { isStranglerError } from '../../../common/errors.ts';
import { createLogger } from '../../../common/logger.ts';

const TLS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../fixtures/kafka-tls');

const gatewayBase = () => ({
  upstreams: [{ id: 'legacy', url: 'http://127.0.0.1:1' }, { id: 'svc', url: 'http://127.0.0.1:2' }],
  routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy', service: 'svc' }],
});

test('ssl defaults to false and sasl to none; existing kafka sections parse as before', () => {
  const parsed = kafkaConfigSchema.parse({ brokers: ['k:9092'] });
  assert.equal(parsed.ssl, false);
  assert.equal(parsed.sasl, undefined);
  assert.equal(kafkaTlsOptions(parsed.ssl), false);
});

test('ssl: true means the system CAs; an object gets rejectUnauthorized true unless told otherwise', () => {
  assert.equal(kafkaConfigSchema.parse({ brokers: ['k:9093'], ssl: true }).ssl, true);
  assert.deepEqual(kafkaConfigSchema.parse({ brokers: ['k:9093'], ssl: { caFile: 'ca.pem' } }).ssl, { caFile: 'ca.pem', rejectUnauthorized: true });
  assert.deepEqual(kafkaConfigSchema.parse({ brokers: ['k:9093'], ssl: { rejectUnauthorized: false, servername: 'kafka.internal' } }).ssl, { rejectUnauthorized: false, servername: 'kafka.internal' });
});

test('refused: an unknown ssl field, a client certificate without its key, an unknown mechanism, an empty password', () => {
  const bad: unknown[] = [
    { ssl: { ca: 'x' } },
    { ssl: { certFile: 'c.pem' } },
    { ssl: 'yes' },
    { sasl: { mechanism: 'gssapi', username: 'u', password: 'p' } },
    { sasl: { mechanism: 'PLAIN', username: 'u', password: 'p' } },
    { sasl: { mechanism: 'plain', username: 'u', password: '' } },
    { sasl: { mechanism: 'plain', username: 'u' } },
  ];
  for (const extra of bad) {
    const result = kafkaConfigSchema.safeParse({ brokers: ['k:9092'], ...(extra as object) });
    assert.equal(result.success, false, JSON.stringify(extra));
  }
});

test('the SASL password comes from ${ENV} when the config file is loaded; a missing variable is a config problem', () => {
  const doc = { ...gatewayBase(), kafka: { brokers: ['k:9093'], ssl: true, sasl: { mechanism: 'scram-sha-512', username: 'strangler', password: '${KAFKA_PASSWORD}' } } };
  const loaded = validateConfig(doc, 'strangler.yaml', { KAFKA_PASSWORD: 'from-the-environment' });
  assert.deepEqual(loaded.kafka?.sasl, { mechanism: 'scram-sha-512', username: 'strangler', password: 'from-the-environment' });
  assert.throws(() => validateConfig(doc, 'strangler.yaml', {}), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /kafka\.sasl\.password: expected environment variable KAFKA_PASSWORD to be set/);
    return true;
  });
});

test('PEM files are read when the client options are built', () => {
  const options = kafkaTlsOptions({ caFile: join(TLS_DIR, 'broker.crt'), certFile: join(TLS_DIR, 'broker.crt'), keyFile: join(TLS_DIR, 'broker.key'), rejectUnauthorized: true, servername: 'localhost' });
  assert.ok(typeof options === 'object');
  assert.deepEqual(options.ca, [readFileSync(join(TLS_DIR, 'broker.crt'))]);
  assert.deepEqual(options.key, readFileSync(join(TLS_DIR, 'broker.key')));
  assert.equal(options.servername, 'localhost');
  assert.equal(options.rejectUnauthorized, true);
});

test('a missing or unreadable PEM file fails createKafka with the config field and the path', () => {
  const missing = join(TLS_DIR, 'no-such-ca.pem');
  const cases: [string, Record<string, unknown>, string][] = [
    ['caFile', { caFile: missing }, missing],
    ['keyFile', { certFile: join(TLS_DIR, 'broker.crt'), keyFile: TLS_DIR }, TLS_DIR],
  ];
  for (const [field, ssl, path] of cases) {
    const config = kafkaConfigSchema.parse({ brokers: ['127.0.0.1:9'], ssl });
    assert.throws(() => createKafka(config, 'test'), (err: unknown) => {
      assert.ok(isStranglerError(err));
      assert.equal(err.code, 'KAFKA_TLS_FILE_UNREADABLE');
      assert.ok(err.message.startsWith(`kafka.ssl.${field}: cannot read "${path}"`), err.message);
      assert.match(err.message, /ENOENT|EISDIR/);
      return true;
    });
  }
});

test('a logged sasl object shows no password (pino redacts *.password)', () => {
  const lines: string[] = [];
  const destination = new Writable({ write(chunk: Buffer, _enc, done) { lines.push(chunk.toString()); done(); } });
  const log = createLogger({ destination });
  log.info({ sasl: { mechanism: 'plain', username: 'u', password: 'logged-sasl-secret' } }, 'sasl');
  assert.equal(lines.length, 1);
  assert.ok(!lines[0]!.includes('logged-sasl-secret'), lines[0]);
  assert.match(lines[0]!, /"password":"\[redacted\]"/);
});
