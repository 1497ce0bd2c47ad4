/**
 * The configured upstreams: the only hosts the gateway ever connects to. Each has its own keep-alive agent,
 * kept across config reloads while its settings are unchanged.
 */
import { Agent } from 'node:http';
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
    const agent = new Agent({ keepAlive: true, maxSockets: config.maxSockets, maxFreeSockets: Math.min(config.maxSockets, 64), timeout: config.keepAliveMs, scheduling: 'lifo' });
    const target = new URL(config.url);
    out.set(config.id, { id: config.id, config, target, agent, request: requestTarget(target) });
  }
  return out;
}

/** Closes the agents that the new set no longer uses. */
export function retireUpstreams(previous: ReadonlyMap<string, Upstream>, next: ReadonlyMap<string, Upstream>): void {
  for (const [id, u] of previous) if (next.get(id)?.agent !== u.agent) u.agent.destroy();
}
