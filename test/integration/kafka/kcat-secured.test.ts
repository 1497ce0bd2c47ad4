/**
 * librdkafka 2.0.2 (Debian's kcat) against the dev broker with TLS and SASL: security.protocol SSL, SASL_SSL with
 * PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, SASL_PLAINTEXT, and mutual TLS (ssl.certificate.location and
 * ssl.key.location): metadata (-L) and a -P/-C round trip each; a wrong password, a wrong CA, a missing client
 * certificate and one from another CA are refused. Without kcat on PATH these tests are reported as skipped with the reason;
 * under CI (CI=true) a missing kcat is a failure.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { KafkaBroker } from '../../../devstack/kafka/index.ts';
import { kcat, kcatSkip, REPO_ROOT, startTestBroker, unique } from './support.ts';

const skip = kcatSkip('the librdkafka TLS/SASL tests');

const TLS_DIR = join(REPO_ROOT, 'test/fixtures/kafka-tls');
const CA = join(TLS_DIR, 'broker.crt');
const TLS = { cert: readFileSync(CA), key: readFileSync(join(TLS_DIR, 'broker.key')) };
const USERS = { kcat: 'kcat-secret-password' };

function security(protocol: string, options: { mechanism?: string; password?: string; ca?: string; cert?: string; key?: string } = {}): string[] {
  const out = ['-X', `security.protocol=${protocol}`];
  if (options.mechanism) out.push('-X', `sasl.mechanisms=${options.mechanism}`, '-X', 'sasl.username=kcat', '-X', `sasl.password=${options.password ?? USERS.kcat}`);
  if (options.ca) out.push('-X', `ssl.ca.location=${options.ca}`);
  if (options.cert) out.push('-X', `ssl.certificate.location=${options.cert}`);
  if (options.key) out.push('-X', `ssl.key.location=${options.key}`);
  return out;
}

/** -L shows the broker as controller; -P then -C -o beginning -e prints exactly what was produced. */
async function metadataAndRoundTrip(broker: KafkaBroker, sec: string[]): Promise<void> {
  const listed = await kcat(['-b', broker.address, ...sec, '-L']);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, new RegExp(`broker 0 at ${broker.address.replace(/\./g, '\\.')} \\(controller\\)`));
  const topic = unique('kcat-secured');
  const produced = await kcat(['-b', broker.address, ...sec, '-P', '-t', topic, '-K:'], 'a:first\nb:second\n');
  assert.equal(produced.code, 0, produced.stderr);
  const consumed = await kcat(['-b', broker.address, ...sec, '-C', '-t', topic, '-o', 'beginning', '-e', '-f', '%k=%s\n']);
  assert.equal(consumed.code, 0, consumed.stderr);
  assert.equal(consumed.stdout, 'a=first\nb=second\n');
}

describe('kcat (librdkafka) against the dev broker with TLS and SASL', { skip }, () => {
  let tlsOnly: KafkaBroker;
  let saslSsl: KafkaBroker;
  let saslPlaintext: KafkaBroker;
  let mutual: KafkaBroker;
  before(async () => {
    tlsOnly = await startTestBroker({ tls: TLS });
    mutual = await startTestBroker({ tls: { ...TLS, clientCa: readFileSync(join(TLS_DIR, 'client-ca.crt')) }, sasl: { users: USERS } });
    saslSsl = await startTestBroker({ tls: TLS, sasl: { users: USERS } });
    saslPlaintext = await startTestBroker({ sasl: { users: USERS, mechanisms: ['SCRAM-SHA-256'] } });
  });
  after(async () => {
    await tlsOnly?.close();
    await saslSsl?.close();
    await saslPlaintext?.close();
    await mutual?.close();
  });

  test('security.protocol=SSL with the broker certificate as CA: -L and a -P/-C round trip', async () => {
    await metadataAndRoundTrip(tlsOnly, security('SSL', { ca: CA }));
  });

  test('SASL_SSL with PLAIN: -L and a -P/-C round trip', async () => {
    await metadataAndRoundTrip(saslSsl, security('SASL_SSL', { mechanism: 'PLAIN', ca: CA }));
  });

  test('SASL_SSL with SCRAM-SHA-256 and SCRAM-SHA-512: -L and a -P/-C round trip each', async () => {
    await metadataAndRoundTrip(saslSsl, security('SASL_SSL', { mechanism: 'SCRAM-SHA-256', ca: CA }));
    await metadataAndRoundTrip(saslSsl, security('SASL_SSL', { mechanism: 'SCRAM-SHA-512', ca: CA }));
  });

  test('SASL_PLAINTEXT with SCRAM-SHA-256: -L and a -P/-C round trip', async () => {
    await metadataAndRoundTrip(saslPlaintext, security('SASL_PLAINTEXT', { mechanism: 'SCRAM-SHA-256' }));
  });

  test('a wrong password is reported as a SASL authentication error with the broker\'s message', async () => {
    for (const mechanism of ['PLAIN', 'SCRAM-SHA-512']) {
      const run = await kcat(['-b', saslSsl.address, ...security('SASL_SSL', { mechanism, password: 'wrong', ca: CA }), '-L', '-m', '2']);
      assert.notEqual(run.code, 0);
      assert.match(run.stderr, /SASL authentication error: Authentication failed/, mechanism);
      assert.ok(!run.stderr.includes(USERS.kcat));
    }
  });

  test('a wrong CA fails certificate verification', async () => {
    const run = await kcat(['-b', saslSsl.address, ...security('SASL_SSL', { mechanism: 'PLAIN', ca: join(TLS_DIR, 'other-ca.crt') }), '-L', '-m', '2']);
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /certificate verify failed|SSL handshake failed/);
  });

  test('mutual TLS: ssl.certificate.location + ssl.key.location with SASL_SSL: -L and a -P/-C round trip', async () => {
    await metadataAndRoundTrip(mutual, security('SASL_SSL', { mechanism: 'SCRAM-SHA-256', ca: CA, cert: join(TLS_DIR, 'client.crt'), key: join(TLS_DIR, 'client.key') }));
  });

  test('mutual TLS: without a client certificate the broker refuses the handshake (certificate required)', async () => {
    const run = await kcat(['-b', mutual.address, ...security('SASL_SSL', { mechanism: 'SCRAM-SHA-256', ca: CA }), '-L', '-m', '2']);
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /certificate required/);
  });

  test('mutual TLS: a certificate from another CA gets no metadata (the broker closes after the handshake)', async () => {
    const run = await kcat(['-b', mutual.address, ...security('SASL_SSL', { mechanism: 'SCRAM-SHA-256', ca: CA, cert: join(TLS_DIR, 'untrusted-client.crt'), key: join(TLS_DIR, 'untrusted-client.key') }), '-L', '-m', '2']);
    assert.notEqual(run.code, 0);
    assert.doesNotMatch(run.stdout, /broker 0 at/);
    // librdkafka 2.0.2: "Receive failed: …unexpected eof while reading (after 0ms in state APIVERSION_QUERY)".
    assert.match(run.stderr, /unexpected eof while reading \(after \d+ms in state APIVERSION_QUERY/);
  });
});
