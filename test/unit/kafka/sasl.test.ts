/**
 * The dev broker's SASL server side without sockets: SCRAM-SHA-256 against RFC 7677's example exchange (fixed salt
 * and nonce), SCRAM-SHA-512 and PLAIN failures, and the handshake/authenticate state machine.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KafkaError } from '../../../devstack/kafka/protocol/error-codes.ts';
import { Reader } from '../../../devstack/kafka/protocol/reader.ts';
import { Writer } from '../../../devstack/kafka/protocol/writer.ts';
import { SaslAuthority, SaslSession } from '../../../devstack/kafka/server/sasl.ts';
import { isStranglerError } from '../../../common/errors.ts';
import type { KafkaSaslOptions, SaslMechanism } from '../../../devstack/kafka/config.ts';

const handshake = (session: SaslSession, mechanism: string, version = 1): { error: number; mechanisms: string[]; close: boolean } => {
  const out = session.handshake(version, new Reader(new Writer().string(mechanism).toBuffer()));
  const r = new Reader(out.body!.toBuffer());
  return { error: r.int16(), mechanisms: r.array((x) => x.string()), close: out.close };
};

async function authenticate(session: SaslSession, token: string): Promise<{ error: number; message: string | null; bytes: string; close: boolean }> {
  const out = await session.authenticate(1, new Reader(new Writer().bytes(Buffer.from(token, 'utf8')).toBuffer()));
  const r = new Reader(out.body!.toBuffer());
  const result = { error: r.int16(), message: r.nullableString(), bytes: r.bytes().toString('utf8'), close: out.close };
  assert.equal(r.int64(), 0n);
  return result;
}

test('SCRAM-SHA-256 reproduces RFC 7677 section 3: server-first, proof check and server signature', async () => {
  const authority = new SaslAuthority({ users: { user: 'pencil' } }, {
    salt: () => Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64'),
    nonce: () => '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0',
  });
  const session = new SaslSession(authority);
  assert.equal(handshake(session, 'SCRAM-SHA-256').error, 0);
  const first = await authenticate(session, 'n,,n=user,r=rOprNGfwEbeRWgbNEkqO');
  assert.deepEqual(first, { error: 0, message: null, bytes: 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096', close: false });
  assert.equal(session.authenticated, false);
  const final = await authenticate(session, 'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=');
  assert.deepEqual(final, { error: 0, message: null, bytes: 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=', close: false });
  assert.equal(session.authenticated, true);
  assert.equal(session.user, 'user');
});

test('SCRAM: a wrong proof, a foreign nonce or an unknown user fail with 58 and close', async () => {
  const authority = new SaslAuthority({ users: { user: 'pencil' } }, { salt: () => Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64'), nonce: () => 'SERVER' });
  const wrongProof = new SaslSession(authority);
  handshake(wrongProof, 'SCRAM-SHA-256');
  await authenticate(wrongProof, 'n,,n=user,r=abc');
  const failed = await authenticate(wrongProof, `c=biws,r=abcSERVER,p=${Buffer.alloc(32, 1).toString('base64')}`);
  assert.equal(failed.error, KafkaError.SASL_AUTHENTICATION_FAILED);
  assert.match(failed.message!, /invalid credentials with SASL mechanism SCRAM-SHA-256/);
  assert.equal(failed.close, true);
  assert.equal(wrongProof.authenticated, false);

  const foreignNonce = new SaslSession(authority);
  handshake(foreignNonce, 'SCRAM-SHA-256');
  await authenticate(foreignNonce, 'n,,n=user,r=abc');
  assert.match((await authenticate(foreignNonce, `c=biws,r=abcOTHER,p=${Buffer.alloc(32).toString('base64')}`)).message!, /nonce does not match/);

  const unknown = new SaslSession(authority);
  handshake(unknown, 'SCRAM-SHA-512');
  const nobody = await authenticate(unknown, 'n,,n=nobody,r=abc');
  assert.equal(nobody.error, KafkaError.SASL_AUTHENTICATION_FAILED);
  assert.equal(nobody.close, true);

  const binding = new SaslSession(authority);
  handshake(binding, 'SCRAM-SHA-256');
  assert.match((await authenticate(binding, 'p=tls-unique,,n=user,r=abc')).message!, /channel binding is not supported/);
});

test('PLAIN: password and authorization id rules; the password is never in a message', async () => {
  const authority = new SaslAuthority({ users: { alice: 's3cret' } });
  const cases: [string, number, RegExp | null][] = [
    ['\0alice\0s3cret', 0, null],
    ['alice\0alice\0s3cret', 0, null],
    ['bob\0alice\0s3cret', KafkaError.SASL_AUTHENTICATION_FAILED, /authorization id/],
    ['\0alice\0S3CRET', KafkaError.SASL_AUTHENTICATION_FAILED, /Invalid username or password/],
    ['\0mallory\0s3cret', KafkaError.SASL_AUTHENTICATION_FAILED, /Invalid username or password/],
    ['alice:s3cret', KafkaError.SASL_AUTHENTICATION_FAILED, /invalid SASL\/PLAIN message/],
  ];
  for (const [token, error, message] of cases) {
    const session = new SaslSession(authority);
    handshake(session, 'PLAIN');
    const out = await authenticate(session, token);
    assert.equal(out.error, error, JSON.stringify(token));
    if (message) assert.match(out.message!, message);
    assert.ok(!(out.message ?? '').includes('s3cret') && !(out.message ?? '').includes('S3CRET'));
    assert.equal(session.authenticated, error === 0);
  }
});

test('handshake: an unknown mechanism lists the enabled ones and closes; authenticate before handshake closes', async () => {
  const authority = new SaslAuthority({ users: { a: 'b' }, mechanisms: ['SCRAM-SHA-512'] });
  const session = new SaslSession(authority);
  assert.deepEqual(handshake(session, 'PLAIN'), { error: KafkaError.UNSUPPORTED_SASL_MECHANISM, mechanisms: ['SCRAM-SHA-512'], close: true });
  const early = await new SaslSession(authority).authenticate(0, new Reader(new Writer().bytes(Buffer.from('x')).toBuffer()));
  assert.deepEqual({ body: early.body, close: early.close }, { body: null, close: true });
  const v0 = new SaslSession(new SaslAuthority({ users: { a: 'b' } }));
  handshake(v0, 'PLAIN', 0);
  assert.equal(v0.expectsRawToken, true);
  assert.deepEqual(await v0.rawToken(Buffer.from('\0a\0b')), { reply: Buffer.alloc(0) });
  assert.equal(v0.authenticated, true);
});

test('invalid SASL options are refused with KAFKA_DEV_BROKER_OPTIONS_INVALID', () => {
  const invalid: KafkaSaslOptions[] = [{ users: {} }, { users: { a: 'b' }, mechanisms: [] }, { users: { a: 'b' }, mechanisms: ['GSSAPI' as SaslMechanism] }];
  for (const options of invalid) {
    assert.throws(() => new SaslAuthority(options), (err: unknown) => isStranglerError(err) && err.code === 'KAFKA_DEV_BROKER_OPTIONS_INVALID');
  }
});
