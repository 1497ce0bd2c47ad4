/**
 * Header rules for both directions. Hop-by-hop headers (RFC 9110 §7.6.1, plus any named in Connection) never
 * cross the proxy; X-Forwarded-* describe the client hop (a client's own Forwarded and X-Real-IP are dropped unless
 * forwarded headers are trusted); x-request-id is kept when sane or minted; W3C
 * traceparent/tracestate pass unchanged as end-to-end headers.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

const NO_TOKENS: readonly string[] = Object.freeze([]);

function connectionTokens(value: string | string[] | undefined): readonly string[] {
  if (!value) return NO_TOKENS;
  // The usual value (`keep-alive`) names a header that is hop-by-hop anyway: nothing extra to strip.
  if (typeof value === 'string' && HOP_BY_HOP.has(value.toLowerCase())) return NO_TOKENS;
  return (Array.isArray(value) ? value.join(',') : value).split(',').map((t) => t.trim().toLowerCase()).filter(Boolean);
}

export function isHopByHop(name: string, extra: readonly string[]): boolean {
  return HOP_BY_HOP.has(name) || extra.includes(name);
}

/** The request id to use: the client's when it is well-formed, else a new one. */
export function requestIdOf(headers: IncomingHttpHeaders): string {
  const v = headers['x-request-id'];
  return typeof v === 'string' && REQUEST_ID.test(v) ? v : randomUUID();
}

/** The first entry of a forwarded header ("client, proxy1" → "client"): the hop nearest the client. */
function firstForwarded(v: string | string[] | undefined): string | undefined {
  return (Array.isArray(v) ? v[0] : v)?.split(',')[0]?.trim() || undefined;
}

/** The scheme the client used: https only when a trusted X-Forwarded-Proto says so (the listener is plain HTTP). */
export function clientScheme(headers: IncomingHttpHeaders, trustForwarded: boolean): 'http' | 'https' {
  return trustForwarded && firstForwarded(headers['x-forwarded-proto'])?.toLowerCase() === 'https' ? 'https' : 'http';
}

/** The host the client asked for: a trusted X-Forwarded-Host, else Host ('' when neither was sent). */
export function clientHost(headers: IncomingHttpHeaders, trustForwarded: boolean): string {
  return (trustForwarded ? firstForwarded(headers['x-forwarded-host']) : undefined) ?? headers.host ?? '';
}

export interface ForwardedInfo {
  reqId: string;
  clientIp: string;
  proto: 'http' | 'https';
  host: string;
  trustForwarded: boolean;
  /** Headers that must not reach any upstream (the tester override; Forwarded and X-Real-IP unless trustForwarded). */
  drop: readonly string[];
  /** A cookie that must not reach any upstream (the tester override cookie: a bearer credential until it expires). */
  dropCookie: string;
}

/**
 * The Cookie header without every `name=…` pair; the other pairs are kept byte for byte. Undefined when no pair is
 * left. Cookie names are case-sensitive (RFC 6265), matched as the identifier reads them (readCookie).
 */
export function withoutCookie(header: string, name: string): string | undefined {
  const pairs = header.split(';');
  const kept = pairs.filter((pair) => {
    const eq = pair.indexOf('=');
    return eq === -1 || pair.slice(0, eq).trim() !== name;
  });
  if (kept.length === pairs.length) return header;
  const out = kept.join(';').replace(/^[\s;]+|[\s;]+$/g, '');
  return out === '' ? undefined : out;
}

/**
 * Headers for the upstream request. Host is set by the proxy from the upstream's URL; the client's Host goes in
 * X-Forwarded-Host. For upgrades, Connection/Upgrade are kept because they are the point of the request.
 */
export function upstreamRequestHeaders(req: IncomingMessage, info: ForwardedInfo, upgrade = false): IncomingHttpHeaders {
  const extra = connectionTokens(req.headers.connection);
  const out: IncomingHttpHeaders = {};
  const headers = req.headers;
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || name === 'host' || info.drop.includes(name)) continue;
    if (isHopByHop(name, extra) && !(upgrade && (name === 'connection' || name === 'upgrade'))) continue;
    if (name.startsWith('x-forwarded-') && !info.trustForwarded) continue;
    out[name] = value;
  }
  // Work only when the Cookie header names the dropped cookie (rare: testers); every other Cookie passes as sent.
  const cookie = out.cookie;
  if (cookie !== undefined && info.dropCookie !== '' && cookie.includes(info.dropCookie)) {
    const kept = withoutCookie(cookie, info.dropCookie);
    if (kept === undefined) delete out.cookie;
    else out.cookie = kept;
  }
  const priorFor = info.trustForwarded ? req.headers['x-forwarded-for'] : undefined;
  out['x-forwarded-for'] = priorFor ? `${Array.isArray(priorFor) ? priorFor.join(', ') : priorFor}, ${info.clientIp}` : info.clientIp;
  if (!info.trustForwarded || !out['x-forwarded-proto']) out['x-forwarded-proto'] = info.proto;
  if (!info.trustForwarded || !out['x-forwarded-host']) out['x-forwarded-host'] = info.host;
  out['x-request-id'] = info.reqId;
  return out;
}

/**
 * The value of one header in a raw [name, value, …] list (name in lower case), without building the message's
 * `headers` object; repeated headers are joined with ', ' as node does for most.
 */
export function rawHeader(rawHeaders: readonly string[], lowerName: string): string | undefined {
  let out: string | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    if (name.length !== lowerName.length || name.toLowerCase() !== lowerName) continue;
    const value = rawHeaders[i + 1] as string;
    out = out === undefined ? value : `${out}, ${value}`;
  }
  return out;
}

/** A Location rewrite: an absolute URL under `from` (the upstream's origin and path prefix) moves under `to`. */
export interface LocationRewrite {
  from: string;
  to: string;
}

/**
 * The client-facing form of a Location value (nginx's `proxy_redirect default`): a redirect to the upstream's own
 * origin, which the client cannot reach, becomes one to the origin the client used. Anything else is unchanged.
 */
export function rewriteLocation(value: string, rewrite: LocationRewrite): string {
  if (!value.startsWith(rewrite.from)) return value;
  const rest = value.slice(rewrite.from.length);
  if (rest !== '' && rest[0] !== '/' && rest[0] !== '?' && rest[0] !== '#') return value; // e.g. http://legacy:80801
  return `${rewrite.to}${rest.startsWith('/') ? rest : `/${rest}`}`;
}

/**
 * Response headers from the upstream's raw list, minus hop-by-hop, as a flat [name, value, …] list for writeHead;
 * a Location under the upstream's origin is rewritten to the client's (rewriteLocation).
 */
export function clientResponseHeaders(rawHeaders: readonly string[], connection: string | string[] | undefined, location: LocationRewrite | null = null): string[] {
  const extra = connectionTokens(connection);
  const out: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    const lower = name.toLowerCase();
    if (isHopByHop(lower, extra)) continue;
    const value = rawHeaders[i + 1] as string;
    out.push(name, location !== null && lower === 'location' ? rewriteLocation(value, location) : value);
  }
  return out;
}
