/**
 * TLS and SASL on the dev broker, through strangler's own client factory (migration-scripts/kafka.ts createKafka
 * with the config schema's ssl/sasl settings) and at the protocol level: TLS only, SASL PLAIN over TLS,
 * SCRAM-SHA-256 (SASL_PLAINTEXT) and SCRAM-SHA-512 (SASL_SSL) produce → consume round trips, a wrong password
 * failing fast and clearly, a wrong CA failing in plain kafkajs with the TLS code in its error, and the pre-authentication rules (only ApiVersions and the SASL APIs).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { KafkaBroker } from '../../../devstack/kafka/index.ts';
import { ApiKey } from '../../../devstack/kafka/protocol/api-keys.ts';
import { KafkaError } from '../../../devstack/kafka/protocol/error-codes.ts';
import { Reader } from '../../../devstack/kafka/protocol/reader.ts';
import { Writer } from '../../../devstack/kafka/protocol/writer.ts';
import { createLogger } from '../../../common/logger.ts';
import { KAFKA_LOG } from '../../../devstack/kafka/log-events.ts';
import { kafkaConfigSchema, type KafkaConfig } from '../../../migration-scripts/config-schema.ts';
import { createKafka } from '../../../migration-scripts/kafka.ts';
import { tlsFailureOf } from '../../../migration-scripts/kafka-tls-check.ts';
import { RawClient, requestFrame } from './raw-client.ts';
import { failsClearly, REPO_ROOT, roundTrip, startTestBroker } from './support.ts';

const TLS_DIR = join(REPO_ROOT, 'test/fixtures/kafka-tls');
const TLS = { cert: readFileSync(join(TLS_DIR, 'broker.crt')), key: readFileSync(join(TLS_DIR, 'broker.key')) };
const CA_FILE = join(TLS_DIR, 'broker.crt');
const USERS = { strangler: 'correct horse battery staple', other: 'p@ss:w,o=rd' };

function clientConfig(broker: KafkaBroker, extra: Record<string, unknown>): KafkaConfig {
  return kafkaConfigSchema.parse({ brokers: [broker.address], clientId: 'secured-test', connectionTimeoutMs: 2_000, requestTimeoutMs: 10_000, ...extra });
}

describe('dev broker with TLS only (Kafka SSL listener)', () => {
  let broker: KafkaBroker;
  before(async () => { broker = await startTestBroker({ tls: TLS }); });
  after(async () => { await broker?.close(); });

  test('createKafka with ssl.caFile: produce and consume round trip', async () => {
    assert.equal(broker.tls, true);
    await roundTrip(createKafka(clientConfig(broker, { ssl: { caFile: CA_FILE } }), 'tls'));
  });

  test('servername (SNI and the name checked in the certificate) and rejectUnauthorized: false reach kafkajs', async () => {
    const admin = createKafka(clientConfig(broker, { ssl: { caFile: CA_FILE, servername: 'localhost' } }), 'servername').admin();
    await admin.connect();
    await admin.listTopics();
    await admin.disconnect();
    const unverified = createKafka(clientConfig(broker, { ssl: { rejectUnauthorized: false } }), 'unverified').admin();
    await unverified.connect();
    await unverified.listTopics();
    await unverified.disconnect();
  });

  test('a client trusting another CA is rejected by certificate verification; kafkajs\'s final error carries the TLS code', async () => {
    // Plain kafkajs, without strangler's check before connecting (tls-failures.test.ts has that): it retries ~9 s.
    const ssl = { caFile: join(TLS_DIR, 'other-ca.crt'), rejectUnauthorized: true };
    const admin = createKafka(clientConfig(broker, { ssl }), 'wrong-ca').admin();
    let caught: unknown;
    await failsClearly(admin.connect().catch((err: unknown) => { caught = err; throw err; }), /self[- ]signed certificate|unable to verify|certificate/i, 30_000);
    await admin.disconnect();
    // What lets a certificate failure that starts after a client is up still be reported with the field to fix.
    assert.deepEqual(tlsFailureOf(caught, ssl)?.details, { field: 'kafka.ssl.caFile', tlsCode: 'DEPTH_ZERO_SELF_SIGNED_CERT', broker: broker.address });
  });

  test('a plaintext client gets no answer it can use, and the broker carries on', async () => {
    const raw = await RawClient.open(broker.port);
    raw.write(requestFrame(ApiKey.ApiVersions, 0, 1));
    await raw.closed;
    assert.equal(raw.frames.length, 0);
    await roundTrip(createKafka(clientConfig(broker, { ssl: { caFile: CA_FILE } }), 'tls-after-plaintext'));
  });
});

describe('dev broker with SASL over TLS (SASL_SSL)', () => {
  let broker: KafkaBroker;
  before(async () => { broker = await startTestBroker({ tls: TLS, sasl: { users: USERS } }); });
  after(async () => { await broker?.close(); });

  test('PLAIN: produce and consume round trip', async () => {
    assert.deepEqual(broker.saslMechanisms, ['PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512']);
    await roundTrip(createKafka(clientConfig(broker, { ssl: { caFile: CA_FILE }, sasl: { mechanism: 'plain', username: 'strangler', password: USERS.strangler } }), 'plain'));
  });

  test('SCRAM-SHA-512: produce and consume round trip (a user name with , and = escaped by the client)', async () => {
    await roundTrip(createKafka(clientConfig(broker, { ssl: { caFile: CA_FILE }, sasl: { mechanism: 'scram-sha-512', username: 'strangler', password: USERS.strangler } }), 'scram512'));
    await roundTrip(createKafka(clientConfig(broker, { ssl: { caFile: CA_FILE }, sasl: { mechanism: 'scram-sha-256', username: 'other', password: USERS.other } }), 'scram256-tls'));
  });

  test('a wrong password fails at once with the broker\'s SASL_AUTHENTICATION_FAILED message', async () => {
    // kafkajs names them "SASL PLAIN" and "SASL SCRAM SHA256"/"SHA512"; the rest is the broker's error_message.
    for (const [mechanism, named] of [['plain', 'PLAIN'], ['scram-sha-256', 'SCRAM SHA256'], ['scram-sha-512', 'SCRAM SHA512']] as const) {
      const admin = createKafka(clientConfig(broker, { ssl: { caFile: CA_FILE }, sasl: { mechanism, username: 'strangler', password: 'wrong' } }), `wrong-${mechanism}`).admin();
      const message = await failsClearly(admin.connect(), new RegExp(`SASL ${named} authentication failed: Authentication failed`), 10_000);
      assert.ok(!message.includes(USERS.strangler), 'the message does not carry a password');
      await admin.disconnect();
    }
  });

  test('an unknown user fails like a wrong password', async () => {
    const admin = createKafka(clientConfig(broker, { ssl: { caFile: CA_FILE }, sasl: { mechanism: 'scram-sha-256', username: 'nobody', password: 'x' } }), 'nobody').admin();
    await failsClearly(admin.connect(), /SASL SCRAM SHA256 authentication failed: Authentication failed .*invalid credentials/, 10_000);
    await admin.disconnect();
  });
});

describe('dev broker with SASL without TLS (SASL_PLAINTEXT), at the protocol level', () => {
  let broker: KafkaBroker;
  before(async () => { broker = await startTestBroker({ sasl: { users: USERS, mechanisms: ['PLAIN', 'SCRAM-SHA-256'] } }); });
  after(async () => { await broker?.close(); });

  const handshakeBody = (mechanism: string): Buffer => new Writer().string(mechanism).toBuffer();
  const plainToken = (user: string, password: string): Buffer => Buffer.from(`\0${user}\0${password}`, 'utf8');
  const parseHandshake = (frame: Buffer): { error: number; mechanisms: string[] } => {
    const r = new Reader(frame, 4);
    return { error: r.int16(), mechanisms: r.array((x) => x.string()) };
  };
  const metadataAll = (): Buffer => new Writer().int32(-1).bool(false).toBuffer();

  test('SCRAM-SHA-256 with kafkajs: produce and consume round trip', async () => {
    await roundTrip(createKafka(clientConfig(broker, { sasl: { mechanism: 'scram-sha-256', username: 'strangler', password: USERS.strangler } }), 'scram256'));
  });

  test('ApiVersions lists SaslHandshake 0–1 and SaslAuthenticate 0–2 (a broker without SASL lists neither)', async () => {
    const plain = await startTestBroker();
    try {
      const keysOf = async (port: number): Promise<Map<number, [number, number]>> => {
        const c = await RawClient.open(port);
        c.write(requestFrame(ApiKey.ApiVersions, 0, 7));
        const [frame] = await c.waitFrames(1);
        c.close();
        const r = new Reader(frame!, 4);
        assert.equal(r.int16(), 0);
        return new Map(r.array((x) => [x.int16(), [x.int16(), x.int16()]] as [number, [number, number]]));
      };
      const sasl = await keysOf(broker.port);
      assert.deepEqual(sasl.get(ApiKey.SaslHandshake), [0, 1]);
      assert.deepEqual(sasl.get(ApiKey.SaslAuthenticate), [0, 2]);
      const none = await keysOf(plain.port);
      assert.equal(none.has(ApiKey.SaslHandshake) || none.has(ApiKey.SaslAuthenticate), false);
      assert.equal(sasl.size, none.size + 2);
    } finally {
      await plain.close();
    }
  });

  test('before authentication a Metadata request closes the connection unanswered', async () => {
    const c = await RawClient.open(broker.port);
    c.write(requestFrame(ApiKey.Metadata, 4, 1, metadataAll()));
    await c.closed;
    assert.equal(c.frames.length, 0);
  });

  test('an unsupported mechanism gets UNSUPPORTED_SASL_MECHANISM with the enabled list, then the connection closes', async () => {
    const c = await RawClient.open(broker.port);
    c.write(requestFrame(ApiKey.SaslHandshake, 1, 1, handshakeBody('SCRAM-SHA-512')));
    await c.closed;
    assert.deepEqual(parseHandshake(c.frames[0]!), { error: KafkaError.UNSUPPORTED_SASL_MECHANISM, mechanisms: ['PLAIN', 'SCRAM-SHA-256'] });
  });

  test('SaslHandshake v1 + SaslAuthenticate v0 and v1 (PLAIN): then requests are served; a second authenticate is ILLEGAL_SASL_STATE', async () => {
    for (const version of [0, 1]) {
      const c = await RawClient.open(broker.port);
      c.write(requestFrame(ApiKey.SaslHandshake, 1, 1, handshakeBody('PLAIN')));
      c.write(requestFrame(ApiKey.SaslAuthenticate, version, 2, new Writer().bytes(plainToken('strangler', USERS.strangler)).toBuffer()));
      c.write(requestFrame(ApiKey.Metadata, 4, 3, metadataAll()));
      c.write(requestFrame(ApiKey.SaslAuthenticate, version, 4, new Writer().bytes(plainToken('strangler', USERS.strangler)).toBuffer()));
      const frames = await c.waitFrames(4);
      c.close();
      assert.equal(frames.length, 4, 'four answers');
      assert.deepEqual(parseHandshake(frames[0]!), { error: 0, mechanisms: ['PLAIN', 'SCRAM-SHA-256'] });
      const auth = new Reader(frames[1]!, 4);
      assert.equal(auth.int16(), 0);
      assert.equal(auth.nullableString(), null);
      assert.equal(auth.bytes().length, 0);
      if (version >= 1) assert.equal(auth.int64(), 0n, 'session_lifetime_ms 0: no re-authentication');
      assert.equal(auth.remaining, 0);
      assert.equal(frames[2]!.readInt32BE(0), 3, 'Metadata answered after authentication');
      assert.equal(frames[3]!.readInt16BE(4), KafkaError.ILLEGAL_SASL_STATE);
    }
  });

  test('SaslAuthenticate v2 (flexible: header v2 request, response header with tags, compact fields); a wrong password gets 58 and a message, then close', async () => {
    const good = await RawClient.open(broker.port);
    good.write(requestFrame(ApiKey.SaslHandshake, 1, 1, handshakeBody('PLAIN')));
    const token = plainToken('other', USERS.other);
    const body = new Writer().uvarint(token.length + 1).raw(token).tags().toBuffer();
    good.write(requestFrame(ApiKey.SaslAuthenticate, 2, 2, body, 'raw', true));
    const frames = await good.waitFrames(2);
    good.close();
    const r = new Reader(frames[1]!, 4);
    r.skipTags(); // response header v1
    assert.equal(r.int16(), 0);
    assert.equal(r.uvarint(), 0, 'null error message');
    assert.equal(r.uvarint(), 1, 'empty auth bytes');
    assert.equal(r.int64(), 0n);
    r.skipTags();
    assert.equal(r.remaining, 0);

    const bad = await RawClient.open(broker.port);
    bad.write(requestFrame(ApiKey.SaslHandshake, 1, 1, handshakeBody('PLAIN')));
    const wrong = plainToken('other', 'nope');
    bad.write(requestFrame(ApiKey.SaslAuthenticate, 2, 2, new Writer().uvarint(wrong.length + 1).raw(wrong).tags().toBuffer(), 'raw', true));
    await bad.closed;
    const f = new Reader(bad.frames[1]!, 4);
    f.skipTags();
    assert.equal(f.int16(), KafkaError.SASL_AUTHENTICATION_FAILED);
    const n = f.uvarint();
    assert.match(f.raw(n - 1).toString('utf8'), /Authentication failed: Invalid username or password/);
  });

  test('SaslHandshake v0: bare SASL tokens follow (no request header); success answers an empty token, failure just closes', async () => {
    const frame = (b: Buffer): Buffer => { const s = Buffer.alloc(4); s.writeInt32BE(b.length); return Buffer.concat([s, b]); };
    const good = await RawClient.open(broker.port);
    good.write(requestFrame(ApiKey.SaslHandshake, 0, 1, handshakeBody('PLAIN')));
    await good.waitFrames(1);
    good.write(frame(plainToken('strangler', USERS.strangler)));
    await good.waitFrames(2);
    assert.equal(good.frames[1]!.length, 0, 'an empty token');
    good.write(requestFrame(ApiKey.Metadata, 4, 5, metadataAll()));
    const frames = await good.waitFrames(3);
    good.close();
    assert.equal(frames[2]!.readInt32BE(0), 5);

    const bad = await RawClient.open(broker.port);
    bad.write(requestFrame(ApiKey.SaslHandshake, 0, 1, handshakeBody('PLAIN')));
    await bad.waitFrames(1);
    bad.write(frame(Buffer.from('\0a\0b')));
    await bad.closed;
    assert.equal(bad.frames.length, 1);
  });

  test('a frame above 512 KiB before authentication closes the connection (Kafka\'s sasl.server.max.receive.size)', async () => {
    const c = await RawClient.open(broker.port);
    const size = Buffer.alloc(4);
    size.writeInt32BE(512 * 1024 + 1);
    c.write(size);
    await c.closed;
    assert.equal(c.frames.length, 0);
  });
});

describe('dev broker SASL logging', () => {
  const lines: string[] = [];
  let broker: KafkaBroker;
  before(async () => {
    const destination = new Writable({ write(chunk: Buffer, _enc, done) { lines.push(chunk.toString()); done(); } });
    broker = await startTestBroker({ tls: TLS, sasl: { users: USERS }, logger: createLogger({ level: 'debug', destination }) });
  });
  after(async () => { await broker?.close(); });

  test('successes and failures are logged with user and mechanism, never with a password', async () => {
    await roundTrip(createKafka(clientConfig(broker, { ssl: { caFile: CA_FILE }, sasl: { mechanism: 'scram-sha-256', username: 'strangler', password: USERS.strangler } }), 'logged'));
    for (const mechanism of ['plain', 'scram-sha-512'] as const) {
      const admin = createKafka(clientConfig(broker, { ssl: { caFile: CA_FILE }, sasl: { mechanism, username: 'strangler', password: 'wrong-password-in-log?' } }), 'logged-wrong').admin();
      await assert.rejects(admin.connect(), /authentication failed/);
      await admin.disconnect();
    }
    const events = lines.map((l) => JSON.parse(l) as { msg: string; user?: string; mechanism?: string; reason?: string });
    assert.ok(events.some((e) => e.msg === KAFKA_LOG.saslAuthenticated && e.user === 'strangler' && e.mechanism === 'SCRAM-SHA-256'));
    const failures = events.filter((e) => e.msg === KAFKA_LOG.saslFailed);
    assert.deepEqual(failures.map((e) => e.mechanism).sort(), ['PLAIN', 'SCRAM-SHA-512']);
    assert.ok(failures.every((e) => e.user === 'strangler' && /Authentication failed/.test(e.reason ?? '')));
    const all = lines.join('');
    assert.ok(!all.includes(USERS.strangler) && !all.includes('wrong-password-in-log?'), 'no password in the broker log');
  });
});
