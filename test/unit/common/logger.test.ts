import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { createLogger } from '../../../common/logger.ts';

function capture(): { stream: Writable; text: () => string } {
  const chunks: string[] = [];
  return {
    stream: new Writable({ write(chunk: Buffer, _enc, done) { chunks.push(chunk.toString()); done(); } }),
    text: () => chunks.join(''),
  };
}

test('credentials are redacted wherever they appear in a log line', () => {
  const out = capture();
  const log = createLogger({ destination: out.stream, level: 'info' });
  log.info({ req: { headers: { authorization: 'Bearer s3cret-a', cookie: 'sid=s3cret-b', 'x-strangler-override': 's3cret-c', accept: 'text/html' } } }, 'request');
  log.info({ token: 's3cret-d', upstream: { token: 's3cret-e', password: 's3cret-f' }, config: { admin: { token: 's3cret-g' }, flags: { token: 's3cret-h' } } }, 'config');
  const text = out.text();
  for (const secret of ['s3cret-a', 's3cret-b', 's3cret-c', 's3cret-d', 's3cret-e', 's3cret-f', 's3cret-g', 's3cret-h']) assert.ok(!text.includes(secret), `${secret} leaked: ${text}`);
  assert.ok(text.includes('text/html'), 'other fields are kept');
  assert.equal(text.split('[redacted]').length - 1, 8);
});

test('a Kafka SASL password is redacted however deep the kafka section is logged', () => {
  const out = capture();
  const log = createLogger({ destination: out.stream, level: 'info' });
  const kafka = { brokers: ['k:9093'], sasl: { mechanism: 'scram-sha-512', username: 'sync', password: 's3cret-k1' } };
  log.info({ kafka }, 'kafka');
  log.info({ config: { kafka: { ...kafka, sasl: { ...kafka.sasl, password: 's3cret-k2' } } } }, 'config');
  log.info({ worker: { kafka: { ...kafka, sasl: { ...kafka.sasl, password: 's3cret-k3' } } } }, 'nested');
  const text = out.text();
  for (const secret of ['s3cret-k1', 's3cret-k2', 's3cret-k3']) assert.ok(!text.includes(secret), `${secret} leaked: ${text}`);
  assert.ok(text.includes('"username":"sync"'), 'the user name is kept');
});
