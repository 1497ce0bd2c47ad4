/**
 * The configured upstreams: the only hosts the gateway ever connects to. Each has its own keep-alive agent,
 * kept across config reloads while its settings are unchanged.
 */
import { Agent, type AgentOptions, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { createRequire } from 'node:module';
import { parse as parseUrl } from 'node:url';
import type { UpstreamConfig } from '../config/schema.ts';

/** What every request to an upstream is addressed with, worked out once (http-proxy parsed the URL per request). */
export interface UpstreamRequestTarget {
  readonly https: boolean;
  readonly hostname: string;
  readonly port: string | number;
  /** The Host header upstream requests carry (the upstream's own authority, as http-proxy's changeOrigin sent). */
  readonly hostHeader: string;
  /** Path prefix from the upstream URL ('/' when it has none). */
  readonly basePath: string;
}

export interface Upstream {
  readonly id: string;
  readonly config: UpstreamConfig;
  readonly target: URL;
  readonly agent: Agent;
  readonly request: UpstreamRequestTarget;
}

function requestTarget(target: URL): UpstreamRequestTarget {
  // The legacy parser on the WHATWG href gives exactly the host, port and path http-proxy used.
  const parsed = parseUrl(target.href);
  const https = parsed.protocol === 'https:';
  return { https, hostname: parsed.hostname ?? '', port: parsed.port ?? (https ? 443 : 80), hostHeader: parsed.host ?? '', basePath: parsed.path ?? '/' };
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
type PooledSocket = Socket & { [kIdleUntil]?: number; _httpMessage?: { res?: IncomingMessage } | null };
const KEEP_ALIVE_HINT = /^timeout=(\d+)/;

/**
 * The keep-alive agent of one upstream. Idle sockets are closed after `idleMs` (shortened, as node's agent does, by
 * the upstream's Keep-Alive: timeout=N hint, less 1 s) by a sweep a few times a second, not by node's agent
 * `timeout` option: that option keeps an idle timer on every upstream socket, which node re-arms on each read and
 * write and watches with a 'timeout' listener per request (about 4 µs per proxied request in the gateway benchmark).
 */
export class UpstreamAgent extends Agent {
  readonly idleMs: number;
  readonly #sweeper: NodeJS.Timeout;
  #lastHint: string | undefined;
  #lastHintMs = 0;

  constructor(options: Omit<AgentOptions, 'timeout'> & { idleMs: number }) {
    const { idleMs, ...agentOptions } = options;
    super(agentOptions);
    this.idleMs = idleMs;
    this.#sweeper = setInterval(() => this.#sweep(), Math.max(50, Math.min(250, idleMs / 4))).unref();
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
  }

  override destroy(): void {
    clearInterval(this.#sweeper);
    super.destroy();
  }
}

function sameSettings(a: UpstreamConfig, b: UpstreamConfig): boolean {
  return a.url === b.url && a.maxSockets === b.maxSockets && a.keepAliveMs === b.keepAliveMs;
}

export function buildUpstreams(configs: readonly UpstreamConfig[], previous?: ReadonlyMap<string, Upstream>): Map<string, Upstream> {
  const out = new Map<string, Upstream>();
  for (const config of configs) {
    const old = previous?.get(config.id);
    if (old && sameSettings(old.config, config)) {
      out.set(config.id, { ...old, config });
      continue;
    }
    const agent = new UpstreamAgent({ keepAlive: true, maxSockets: config.maxSockets, maxFreeSockets: Math.min(config.maxSockets, 64), idleMs: config.keepAliveMs, scheduling: 'lifo' });
    const target = new URL(config.url);
    out.set(config.id, { id: config.id, config, target, agent, request: requestTarget(target) });
  }
  return out;
}

/** Closes the agents that the new set no longer uses. */
export function retireUpstreams(previous: ReadonlyMap<string, Upstream>, next: ReadonlyMap<string, Upstream>): void {
  for (const [id, u] of previous) if (next.get(id)?.agent !== u.agent) u.agent.destroy();
}
