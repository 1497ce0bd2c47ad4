/**
 * SASL authentication of a connection, server side: SaslHandshake (17) v0–1 and SaslAuthenticate (36) v0–2 with
 * PLAIN (RFC 4616) and SCRAM-SHA-256/512 (RFC 5802, RFC 7677).
 *
 *   ApiVersions* ─► SaslHandshake(mechanism) ─► v1: SaslAuthenticate(token)… ─► authenticated ─► any request
 *                                            └► v0: raw tokens (int32 size + bytes, no request header) …
 *
 * As in Kafka: before authentication only ApiVersions, SaslHandshake and SaslAuthenticate are served (anything
 * else closes the connection); a failed exchange answers SASL_AUTHENTICATION_FAILED with a message and closes;
 * an unknown mechanism answers UNSUPPORTED_SASL_MECHANISM with the enabled list and closes. Sessions never expire
 * (session_lifetime_ms 0, so clients do not re-authenticate). SCRAM credentials are derived from the configured
 * passwords once per broker (random salt, 4096 iterations, Kafka's minimum) and kept in memory only.
 */
import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import { StranglerError } from '../../../common/errors.ts';
import { SASL_MECHANISMS, type KafkaSaslOptions, type SaslMechanism } from '../config.ts';
import { ApiKey } from '../protocol/api-keys.ts';
import { KafkaError } from '../protocol/error-codes.ts';
import { ProtocolError, type Reader } from '../protocol/reader.ts';
import { Writer } from '../protocol/writer.ts';

const pbkdf2Async = promisify(pbkdf2);
const SCRAM_ITERATIONS = 4096;

/** A failed exchange: `message` goes to the client in SaslAuthenticate's error_message (never the password). */
export class SaslFailure extends Error {
  override name = 'SaslFailure';
}

interface ScramCredential { readonly salt: Buffer; readonly storedKey: Buffer; readonly serverKey: Buffer }

const hashOf = (mechanism: 'SCRAM-SHA-256' | 'SCRAM-SHA-512'): 'sha256' | 'sha512' => (mechanism === 'SCRAM-SHA-256' ? 'sha256' : 'sha512');
const hmac = (alg: string, key: Buffer, data: string): Buffer => createHmac(alg, key).update(data).digest();

/** Equal without leaking where they differ or (through hashing) their lengths. */
function secretEquals(a: Buffer | string, b: Buffer | string): boolean {
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

/** Where SCRAM salts and server nonces come from; tests pass fixed ones to check RFC 7677's example exchange. */
export interface ScramEntropy {
  salt(): Buffer;
  /** Printable, without ',' (appended to the client's nonce). */
  nonce(): string;
}

const randomEntropy: ScramEntropy = {
  salt: () => randomBytes(16),
  nonce: () => randomBytes(18).toString('base64').replace(/[+/=]/g, 'x'),
};

/** The broker's users and mechanisms; SCRAM credentials derived lazily and cached. */
export class SaslAuthority {
  readonly mechanisms: readonly SaslMechanism[];
  readonly entropy: ScramEntropy;
  readonly #users: ReadonlyMap<string, string>;
  readonly #scram = new Map<string, Promise<ScramCredential>>();

  constructor(options: KafkaSaslOptions, entropy: ScramEntropy = randomEntropy) {
    this.entropy = entropy;
    this.#users = new Map(Object.entries(options.users));
    const mechanisms = options.mechanisms ?? SASL_MECHANISMS;
    const invalid = (message: string): StranglerError => new StranglerError('KAFKA_DEV_BROKER_OPTIONS_INVALID', `kafka dev broker: ${message}`);
    for (const m of mechanisms) if (!SASL_MECHANISMS.includes(m)) throw invalid(`unknown SASL mechanism "${String(m)}"; supported: ${SASL_MECHANISMS.join(', ')}`);
    if (mechanisms.length === 0) throw invalid('sasl.mechanisms is empty; enable at least one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512');
    if (this.#users.size === 0) throw invalid('sasl.users is empty; no client could authenticate');
    this.mechanisms = [...new Set(mechanisms)];
  }

  checkPlain(username: string, password: string): boolean {
    const expected = this.#users.get(username);
    // Compare even for an unknown user, so the answer takes the same time.
    const ok = secretEquals(expected ?? '\0unknown', password);
    return expected !== undefined && ok;
  }

  scramCredential(mechanism: 'SCRAM-SHA-256' | 'SCRAM-SHA-512', username: string): Promise<ScramCredential> | undefined {
    const password = this.#users.get(username);
    if (password === undefined) return undefined;
    const key = `${mechanism}\0${username}`;
    let credential = this.#scram.get(key);
    if (!credential) {
      const alg = hashOf(mechanism);
      const salt = this.entropy.salt();
      credential = pbkdf2Async(password, salt, SCRAM_ITERATIONS, createHash(alg).digest().length, alg).then((salted) => {
        const clientKey = hmac(alg, salted, 'Client Key');
        return { salt, storedKey: createHash(alg).update(clientKey).digest(), serverKey: hmac(alg, salted, 'Server Key') };
      });
      this.#scram.set(key, credential);
    }
    return credential;
  }
}

/** One mechanism's exchange: each client token gets a reply; `done` once the client is authenticated. */
interface Exchange {
  step(token: Buffer): Promise<{ reply: Buffer; done: boolean }>;
}

class PlainExchange implements Exchange {
  readonly #authority: SaslAuthority;
  readonly #onUser: (user: string) => void;
  constructor(authority: SaslAuthority, onUser: (user: string) => void) {
    this.#authority = authority;
    this.#onUser = onUser;
  }

  step(token: Buffer): Promise<{ reply: Buffer; done: boolean }> {
    // message = [authzid] NUL authcid NUL passwd (RFC 4616)
    const parts = token.toString('utf8').split('\0');
    if (parts.length !== 3) return Promise.reject(new SaslFailure('Authentication failed: invalid SASL/PLAIN message (expected [authzid] NUL username NUL password)'));
    const [authzid, username, password] = parts as [string, string, string];
    this.#onUser(username);
    if (authzid !== '' && authzid !== username) return Promise.reject(new SaslFailure('Authentication failed: the authorization id must be empty or equal to the username'));
    if (!this.#authority.checkPlain(username, password)) return Promise.reject(new SaslFailure('Authentication failed: Invalid username or password'));
    return Promise.resolve({ reply: Buffer.alloc(0), done: true });
  }
}

/** Parses `k=v,k=v` SCRAM attributes (values may contain '='). */
function scramAttributes(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    if (eq !== 1) throw new SaslFailure(`Authentication failed: invalid SCRAM attribute "${part.slice(0, 20)}"`);
    out.set(part[0]!, part.slice(2));
  }
  return out;
}

class ScramExchange implements Exchange {
  readonly #authority: SaslAuthority;
  readonly #mechanism: 'SCRAM-SHA-256' | 'SCRAM-SHA-512';
  readonly #onUser: (user: string) => void;
  #state: { gs2: string; clientFirstBare: string; serverFirst: string; nonce: string; credential: ScramCredential } | undefined;

  constructor(authority: SaslAuthority, mechanism: 'SCRAM-SHA-256' | 'SCRAM-SHA-512', onUser: (user: string) => void) {
    this.#authority = authority;
    this.#mechanism = mechanism;
    this.#onUser = onUser;
  }

  async step(token: Buffer): Promise<{ reply: Buffer; done: boolean }> {
    return this.#state ? this.#clientFinal(token.toString('utf8')) : await this.#clientFirst(token.toString('utf8'));
  }

  async #clientFirst(message: string): Promise<{ reply: Buffer; done: boolean }> {
    // gs2-header = ("n" | "y") "," [ "a=" authzid ] "," ; channel binding ("p=") is not offered.
    const m = /^([ny]),(a=[^,]*)?,(.*)$/s.exec(message);
    if (!m) throw new SaslFailure('Authentication failed: invalid SCRAM client-first message (channel binding is not supported)');
    const gs2 = `${m[1]},${m[2] ?? ''},`;
    const clientFirstBare = m[3]!;
    const attrs = scramAttributes(clientFirstBare);
    const rawUser = attrs.get('n');
    const clientNonce = attrs.get('r');
    if (rawUser === undefined || !clientNonce) throw new SaslFailure('Authentication failed: SCRAM client-first message without n= or r=');
    const username = rawUser.replace(/=2C/g, ',').replace(/=3D/g, '=');
    this.#onUser(username);
    const credential = await this.#authority.scramCredential(this.#mechanism, username);
    if (!credential) throw new SaslFailure(`Authentication failed during authentication due to invalid credentials with SASL mechanism ${this.#mechanism}`);
    const nonce = clientNonce + this.#authority.entropy.nonce();
    const serverFirst = `r=${nonce},s=${credential.salt.toString('base64')},i=${SCRAM_ITERATIONS}`;
    this.#state = { gs2, clientFirstBare, serverFirst, nonce, credential };
    return { reply: Buffer.from(serverFirst, 'utf8'), done: false };
  }

  #clientFinal(message: string): { reply: Buffer; done: boolean } {
    const s = this.#state!;
    const proofAt = message.lastIndexOf(',p=');
    if (proofAt < 0) throw new SaslFailure('Authentication failed: SCRAM client-final message without a proof');
    const withoutProof = message.slice(0, proofAt);
    const attrs = scramAttributes(withoutProof);
    if (attrs.get('c') !== Buffer.from(s.gs2, 'utf8').toString('base64')) throw new SaslFailure('Authentication failed: SCRAM channel binding does not match the client-first message');
    // Kafka checks only that the echoed nonce ends with ours; librdkafka (2.0.2 and later) relies on it, because it
    // sends its client nonce followed by our whole nonce (which already starts with the client nonce).
    if (!attrs.get('r')?.endsWith(s.nonce)) throw new SaslFailure('Authentication failed: SCRAM nonce does not match');
    const proof = Buffer.from(message.slice(proofAt + 3), 'base64');
    const alg = hashOf(this.#mechanism);
    const authMessage = `${s.clientFirstBare},${s.serverFirst},${withoutProof}`;
    const clientSignature = hmac(alg, s.credential.storedKey, authMessage);
    if (proof.length !== clientSignature.length) throw new SaslFailure(`Authentication failed during authentication due to invalid credentials with SASL mechanism ${this.#mechanism}`);
    const clientKey = Buffer.alloc(proof.length);
    for (let i = 0; i < proof.length; i++) clientKey[i] = proof[i]! ^ clientSignature[i]!;
    if (!timingSafeEqual(createHash(alg).update(clientKey).digest(), s.credential.storedKey)) {
      throw new SaslFailure(`Authentication failed during authentication due to invalid credentials with SASL mechanism ${this.#mechanism}`);
    }
    const serverSignature = hmac(alg, s.credential.serverKey, authMessage);
    return { reply: Buffer.from(`v=${serverSignature.toString('base64')}`, 'utf8'), done: true };
  }
}

/** What the connection does with a SASL request: write `body` (if any), then keep going or close. */
export interface SaslOutcome {
  readonly body: Writer | null;
  readonly close: boolean;
  /** A reason for the log when closing. */
  readonly reason?: string;
}

/** Per-connection SASL state machine. */
export class SaslSession {
  readonly #authority: SaslAuthority;
  #stage: 'handshake' | 'authenticate' | 'raw' | 'done' = 'handshake';
  #exchange: Exchange | undefined;
  #mechanism: SaslMechanism | undefined;
  #user: string | undefined;

  constructor(authority: SaslAuthority) {
    this.#authority = authority;
  }

  get authenticated(): boolean { return this.#stage === 'done'; }
  /** After SaslHandshake v0 the next frames are bare SASL tokens, not Kafka requests. */
  get expectsRawToken(): boolean { return this.#stage === 'raw'; }
  get mechanism(): SaslMechanism | undefined { return this.#mechanism; }
  /** The username the client sent (for logs), once known. */
  get user(): string | undefined { return this.#user; }

  /** SaslHandshake v0–1: `mechanism` → `error_code, [enabled mechanisms]`. */
  handshake(version: number, reader: Reader): SaslOutcome {
    const requested = reader.string();
    const body = (error: number): Writer => new Writer(64).int16(error).array(this.#authority.mechanisms, (w, m) => w.string(m));
    if (this.#stage === 'done') return { body: body(KafkaError.ILLEGAL_SASL_STATE), close: false };
    if (this.#stage !== 'handshake') return { body: null, close: true, reason: 'a second SaslHandshake during authentication' };
    const mechanism = this.#authority.mechanisms.find((m) => m === requested);
    if (!mechanism) return { body: body(KafkaError.UNSUPPORTED_SASL_MECHANISM), close: true, reason: `unsupported SASL mechanism "${requested}"` };
    this.#mechanism = mechanism;
    const onUser = (user: string): void => { this.#user = user; };
    this.#exchange = mechanism === 'PLAIN' ? new PlainExchange(this.#authority, onUser) : new ScramExchange(this.#authority, mechanism, onUser);
    this.#stage = version === 0 ? 'raw' : 'authenticate';
    return { body: body(KafkaError.NONE), close: false };
  }

  /** SaslAuthenticate v0–2: `auth_bytes` → `error_code, error_message, auth_bytes, session_lifetime_ms (v1+)`. */
  async authenticate(version: number, reader: Reader): Promise<SaslOutcome> {
    const flexible = version >= 2;
    let token: Buffer;
    if (flexible) {
      const n = reader.uvarint();
      if (n === 0) throw new ProtocolError('null auth_bytes');
      token = reader.raw(n - 1);
      reader.skipTags();
    } else {
      token = reader.bytes();
    }
    const respond = (error: number, message: string | null, bytes: Buffer): Writer => {
      const w = new Writer(64 + bytes.length);
      if (flexible) w.tags(); // response header v1: its tagged-field section precedes the body
      w.int16(error);
      if (flexible) {
        if (message === null) w.uvarint(0);
        else w.compactString(message);
        w.uvarint(bytes.length + 1).raw(bytes);
      } else {
        w.nullableString(message).bytes(bytes);
      }
      if (version >= 1) w.int64(0);
      if (flexible) w.tags();
      return w;
    };
    if (this.#stage === 'done') return { body: respond(KafkaError.ILLEGAL_SASL_STATE, 'SaslAuthenticate request received after successful authentication', Buffer.alloc(0)), close: false };
    if (this.#stage !== 'authenticate') return { body: null, close: true, reason: 'SaslAuthenticate before SaslHandshake' };
    try {
      const { reply, done } = await this.#exchange!.step(token);
      if (done) this.#stage = 'done';
      return { body: respond(KafkaError.NONE, null, reply), close: false };
    } catch (err) {
      if (!(err instanceof SaslFailure)) throw err;
      return { body: respond(KafkaError.SASL_AUTHENTICATION_FAILED, err.message, Buffer.alloc(0)), close: true, reason: err.message };
    }
  }

  /** A bare token after SaslHandshake v0: the reply is a bare token too; a failure just closes (no way to say why). */
  async rawToken(token: Buffer): Promise<{ reply: Buffer | null; reason?: string }> {
    try {
      const { reply, done } = await this.#exchange!.step(token);
      if (done) this.#stage = 'done';
      return { reply };
    } catch (err) {
      if (!(err instanceof SaslFailure)) throw err;
      return { reply: null, reason: err.message };
    }
  }
}

/** Requests a connection may send before it has authenticated. */
export function allowedBeforeAuthentication(apiKey: number): boolean {
  return apiKey === ApiKey.ApiVersions || apiKey === ApiKey.SaslHandshake || apiKey === ApiKey.SaslAuthenticate;
}
