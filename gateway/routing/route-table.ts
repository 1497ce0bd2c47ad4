/**
 * The precompiled route table: built once per config (re)load, read on every request. Routes are tried in config
 * order and the first match wins. Matching never builds a regex per request.
 */
import type { LoadedRoute } from '../config/load.ts';

const ESCAPE = /[.*+?^${}()|[\]\\]/g;

/** "/api/orders/:id/*" → /^\/api\/orders\/[^/]+(?:\/.*)?$/. Throws with a reason on a malformed pattern. */
export function compilePattern(pattern: string): RegExp {
  if (!pattern.startsWith('/')) throw new Error('a pattern starts with "/"');
  const segments = pattern.split('/').slice(1);
  let source = '^';
  segments.forEach((segment, i) => {
    const last = i === segments.length - 1;
    if (segment === '*') {
      if (!last) throw new Error('"*" may only be the last segment');
      source += '(?:/.*)?';
      return;
    }
    if (segment.startsWith(':')) {
      if (!/^:[A-Za-z_][A-Za-z0-9_]*$/.test(segment)) throw new Error(`bad parameter "${segment}": use ":name"`);
      source += '/[^/]+';
      return;
    }
    if (segment.includes('*') || segment.includes(':')) throw new Error(`segment "${segment}" mixes literals with ":" or "*"`);
    source += `/${segment.replace(ESCAPE, '\\$&')}`;
  });
  return new RegExp(`${source}/?$`);
}

interface CompiledRoute {
  route: LoadedRoute;
  methods: ReadonlySet<string> | null;
  host: string | null;
  prefix: string | null;
  pattern: RegExp | null;
}

export class RouteTable {
  readonly #routes: CompiledRoute[];

  constructor(routes: readonly LoadedRoute[]) {
    this.#routes = routes.map((route) => {
      const prefix = route.match.pathPrefix ?? null;
      return {
        route,
        // A route that takes GET takes HEAD too: HEAD is GET without the body (RFC 9110 §9.3.2), as nginx and express have it.
        methods: route.match.methods ? new Set(route.match.methods.includes('GET') ? [...route.match.methods, 'HEAD'] : route.match.methods) : null,
        host: route.match.host?.toLowerCase() ?? null,
        // "/api/orders/" and "/api/orders" both mean the subtree at /api/orders.
        prefix: prefix === null ? null : prefix.length > 1 && prefix.endsWith('/') ? prefix.slice(0, -1) : prefix,
        pattern: route.match.pattern ? compilePattern(route.match.pattern) : null,
      };
    });
  }

  get routes(): LoadedRoute[] {
    return this.#routes.map((c) => c.route);
  }

  byId(id: string): LoadedRoute | undefined {
    return this.#routes.find((c) => c.route.id === id)?.route;
  }

  /**
   * @param path the request path without the query string
   * @param host the Host header without port, lower-cased
   */
  match(method: string, host: string, path: string): LoadedRoute | undefined {
    for (const c of this.#routes) {
      if (c.methods !== null && !c.methods.has(method)) continue;
      if (c.host !== null && c.host !== host) continue;
      if (c.prefix !== null) {
        if (c.prefix === '/' || path === c.prefix || (path.startsWith(c.prefix) && path.charCodeAt(c.prefix.length) === 47 /* '/' */)) return c.route;
        continue;
      }
      if (c.pattern !== null && c.pattern.test(path)) return c.route;
    }
    return undefined;
  }
}
