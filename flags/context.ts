/**
 * The one place a request becomes an Unleash context (ENGINEERING.md §2 step 2).
 *
 * Stickiness must be stable, so every request gets a key: the configured user key (header, cookie or JWT claim,
 * unverified) → the signed session cookie → a newly minted signed session cookie. Unleash is never left to its
 * per-call random fallback. Tester overrides are HMAC-signed; anything unsigned or tampered is ignored.
 *
 * Invariant: the context carries exactly one of userId (identified) and sessionId (anonymous), so only Unleash's
 * `default` stickiness (userId, else sessionId) buckets every request; any other stickiness would leave one
 * population, or everyone, on legacy. `flag.stickiness` therefore accepts only "default" (gateway/config/schema.ts).
 */
import { isUtf8 } from 'node:buffer';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { IdentityConfig, UserKeySource } from '../gateway/config/schema.ts';
import { clientScheme } from '../gateway/proxy/headers.ts';

export interface Identity {
  /** The stickiness value passed to Unleash. */
  key: string;
  source: 'user' | 'session' | 'new-session';
  context: { userId?: string; sessionId?: string };
  /** Set-Cookie value to send when a new session was minted, or a session signed with a previous key is re-signed. */
  setCookie: string | null;
}

/**
 * The environment variable through which `gateway --workers N` hands its workers the session key it made up when
 * identity.sessionSecret is unset (gateway/cluster.ts), so a cookie minted by one worker is valid on the others.
 */
export const EPHEMERAL_SESSION_SECRET_ENV = 'STRANGLER_EPHEMERAL_SESSION_SECRET';
let ephemeralKey: string | undefined;

/**
 * The session key used when identity.sessionSecret is unset: one per process tree (the primary's, inherited by its
 * workers), kept across config reloads, so only a restart of the whole gateway invalidates its sessions.
 */
export function ephemeralSessionSecret(): string {
  ephemeralKey ??= process.env[EPHEMERAL_SESSION_SECRET_ENV] || randomBytes(32).toString('base64url');
  return ephemeralKey;
}

export type OverrideTarget = 'legacy' | 'service';
export type OverrideResult = { target: OverrideTarget } | { rejected: string } | null;

/**
 * Same-name session cookies tried at most. A browser sends a few when they differ in domain or path (one left by an
 * older deployment, say); a Cookie header of thousands of them (a 16 KB header holds ~900) would otherwise cost an
 * HMAC each, milliseconds of CPU per request for whoever sends it.
 */
const MAX_SESSION_COOKIES = 8;

function isSpace(c: number): boolean {
  return c === 32 || c === 9;
}

/**
 * Where the value of the first `name=` pair at or after `from` starts in a Cookie header, or -1. One pass over the
 * header and no allocation (it runs on every request, and a header may hold thousands of pairs).
 */
function cookieValueAt(header: string, name: string, from: number): number {
  let start = from;
  while (start < header.length) {
    let end = header.indexOf(';', start);
    if (end === -1) end = header.length;
    let at = start;
    while (at < end && isSpace(header.charCodeAt(at))) at++;
    if (header.startsWith(name, at)) {
      at += name.length;
      while (at < end && isSpace(header.charCodeAt(at))) at++;
      if (at < end && header.charCodeAt(at) === 61 /* '=' */) return at + 1;
    }
    start = end + 1;
  }
  return -1;
}

/** The end of the pair whose value starts at `at` (the next ';' or the end of the header). */
function cookieEnd(header: string, at: number): number {
  const end = header.indexOf(';', at);
  return end === -1 ? header.length : end;
}

function cookieValue(header: string, at: number, end: number): string {
  const value = header.slice(at, end).trim();
  return value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value;
}

/**
 * Reads one cookie from a Cookie header without allocating a map of all cookies (it runs on every request). A browser
 * sends several cookies of one name when they differ in domain or path (one left by an older deployment, say):
 * `skip` passes over that many earlier ones, so a caller can try each in header order.
 */
export function readCookie(header: string | undefined, name: string, skip = 0): string | undefined {
  if (!header) return undefined;
  let at = cookieValueAt(header, name, 0);
  for (; at !== -1 && skip > 0; skip--) at = cookieValueAt(header, name, cookieEnd(header, at) + 1);
  return at === -1 ? undefined : cookieValue(header, at, cookieEnd(header, at));
}

/**
 * A header or cookie value as text. Node's HTTP parser reads header bytes as latin1, so a user id sent as UTF-8 (as
 * browsers and HTTP clients send non-ASCII) arrives as mojibake ("José" as "JosÃ©"), and Unleash would bucket other
 * bytes than the id it (its playground, any SDK) and a JWT claim see. Decoded as UTF-8 when it is valid UTF-8;
 * anything else (a latin1 client) is kept as it came, so every user keeps one stable key.
 */
export function headerText(value: string): string {
  if (!NON_ASCII.test(value)) return value; // the usual case: no allocation on the request path
  const bytes = Buffer.from(value, 'latin1');
  return isUtf8(bytes) ? bytes.toString('utf8') : value;
}

const NON_ASCII = /[\u0080-\uffff]/;

function firstHeader(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** Reads a claim from a JWT payload without verifying it (the gateway only needs a stable key, not trust). */
export function readJwtClaim(authorization: string | undefined, claim: string): string | undefined {
  if (!authorization) return undefined;
  // header.payload.signature, after an optional "Bearer " (found by position: no array of parts per request, even
  // for a header of thousands of dots).
  const a = authorization.indexOf('.');
  const b = a === -1 ? -1 : authorization.indexOf('.', a + 1);
  if (b <= a + 1 || authorization.indexOf('.', b + 1) !== -1) return undefined;
  try {
    const payload = JSON.parse(Buffer.from(authorization.slice(a + 1, b), 'base64url').toString('utf8')) as Record<string, unknown>;
    const v = payload[claim];
    return typeof v === 'string' || typeof v === 'number' ? String(v) : undefined;
  } catch {
    return undefined;
  }
}

function sign(secret: Buffer, value: string): string {
  return createHmac('sha256', secret).update(value).digest('base64url').slice(0, 27);
}

function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}

/** Mints a tester override value `<target>.<expiresAtS>.<sig>` for the override header or cookie. */
export function signOverride(secret: string, target: OverrideTarget, ttlS = 3600, nowMs = Date.now()): string {
  const exp = Math.floor(nowMs / 1000) + ttlS;
  return `${target}.${exp}.${sign(Buffer.from(secret), `${target}.${exp}`)}`;
}

export class Identifier {
  readonly #config: IdentityConfig;
  readonly #sessionSecret: Buffer;
  /** identity.previousSessionSecrets: still verified, so rotating the key keeps every session (and its bucket). */
  readonly #previousSessionSecrets: Buffer[];
  readonly #overrideSecret: Buffer | null;
  readonly #now: () => number;

  constructor(config: IdentityConfig, options: { now?: () => number } = {}) {
    this.#config = config;
    this.#sessionSecret = Buffer.from(config.sessionSecret ?? ephemeralSessionSecret());
    this.#previousSessionSecrets = config.previousSessionSecrets.map((k) => Buffer.from(k));
    this.#overrideSecret = config.override.secret ? Buffer.from(config.override.secret) : null;
    this.#now = options.now ?? Date.now;
  }

  /** True when sessions are signed with a random per-process key (worth a warning at start). */
  get ephemeralSessions(): boolean {
    return this.#config.sessionSecret === null;
  }

  /**
   * The identity of a request. A newly minted session cookie is marked Secure when the client came over https
   * (a trusted X-Forwarded-Proto, `trustForwarded`), so the browser never sends it back in clear text.
   */
  identify(headers: IncomingHttpHeaders, userKey: readonly UserKeySource[] = this.#config.userKey, trustForwarded = false): Identity {
    for (const source of userKey) {
      let v: string | undefined;
      if ('jwtClaim' in source) v = readJwtClaim(firstHeader(headers, source.header), source.jwtClaim);
      else if ('cookie' in source) v = readCookie(headers.cookie, source.cookie);
      else v = firstHeader(headers, source.header);
      if (!v) continue;
      if (!('jwtClaim' in source)) v = headerText(v);
      return { key: v, source: 'user', context: { userId: v }, setCookie: null };
    }
    let resigned: string | undefined;
    const header = headers.cookie ?? '';
    // One pass over the header: each same-name cookie in order, at most MAX_SESSION_COOKIES of them.
    for (let n = 0, at = cookieValueAt(header, this.#config.sessionCookie, 0); at !== -1 && n < MAX_SESSION_COOKIES; n++) {
      const end = cookieEnd(header, at);
      const cookie = cookieValue(header, at, end);
      at = cookieValueAt(header, this.#config.sessionCookie, end + 1);
      const dot = cookie.lastIndexOf('.');
      if (dot <= 0) continue;
      const sid = cookie.slice(0, dot);
      const sig = cookie.slice(dot + 1);
      if (safeEqual(sig, sign(this.#sessionSecret, sid))) return { key: sid, source: 'session', context: { sessionId: sid }, setCookie: null };
      if (resigned === undefined && this.#previousSessionSecrets.some((k) => safeEqual(sig, sign(k, sid)))) resigned = sid;
    }
    // Signed with a previous key: the same session (same bucket), its cookie re-signed with the current key.
    if (resigned !== undefined) return { key: resigned, source: 'session', context: { sessionId: resigned }, setCookie: this.#sessionCookie(resigned, headers, trustForwarded) };
    const sid = randomBytes(16).toString('base64url');
    return { key: sid, source: 'new-session', context: { sessionId: sid }, setCookie: this.#sessionCookie(sid, headers, trustForwarded) };
  }

  #sessionCookie(sid: string, headers: IncomingHttpHeaders, trustForwarded: boolean): string {
    const value = `${sid}.${sign(this.#sessionSecret, sid)}`;
    return `${this.#config.sessionCookie}=${value}; Path=/; Max-Age=${this.#config.sessionMaxAgeS}; HttpOnly; SameSite=Lax${clientScheme(headers, trustForwarded) === 'https' ? '; Secure' : ''}`;
  }

  /** A signed, unexpired tester override forces a target; null when none was sent. */
  override(headers: IncomingHttpHeaders): OverrideResult {
    const { header, cookie } = this.#config.override;
    // An empty header is no override: the cookie, if any, still counts.
    const raw = firstHeader(headers, header) || readCookie(headers.cookie, cookie);
    if (!raw) return null;
    if (!this.#overrideSecret) return { rejected: 'overrides are disabled (identity.override.secret is not set)' };
    const [target, exp, sig] = raw.split('.');
    if ((target !== 'legacy' && target !== 'service') || !exp || !sig) return { rejected: 'malformed override (expected <target>.<expiresAt>.<signature>)' };
    if (!safeEqual(sig, sign(this.#overrideSecret, `${target}.${exp}`))) return { rejected: 'bad override signature' };
    if (Number(exp) * 1000 < this.#now()) return { rejected: 'override expired' };
    return { target };
  }
}
