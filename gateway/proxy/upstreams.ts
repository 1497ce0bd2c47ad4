/**
 * The configured upstreams: the only hosts the gateway ever connects to. Each has its own keep-alive agent,
 * kept across config reloads while its settings are unchanged. The agent owns the transport: TCP, or TLS for an
 * https:// upstream (verified against upstreams[].tls.caFile or the system CAs), so the forwarder sends the same
 * HTTP/1.1 either way.
 */
import { Agent, type AgentOptions, type ClientRequestArgs, type IncomingMessage } from 'node:http';
import { isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { createRequire } from 'node:module';
import { parse as parseUrl } from 'node:url';
import type { UpstreamConfig } from '../config/schema.ts';
import { ConfigError, type ConfigProblem } from '../config/load.ts';
import { tlsClientOptions } from '../../common/tls.ts';

/** What every request to an upstream is addressed with, worked out once (http-proxy parsed the URL per request). */
export interface UpstreamRequestTarget {
  readonly hostname: string;
  readonly port: string | number;
  /** The Host header upstream requests carry (the upstream's own authority, as http-proxy's changeOrigin sent). */
  readonly hostHeader: string;
  /** Path prefix from the upstream URL ('/' when it has none). */
  readonly basePath: string;
  /** The upstream's own origin and path prefix (no trailing slash): a Location under it is rewritten to the client's. */
  readonly locationPrefix: string;
}

export interface Upstream {
  readonly id: string;
  readonly config: UpstreamConfig;
  readonly target: URL;
  readonly agent: UpstreamAgent;
  readonly request: UpstreamRequestTarget;
}

export function requestTarget(target: URL): UpstreamRequestTarget {
  // The legacy parser on the WHATWG href gives exactly the host, port and path http-proxy used.
  const parsed = parseUrl(target.href);
  const https = parsed.protocol === 'https:';
  const basePath = parsed.path ?? '/';
  return { hostname: parsed.hostname ?? '', port: parsed.port ?? (https ? 443 : 80), hostHeader: parsed.host ?? '', basePath, locationPrefix: `${target.origin}${basePath.replace(/\/+$/, '')}` };
}

/** The Host an upstream request carries: the client's with preserveHost (when it sent one), else the upstream's own. */
export function upstreamHost(upstream: Upstream, clientHost: string | undefined): string {
  return upstream.config.preserveHost && clientHost ? clientHost : upstream.request.hostHeader;
}

/** http-proxy's own path join (collapses repeated slashes, keeps the query string untouched). */
const { urlJoin } = createRequire(import.meta.url)('http-proxy/lib/http-proxy/common.js') as { urlJoin: (...parts: string[]) => string };

/** Characters that the legacy URL parser escapes or treats specially in a path; their presence takes the slow path. */
const UNUSUAL_PATH = /[^\x21-\x7e]|["'<>`{}|\\^#]|\/\/|:\//;

/**
 * The path sent upstream for a request target (origin-form, as the forwarder has normalised it): the upstream's path
 * prefix joined with it, exactly as http-proxy (prependPath) computed it. The common case (no prefix, an ordinary
 * path) is the target itself; anything else goes through the same parse and join http-proxy used.
 */
export function upstreamPath(basePath: string, url: string): string {
  if ((basePath === '/' || basePath === '') && url.charCodeAt(0) === 47 && !UNUSUAL_PATH.test(url)) return url;
  return urlJoin(basePath, parseUrl(url).path ?? '');
}

const kIdleUntil = Symbol('strangler.idleUntil');
/** On an upstream answer whose body is being read: socket bytes read at the last sweep, and since when unchanged. */
const kBodyBytes = Symbol('strangler.bodyBytes');
const kBodyReadAt = Symbol('strangler.bodyReadAt');
/** Set on an answer whose connection the sweep closed because its body stopped arriving (bodyIdleMs). */
const kBodyIdle = Symbol('strangler.bodyIdle');
type WatchedResponse = IncomingMessage & { [kBodyBytes]?: number; [kBodyReadAt]?: number; [kBodyIdle]?: true };
type PooledSocket = Socket & { [kIdleUntil]?: number; _httpMessage?: { res?: WatchedResponse } | null };

/** True when the answer was cut because its body stopped arriving for bodyIdleTimeoutMs (see UpstreamAgent). */
export function bodyIdleTimedOut(res: IncomingMessage): boolean {
  return (res as WatchedResponse)[kBodyIdle] === true;
}
const KEEP_ALIVE_HINT = /^timeout=(\d+)/;

/**
 * The keep-alive agent of one upstream. Idle sockets are closed after `idleMs` (shortened, as node's agent does, by
 * the upstream's Keep-Alive: timeout=N hint, less 1 s) by a sweep a few times a second, not by node's agent
 * `timeout` option: that option keeps an idle timer on every upstream socket, which node re-arms on each read and
 * write and watches with a 'timeout' listener per request (about 4 µs per proxied request in the gateway benchmark).
 * The same sweep closes a busy socket whose answer's body has not advanced for `bodyIdleMs` while the gateway was
 * reading it (not paused by a slow client): an upstream that stalls mid-body would otherwise hold the client and the
 * connection for ever. It compares the socket's bytes read between sweeps, so a request pays nothing for it.
 */
export class UpstreamAgent extends Agent {
  readonly idleMs: number;
  /** Longest pause in an answer's body being read (0 = none); see the class comment. */
  readonly bodyIdleMs: number;
  /** TLS options (PEM files read) for an https:// upstream; null for plain TCP. */
  readonly tls: ConnectionOptions | null;
  readonly #sweeper: NodeJS.Timeout;
  #lastHint: string | undefined;
  #lastHintMs = 0;

  constructor(options: Omit<AgentOptions, 'timeout'> & { idleMs: number; bodyIdleMs?: number; tls?: ConnectionOptions | null }) {
    const { idleMs, bodyIdleMs = 0, tls = null, ...agentOptions } = options;
    // The agent merges its own options into each connection's (node's createSocket), so the TLS options given here
    // (the SNI name included: upstreamTls sets it from the URL) reach createConnection.
    super({ ...agentOptions, ...tls });
    this.idleMs = idleMs;
    this.bodyIdleMs = bodyIdleMs;
    this.tls = tls;
    this.#sweeper = setInterval(() => this.#sweep(), Math.max(50, Math.min(250, idleMs / 4, bodyIdleMs > 0 ? bodyIdleMs / 4 : Infinity))).unref();
  }

  override createConnection(options: ClientRequestArgs, callback?: (err: Error | null, stream: Duplex) => void): Duplex | null | undefined {
    if (this.tls === null) return super.createConnection(options, callback);
    return tlsConnect(options as ConnectionOptions);
  }

  override keepSocketAlive(socket: Socket): boolean {
    // node's own checks first (TCP keep-alive, unref, a server hint of timeout=0 or 1 means do not reuse).
    // (@types/node declares it void; node returns whether the socket may be kept.)
    if (!(super.keepSocketAlive(socket) as unknown as boolean)) return false;
    let idle = this.idleMs;
    const hint = (socket as PooledSocket)._httpMessage?.res?.headers['keep-alive'];
    if (typeof hint === 'string') {
      if (hint !== this.#lastHint) {
        const seconds = KEEP_ALIVE_HINT.exec(hint)?.[1];
        this.#lastHint = hint;
        this.#lastHintMs = seconds === undefined ? Infinity : Number(seconds) * 1000 - 1000;
      }
      idle = Math.min(idle, this.#lastHintMs);
    }
    (socket as PooledSocket)[kIdleUntil] = Date.now() + idle;
    return true;
  }

  #sweep(): void {
    const now = Date.now();
    for (const list of Object.values(this.freeSockets)) {
      if (!list) continue;
      for (const socket of [...list] as PooledSocket[]) if ((socket[kIdleUntil] ?? 0) <= now) socket.destroy();
    }
    if (this.bodyIdleMs > 0) this.#sweepBodies(now);
  }

  #sweepBodies(now: number): void {
    for (const list of Object.values(this.sockets)) {
      if (!list) continue;
      for (const socket of [...list] as PooledSocket[]) {
        const res = socket._httpMessage?.res;
        if (!res || res.complete) continue;
        if (res.isPaused() || res[kBodyReadAt] === undefined || res[kBodyBytes] !== socket.bytesRead) {
          // Advancing, or held back by a slow client (backpressure): the wait starts again.
          res[kBodyBytes] = socket.bytesRead;
          res[kBodyReadAt] = now;
        } else if (now - res[kBodyReadAt] >= this.bodyIdleMs) {
          res[kBodyIdle] = true;
          socket.destroy();
        }
      }
    }
  }

  override destroy(): void {
    clearInterval(this.#sweeper);
    super.destroy();
  }
}

/**
 * TLS options for an https:// upstream (its PEM files read now), null for http://; a file problem is reported
 * as a config problem at `upstreams[index].tls.<field>`.
 */
export function upstreamTls(config: UpstreamConfig, index: number): { tls: ConnectionOptions | null } | { problem: ConfigProblem } {
  if (!config.url.startsWith('https:')) return { tls: null };
  const read = tlsClientOptions(config.tls ?? { rejectUnauthorized: true });
  if ('options' in read) {
    // SNI and the certificate check name the upstream's own host, never a Host header passed through (preserveHost).
    const hostname = parseUrl(config.url).hostname ?? '';
    // For an IP address: no SNI ('' tells node so), and the certificate is checked against the IP.
    return { tls: { ...read.options, servername: read.options.servername ?? (isIP(hostname) === 0 ? hostname : '') } };
  }
  const p = read.problem;
  const at = `upstreams[${index}].tls`;
  return p.kind === 'unreadable'
    ? { problem: { path: `${at}.${p.field}`, expected: 'a readable PEM file', found: `${p.code} reading "${p.file}"`, hint: `relative paths are resolved against ${process.cwd()}` } }
    : { problem: { path: `${at}.keyFile`, expected: `the PEM private key of certFile "${p.certFile}"`, found: `"${p.keyFile}" (${p.code}: ${p.detail})`, hint: 'certFile and keyFile must be made for each other' } };
}

export function upstreamAgent(config: UpstreamConfig, tls: ConnectionOptions | null): UpstreamAgent {
  return new UpstreamAgent({ keepAlive: true, maxSockets: config.maxSockets, maxFreeSockets: Math.min(config.maxSockets, 64), idleMs: config.keepAliveMs, bodyIdleMs: config.bodyIdleTimeoutMs, scheduling: 'lifo', tls });
}

function sameBytes(a: unknown, b: unknown): boolean {
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => sameBytes(x, b[i]));
  return Buffer.isBuffer(a) && Buffer.isBuffer(b) ? a.equals(b) : a === b;
}

/** Same agent settings, TLS included (a PEM file whose content changed on disk makes a new agent on reload). */
function sameSettings(a: Upstream, b: UpstreamConfig, tls: ConnectionOptions | null): boolean {
  const c = a.config;
  if (c.url !== b.url || c.maxSockets !== b.maxSockets || c.keepAliveMs !== b.keepAliveMs || c.bodyIdleTimeoutMs !== b.bodyIdleTimeoutMs) return false;
  const old = a.agent.tls;
  if (old === null || tls === null) return old === tls;
  return old.rejectUnauthorized === tls.rejectUnauthorized && old.servername === tls.servername && sameBytes(old.ca, tls.ca) && sameBytes(old.cert, tls.cert) && sameBytes(old.key, tls.key);
}

/**
 * The upstreams of a config, reusing the previous agents whose settings are unchanged. Every PEM file is read
 * before any agent is made; unreadable ones throw one ConfigError listing them all (a reload then keeps the last
 * good config).
 */
export function buildUpstreams(configs: readonly UpstreamConfig[], previous?: ReadonlyMap<string, Upstream>, source = 'config'): Map<string, Upstream> {
  const problems: ConfigProblem[] = [];
  const tls = configs.map((config, i) => {
    const t = upstreamTls(config, i);
    if ('problem' in t) problems.push(t.problem);
    return 'tls' in t ? t.tls : null;
  });
  if (problems.length > 0) throw new ConfigError(source, problems);
  const out = new Map<string, Upstream>();
  configs.forEach((config, i) => {
    const old = previous?.get(config.id);
    if (old && sameSettings(old, config, tls[i] ?? null)) {
      out.set(config.id, { ...old, config });
      return;
    }
    const target = new URL(config.url);
    out.set(config.id, { id: config.id, config, target, agent: upstreamAgent(config, tls[i] ?? null), request: requestTarget(target) });
  });
  return out;
}

/** Closes the agents that the new set no longer uses. */
export function retireUpstreams(previous: ReadonlyMap<string, Upstream>, next: ReadonlyMap<string, Upstream>): void {
  for (const [id, u] of previous) if (next.get(id)?.agent !== u.agent) u.agent.destroy();
}
