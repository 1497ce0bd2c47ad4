/**
 * The data plane's request path (ENGINEERING.md §2):
 *
 *   request ─► validate ─► match route ─► identify ─► decide ──legacy──► attempt(legacy) ─► respond
 *                                                        │
 *                                                     service
 *                                                        ▼
 *                                      read body (buffer ≤ maxReplayBodyBytes)
 *                                                        ▼
 *                                 breaker.fire(attempt(service)) ──ok──► respond
 *                                                        │ failed (connect · timeout · reset · 5xx · breaker open)
 *                                                        ▼
 *                 fallback allowed? no response byte sent, body replayable, and either a safe method,
 *                 a route declared idempotent, or the service never received the request
 *                     │ yes                                       │ no
 *                     ▼                                           ▼
 *            attempt(legacy) ─► respond              502 / 504 / 503 / pass the 5xx through
 *            (x-strangler-fallback: reason)
 *
 * Every attempt resolves to a typed outcome naming the phase that failed; nothing is thrown past this file.
 * Invariant: a write is never sent to two upstreams. It goes to legacy after a service failure only if the route
 * declares it idempotent or the service provably never received it (breaker open, connection refused).
 */
import type { ClientRequest, IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { PassThrough, Readable } from 'node:stream';
import httpProxy from 'http-proxy';
import type { ErrorCode } from '../../common/errors.ts';
import { StranglerError } from '../../common/errors.ts';
import type { Target } from '../admin/types.ts';
import type { LoadedRoute } from '../config/load.ts';
import type { Runtime, Snapshot } from '../runtime.ts';
import type { Upstream } from './upstreams.ts';
import { clientResponseHeaders, requestIdOf, upstreamRequestHeaders, type ForwardedInfo } from './headers.ts';
import { isOpenBreakerError } from '../resilience/breakers.ts';
import { F, logEvent } from '../observability/log-events.ts';
import type { Identity } from '../../flags/context.ts';
import type { Logger } from '../../common/logger.ts';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'EADDRNOTAVAIL']);

export type FailurePhase = 'connect' | 'timeout' | 'reset' | 'status' | 'breaker-open' | 'client-aborted';

export type Outcome =
  | { ok: true; res: IncomingMessage }
  | { ok: false; phase: FailurePhase; /** the request may have reached the upstream */ sent: boolean; res?: IncomingMessage; error?: string };

class AttemptFailed extends Error {
  readonly outcome: Outcome;
  constructor(outcome: Outcome) {
    super(outcome.ok ? 'ok' : outcome.phase);
    this.outcome = outcome;
  }
}

type Body = { kind: 'none' } | { kind: 'buffered'; data: Buffer } | { kind: 'stream'; stream: Readable };

interface Decision {
  target: Target;
  reason: string;
  identity: Identity | null;
}

interface Pending {
  onRequest(proxyReq: ClientRequest): void;
  onResponse(res: IncomingMessage): void;
}

/** Per-request state: built once, read by every step. */
interface Exchange {
  req: IncomingMessage;
  res: ServerResponse;
  snapshot: Snapshot;
  route: LoadedRoute;
  reqId: string;
  start: number;
  decision: string;
  /** A newly minted session cookie to send with the answer. */
  setCookie: string | null;
  /** Headers sent upstream: computed once, reused by a fallback attempt. */
  upstreamHeaders: IncomingHttpHeaders;
  clientGone: boolean;
  abortCurrent: (() => void) | null;
}

function failureCode(phase: FailurePhase): ErrorCode {
  switch (phase) {
    case 'timeout':
      return 'UPSTREAM_TIMEOUT';
    case 'connect':
      return 'UPSTREAM_CONNECT_FAILED';
    case 'breaker-open':
      return 'BREAKER_OPEN';
    default:
      return 'UPSTREAM_BAD_RESPONSE';
  }
}

export class Forwarder {
  readonly #runtime: Runtime;
  readonly #proxy = httpProxy.createProxyServer({ selfHandleResponse: true, changeOrigin: true, xfwd: false, prependPath: true });
  /** The attempt currently in flight for a request (http-proxy reports proxyReq/proxyRes on the server object). */
  readonly #pending = new WeakMap<IncomingMessage, Pending>();

  /**
   * Per-request lines skip pino's redaction pass (about a fifth of the gateway's allocations in the benchmark):
   * their fields are fixed and carry no credentials (no headers; the path without its query string).
   */
  readonly #requestLog: Logger;

  constructor(runtime: Runtime) {
    this.#runtime = runtime;
    this.#requestLog = runtime.log.child({}, { redact: [] });
    this.#proxy.on('proxyReq', (proxyReq, req) => this.#pending.get(req)?.onRequest(proxyReq));
    this.#proxy.on('proxyRes', (proxyRes, req) => this.#pending.get(req)?.onResponse(proxyRes));
    // Without a listener http-proxy would throw; errors reach each attempt through web()'s callback instead.
    this.#proxy.on('error', () => {});
    this.#proxy.on('econnreset', () => {});
  }

  /** The http.Server 'request' handler. */
  handle = (req: IncomingMessage, res: ServerResponse): void => {
    const start = performance.now();
    const snapshot = this.#runtime.snapshot;
    const reqId = requestIdOf(req.headers);

    const target = this.#normalizeTarget(req);
    if (target instanceof StranglerError) return this.#reject(req, res, reqId, target);
    const route = snapshot.table.match(req.method ?? 'GET', target.host, target.path);
    if (!route) return this.#reject(req, res, reqId, new StranglerError('ROUTE_NOT_FOUND', `no route matches ${req.method} ${target.path}`));

    const decision = this.decide(snapshot, route, req, reqId);
    const ex: Exchange = {
      req,
      res,
      snapshot,
      route,
      reqId,
      start,
      decision: decision.reason,
      setCookie: decision.identity?.setCookie ?? null,
      upstreamHeaders: upstreamRequestHeaders(req, forwardedInfo(snapshot, req, reqId)),
      clientGone: false,
      abortCurrent: null,
    };
    res.once('close', () => {
      if (!res.writableFinished) {
        ex.clientGone = true;
        ex.abortCurrent?.();
      }
    });
    this.#serve(ex, decision.target).catch((err: unknown) => this.#respondError(ex, decision.target, new StranglerError('INTERNAL_ERROR', `gateway error: ${String(err)}`)));
  };

  /** Decides the target (ENGINEERING.md §2 steps 2–3): override, then the route's flag for this identity. */
  decide(snapshot: Snapshot, route: LoadedRoute, req: IncomingMessage, reqId: string): Decision {
    if (!route.service) return { target: 'legacy', reason: 'legacy-only', identity: null };
    const override = snapshot.identifier.override(req.headers);
    if (override) {
      if ('target' in override) return { target: override.target, reason: `override-${override.target}`, identity: null };
      logEvent(this.#runtime.log, 'request.override_rejected', { [F.reqId]: reqId, [F.routeId]: route.id, reason: override.rejected });
    }
    const identity = snapshot.identifier.identify(req.headers, route.userKey);
    const on = this.#runtime.flags.isEnabled(route.flag.name, identity.context);
    return { target: on ? 'service' : 'legacy', reason: on ? 'flag-on' : 'flag-off', identity };
  }

  async #serve(ex: Exchange, target: Target): Promise<void> {
    const { route, snapshot, req } = ex;
    const legacy = snapshot.upstreams.get(route.legacy) as Upstream;

    if (target === 'legacy') {
      const body: Body = hasBody(req) ? { kind: 'stream', stream: req } : { kind: 'none' };
      const outcome = await this.#attempt(ex, legacy, body, legacy.config.timeoutMs);
      return this.#finish(ex, 'legacy', outcome, null);
    }

    const service = snapshot.upstreams.get(route.service as string) as Upstream;
    const policy = snapshot.config.policies.fallbacks[route.fallback];
    const breakerPolicy = snapshot.config.policies.breakers[route.breaker];
    const breaker = snapshot.breakers.get(service.id);
    if (!policy || !breakerPolicy || !breaker) throw new Error(`route ${route.id}: policies not resolved`); // load.ts guarantees them

    const body = await readBody(req, policy.enabled ? policy.maxReplayBodyBytes : 0);
    if (ex.clientGone) return this.#record(ex, 'service', 499, true);
    if (body.kind === 'stream' && policy.enabled && policy.onBodyTooLarge === 'reject') {
      body.stream.resume();
      return this.#respondError(ex, 'service', new StranglerError('BODY_TOO_LARGE_TO_REPLAY', `request body exceeds maxReplayBodyBytes (${policy.maxReplayBodyBytes}) of fallback policy "${route.fallback}"`));
    }

    let outcome: Outcome;
    try {
      outcome = await breaker.fire(async () => {
        const o = await this.#attempt(ex, service, body, Math.min(service.config.timeoutMs, breakerPolicy.timeoutMs));
        // Only real service failures count against the breaker; a client hanging up is not the service's fault.
        if (!o.ok && o.phase !== 'client-aborted') throw new AttemptFailed(o);
        return o;
      });
    } catch (err) {
      outcome = err instanceof AttemptFailed ? err.outcome : isOpenBreakerError(err) ? { ok: false, phase: 'breaker-open', sent: false } : { ok: false, phase: 'reset', sent: true, error: String(err) };
    }
    if (outcome.ok || outcome.phase === 'client-aborted') return this.#finish(ex, 'service', outcome, null);

    const replaySafe = SAFE_METHODS.has(req.method ?? 'GET') || route.idempotent || !outcome.sent;
    const canFallback = policy.enabled && !ex.res.headersSent && body.kind !== 'stream' && replaySafe && !ex.clientGone;
    if (!canFallback) {
      if (outcome.phase === 'status' && outcome.res) return this.#finish(ex, 'service', { ok: true, res: outcome.res }, null, true);
      return this.#finish(ex, 'service', outcome, null);
    }
    outcome.res?.resume(); // discard the failed answer
    this.#runtime.stats(route.id).fallback();
    const reason = outcome.phase === 'status' ? `service-${outcome.res?.statusCode ?? 500}` : `service-${outcome.phase}`;
    logEvent(this.#runtime.log, 'request.fallback', { [F.reqId]: ex.reqId, [F.routeId]: route.id, reason, error: outcome.error });
    const second = await this.#attempt(ex, legacy, body, legacy.config.timeoutMs);
    if (!second.ok && second.phase !== 'client-aborted') {
      second.res?.resume();
      return this.#respondError(ex, 'legacy', new StranglerError('ALL_UPSTREAMS_DOWN', `service failed (${reason}) and legacy failed (${second.phase})`), reason);
    }
    return this.#finish(ex, 'legacy', second, reason);
  }

  /** One try against one upstream. Resolves; never rejects. */
  #attempt(ex: Exchange, upstream: Upstream, body: Body, timeoutMs: number): Promise<Outcome> {
    const { req, res } = ex;
    return new Promise<Outcome>((resolve) => {
      let settled = false;
      let proxyReq: ClientRequest | undefined;
      let connectTimer: NodeJS.Timeout | undefined;
      const settle = (o: Outcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        clearTimeout(connectTimer);
        ex.abortCurrent = null;
        this.#pending.delete(req);
        resolve(o);
      };
      const connecting = () => proxyReq === undefined || proxyReq.socket === null || proxyReq.socket.connecting;
      const timer = setTimeout(() => {
        const neverConnected = connecting();
        settle({ ok: false, phase: neverConnected ? 'connect' : 'timeout', sent: !neverConnected, error: `no response headers within ${timeoutMs} ms` });
        proxyReq?.destroy();
      }, timeoutMs);
      ex.abortCurrent = () => {
        settle({ ok: false, phase: 'client-aborted', sent: !connecting() });
        proxyReq?.destroy();
      };
      this.#pending.set(req, {
        onRequest: (pr) => {
          proxyReq = pr;
          const socket = pr.socket;
          if (socket?.connecting) {
            connectTimer = setTimeout(() => {
              settle({ ok: false, phase: 'connect', sent: false, error: `no connection within ${upstream.config.connectTimeoutMs} ms` });
              pr.destroy();
            }, upstream.config.connectTimeoutMs);
            socket.once('connect', () => clearTimeout(connectTimer));
          }
        },
        onResponse: (upRes) => {
          const status = upRes.statusCode ?? 502;
          settle(status >= 500 ? { ok: false, phase: 'status', sent: true, res: upRes, error: `status ${status}` } : { ok: true, res: upRes });
        },
      });
      // http-proxy copies req.headers into the upstream request; every attempt of an exchange sends the same ones.
      if (body.kind === 'buffered') ex.upstreamHeaders['content-length'] = String(body.data.length);
      req.headers = ex.upstreamHeaders;
      // Without a body http-proxy pipes `req` itself, which has ended (also on a fallback replay): no stream to make.
      const buffer = body.kind === 'buffered' ? Readable.from([body.data]) : body.kind === 'stream' ? body.stream : undefined;
      this.#proxy.web(req, res, { target: upstream.target.href, agent: upstream.agent, ...(buffer ? { buffer } : {}) }, (err: NodeJS.ErrnoException) => {
        const code = err.code ?? '';
        const neverConnected = CONNECT_ERRORS.has(code) || connecting();
        settle({ ok: false, phase: neverConnected ? 'connect' : 'reset', sent: !neverConnected, error: `${code || 'error'}: ${err.message}` });
      });
    });
  }

  /** Sends an upstream answer (or the error for a failed outcome) and records it. */
  #finish(ex: Exchange, target: Target, outcome: Outcome, fallback: string | null, passThrough5xx = false): void {
    if (!outcome.ok) {
      if (outcome.phase === 'client-aborted') return this.#record(ex, target, 499, true);
      outcome.res?.resume();
      return this.#respondError(ex, target, new StranglerError(failureCode(outcome.phase), `${target} upstream failed: ${outcome.error ?? outcome.phase}`), fallback);
    }
    const { res } = ex;
    const upRes = outcome.res;
    const status = upRes.statusCode ?? 502;
    const headers = clientResponseHeaders(upRes.rawHeaders, upRes.headers.connection);
    if (ex.snapshot.config.proxy.responseHeaders) {
      headers.push('x-strangler-route', ex.route.id, 'x-strangler-target', target);
      if (fallback) headers.push('x-strangler-fallback', fallback);
    }
    // Every header goes through this one writeHead list (nothing set earlier with setHeader), which keeps node on
    // its fast path instead of removing and re-appending each header.
    if (upRes.headers['x-request-id'] === undefined) headers.push('x-request-id', ex.reqId);
    if (ex.setCookie) headers.push('set-cookie', ex.setCookie);
    if (this.#runtime.draining) headers.push('connection', 'close');
    res.writeHead(status, headers);
    upRes.on('error', () => res.destroy());
    upRes.on('aborted', () => res.destroy());
    res.once('finish', () => this.#record(ex, target, status, status >= 500 || passThrough5xx, fallback));
    upRes.pipe(res);
  }

  #respondError(ex: Exchange, target: Target, err: StranglerError, fallback: string | null = null): void {
    const { res } = ex;
    if (!res.headersSent && !ex.clientGone) {
      const body = JSON.stringify({ ...err.toJSON(), requestId: ex.reqId });
      const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-request-id': ex.reqId };
      if (ex.snapshot.config.proxy.responseHeaders) {
        headers['x-strangler-route'] = ex.route.id;
        headers['x-strangler-target'] = target;
        if (fallback) headers['x-strangler-fallback'] = fallback;
      }
      if (ex.setCookie) headers['set-cookie'] = ex.setCookie;
      if (this.#runtime.draining) headers.connection = 'close';
      res.writeHead(err.status, headers);
      res.end(body);
    } else {
      res.destroy();
    }
    this.#record(ex, target, err.status, true, fallback, err.code);
  }

  #record(ex: Exchange, target: Target, status: number, error: boolean, fallback: string | null = null, code?: string): void {
    const durationMs = performance.now() - ex.start;
    this.#runtime.stats(ex.route.id).record(target, durationMs, error);
    const rate = ex.snapshot.config.proxy.logSampleRate;
    if (error || fallback || rate >= 1 || Math.random() < rate) {
      logEvent(this.#requestLog, error ? 'request.failed' : 'request.completed', {
        [F.reqId]: ex.reqId,
        [F.routeId]: ex.route.id,
        [F.target]: target,
        [F.decision]: ex.decision,
        [F.status]: status,
        [F.durationMs]: Math.round(durationMs * 1000) / 1000,
        method: ex.req.method,
        // the path only: query strings can carry credentials (?access_token=…)
        path: pathOf(ex.req.url),
        ...(fallback ? { fallback } : {}),
        ...(code ? { code } : {}),
      });
    }
  }

  /** Rejections before a route is known: answered locally, never forwarded. */
  #reject(req: IncomingMessage, res: ServerResponse, reqId: string, err: StranglerError): void {
    const body = JSON.stringify({ ...err.toJSON(), requestId: reqId });
    res.writeHead(err.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-request-id': reqId, ...(this.#runtime.draining ? { connection: 'close' } : {}) });
    res.end(body);
    req.resume();
    logEvent(this.#runtime.log, 'request.rejected', { [F.reqId]: reqId, code: err.code, method: req.method, path: pathOf(req.url).slice(0, 200), reason: err.message });
  }

  /**
   * Turns the request target into a path and a host for matching. Absolute-form URIs are reduced to their path
   * (their authority only selects routes, never an upstream); dot segments are refused so a path cannot climb out
   * of a route's prefix on the upstream.
   */
  #normalizeTarget(req: IncomingMessage): { path: string; host: string } | StranglerError {
    let url = req.url ?? '/';
    let host = req.headers.host ?? '';
    if (!url.startsWith('/')) {
      if (!/^https?:\/\//i.test(url)) return new StranglerError('BAD_REQUEST', 'request target must be a path or an absolute http(s) URL');
      try {
        const parsed = new URL(url);
        host = parsed.host;
        url = `${parsed.pathname}${parsed.search}`;
        req.url = url;
      } catch {
        return new StranglerError('BAD_REQUEST', 'malformed absolute request target');
      }
    }
    if (req.headers['transfer-encoding'] !== undefined && req.headers['content-length'] !== undefined) {
      return new StranglerError('BAD_REQUEST', 'both Content-Length and Transfer-Encoding were sent');
    }
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (/(^|\/)(\.|%2e){1,2}(\/|$)/i.test(path) || path.includes('\\')) return new StranglerError('BAD_REQUEST', 'dot segments or backslashes in the path are not allowed');
    const colon = host.lastIndexOf(':');
    const bare = colon > host.lastIndexOf(']') ? host.slice(0, colon) : host;
    return { path, host: bare.toLowerCase() };
  }

  /** Routes a WebSocket (or any) upgrade by the same decision; no fallback once a socket is handed over. */
  handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const snapshot = this.#runtime.snapshot;
    const reqId = requestIdOf(req.headers);
    const target = this.#normalizeTarget(req);
    const route = target instanceof StranglerError ? undefined : snapshot.table.match(req.method ?? 'GET', target.host, target.path);
    if (!route) {
      socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    const decision = this.decide(snapshot, route, req, reqId);
    const upstream = snapshot.upstreams.get(decision.target === 'service' ? (route.service as string) : route.legacy) as Upstream;
    req.headers = upstreamRequestHeaders(req, forwardedInfo(snapshot, req, reqId), true);
    logEvent(this.#runtime.log, 'upgrade.routed', { [F.reqId]: reqId, [F.routeId]: route.id, [F.target]: decision.target, [F.decision]: decision.reason });
    this.#proxy.ws(req, socket, head, { target: upstream.target.href }, (err: Error) => {
      logEvent(this.#runtime.log, 'upgrade.failed', { [F.reqId]: reqId, [F.routeId]: route.id, err: err.message });
      socket.destroy();
    });
  };

  close(): void {
    this.#proxy.close();
  }
}

function forwardedInfo(snapshot: Snapshot, req: IncomingMessage, reqId: string): ForwardedInfo {
  return {
    reqId,
    clientIp: req.socket.remoteAddress ?? '',
    proto: 'http',
    host: req.headers.host ?? '',
    trustForwarded: snapshot.config.proxy.trustForwardedHeaders,
    drop: [snapshot.config.identity.override.header.toLowerCase()],
  };
}

function pathOf(url: string | undefined): string {
  const q = url?.indexOf('?') ?? -1;
  return q === -1 ? (url ?? '') : (url as string).slice(0, q);
}

function hasBody(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  return (len !== undefined && len !== '0') || req.headers['transfer-encoding'] !== undefined;
}

/**
 * Buffers the body up to `limit` bytes so it can be replayed. Past the limit it returns a stream that yields what
 * was read followed by the rest: forwardable once, not replayable.
 */
function readBody(req: IncomingMessage, limit: number): Promise<Body> {
  if (!hasBody(req)) return Promise.resolve({ kind: 'none' });
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.resolve({ kind: 'stream', stream: req });
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      chunks.push(chunk);
      if (size > limit) {
        cleanup();
        req.pause();
        const rest = new PassThrough();
        for (const c of chunks) rest.write(c);
        req.pipe(rest);
        resolve({ kind: 'stream', stream: rest });
      }
    };
    const onEnd = () => {
      cleanup();
      resolve({ kind: 'buffered', data: Buffer.concat(chunks, size) });
    };
    const onClose = () => {
      cleanup();
      resolve({ kind: 'buffered', data: Buffer.concat(chunks, size) });
    };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('close', onClose);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('close', onClose);
  });
}
