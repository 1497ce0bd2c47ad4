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
import { request as httpRequest, STATUS_CODES, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage, type RequestOptions, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import { PassThrough, type Readable } from 'node:stream';
import type { ErrorCode } from '../../common/errors.ts';
import { StranglerError } from '../../common/errors.ts';
import type { Target } from '../admin/types.ts';
import type { LoadedRoute } from '../config/load.ts';
import type { Runtime, Snapshot } from '../runtime.ts';
import { bodyIdleTimedOut, upstreamHost, upstreamPath, type Upstream } from './upstreams.ts';
import { clientHost, clientResponseHeaders, clientScheme, isHopByHop, rawHeader, requestIdOf, upstreamRequestHeaders, type ForwardedInfo, type LocationRewrite } from './headers.ts';
import { isOpenBreakerError, type Breaker } from '../resilience/breakers.ts';
import { F, logEvent, RequestLog } from '../observability/log-events.ts';
import type { Identity } from '../../flags/context.ts';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
const DOT_SEGMENT = /(^|\/|%2f|%5c)(\.|%2e){1,2}(\/|;|%2f|%5c|$)/i;
/** The status logged for a request whose client hung up before its answer was complete (nginx's convention). */
const CLIENT_CLOSED = 499;
/** Sends of one request after stale pooled connections, at most (each failure retires that connection). */
const MAX_STALE_RETRIES = 3;
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

/** Per-request state: built once, read by every step. Found from the response through `kExchange`. */
class Exchange {
  readonly forwarder: Forwarder;
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly snapshot: Snapshot;
  readonly route: LoadedRoute;
  readonly reqId: string;
  readonly start: number;
  readonly decision: string;
  /** The request path without its query string, as matched (and logged: query strings can carry credentials). */
  readonly path: string;
  /** A newly minted session cookie to send with the answer. */
  readonly setCookie: string | null;
  /** Headers sent upstream: computed once, reused by a fallback attempt. */
  readonly upstreamHeaders: IncomingHttpHeaders;
  clientGone = false;
  /** The attempt in flight, if any (a client hanging up aborts it). */
  attempt: Attempt | null = null;
  /** The upstream answer being relayed to the client. */
  upRes: IncomingMessage | null = null;
  /**
   * The upstream answer broke off mid-body, or stopped arriving for bodyIdleTimeoutMs ('timeout'): the client's
   * response is cut, the upstream's failure, not the client's.
   */
  upstreamBroke: 'reset' | 'timeout' | null = null;
  /** Set when the answer is sent, read by the 'close' listener to record it. */
  target: Target = 'legacy';
  status = 0;
  error = false;
  fallback: string | null = null;

  constructor(forwarder: Forwarder, req: IncomingMessage, res: ServerResponse, snapshot: Snapshot, route: LoadedRoute, reqId: string, start: number, path: string, decision: Decision, upstreamHeaders: IncomingHttpHeaders) {
    this.forwarder = forwarder;
    this.req = req;
    this.res = res;
    this.snapshot = snapshot;
    this.route = route;
    this.reqId = reqId;
    this.start = start;
    this.decision = decision.reason;
    this.path = path;
    this.setCookie = decision.identity?.setCookie ?? null;
    this.upstreamHeaders = upstreamHeaders;
  }
}

/** What #record reads of a request: an Exchange, or a WebSocket handshake (PendingUpgrade). */
type Recorded = Pick<Exchange, 'req' | 'snapshot' | 'route' | 'reqId' | 'start' | 'decision' | 'path'>;

/** Where per-request state hangs off node's own objects, so listeners can be shared functions instead of closures. */
const kExchange = Symbol('strangler.exchange');
const kAttempt = Symbol('strangler.attempt');
/** Set on the response of a request that waits for `100 Continue` before sending its body (handleContinue). */
const kContinue = Symbol('strangler.continue');
type ExchangeResponse = ServerResponse & { [kExchange]?: Exchange | null; [kContinue]?: boolean };
type AttemptRequest = ClientRequest & { [kAttempt]?: Attempt };
type UpstreamResponse = IncomingMessage & { [kExchange]?: Exchange };

/**
 * One try against one upstream: an http.request on the upstream's keep-alive agent, guarded by a timeout (and a
 * connect timeout when a new connection is opened). It settles exactly once, with a typed outcome, through `done`.
 */
class Attempt {
  readonly ex: Exchange;
  readonly upstream: Upstream;
  readonly timeoutMs: number;
  readonly done: (o: Outcome, ex: Exchange) => void;
  /** A service attempt: its breaker needs the service's own outcome, even after the client has hung up (abort). */
  readonly forBreaker: boolean;
  proxyReq: ClientRequest | null = null;
  body: Body = NO_BODY;
  options: RequestOptions = {};
  /** Times the request was sent again after a stale pooled connection (retryStale). */
  staleRetries = 0;
  /** The connection is open (for TLS: the handshake is done), so what is written reaches the upstream. */
  ready = false;
  timer: NodeJS.Timeout | undefined;
  connectTimer: NodeJS.Timeout | undefined;
  settled = false;

  constructor(ex: Exchange, upstream: Upstream, timeoutMs: number, done: (o: Outcome, ex: Exchange) => void, forBreaker = false) {
    this.ex = ex;
    this.upstream = upstream;
    this.timeoutMs = timeoutMs;
    this.done = done;
    this.forBreaker = forBreaker;
  }

  start(body: Body): void {
    const { ex, upstream } = this;
    const { req } = ex;
    const headers = ex.upstreamHeaders;
    if (body.kind === 'buffered') headers['content-length'] = String(body.data.length);
    // As http-proxy did (its deleteLength pass): DELETE and OPTIONS without a length say length 0.
    else if ((req.method === 'DELETE' || req.method === 'OPTIONS') && !headers['content-length']) headers['content-length'] = '0';
    // A flat header list is stored as the request head at once (no setHeader per header); Host last, for the upstream.
    const list: string[] = [];
    for (const name in headers) {
      const value = headers[name];
      if (value === undefined) continue;
      if (typeof value === 'string') list.push(name, value);
      else for (const v of value) list.push(name, v);
    }
    list.push('host', upstreamHost(upstream, req.headers.host));
    this.body = body;
    this.options = {
      hostname: upstream.request.hostname,
      port: upstream.request.port,
      method: req.method,
      path: upstreamPath(upstream.request.basePath, req.url ?? '/'),
      headers: list,
      agent: upstream.agent,
    };
    // May throw (a header value node refuses); then nothing is armed yet and the caller answers with an error.
    this.send();
    ex.attempt = this;
    // The wait for response headers starts once the request is sent: for a streamed body, when its last byte is
    // written (onStreamedBodySent), so a slow upload is not cut by the upstream's timeout (as Envoy's route timeout).
    // Until then the client's upload is bounded by proxy.requestTimeoutMs.
    if (body.kind !== 'stream') this.timer = setTimeout(onAttemptTimeout, this.timeoutMs, this);
  }

  /** Sends the request (again, after a stale pooled connection) on a connection from the upstream's agent. */
  send(): void {
    const { req } = this.ex;
    const body = this.body;
    // http.request for https:// upstreams too: their agent makes TLS connections (upstreams.ts).
    const proxyReq: AttemptRequest = httpRequest(this.options);
    proxyReq[kAttempt] = this;
    this.proxyReq = proxyReq;
    proxyReq.on('socket', onUpstreamSocket);
    proxyReq.on('response', onUpstreamResponse);
    proxyReq.on('error', onUpstreamError);
    if (body.kind === 'none') proxyReq.end();
    else if (body.kind === 'buffered') proxyReq.end(body.data);
    else {
      // Errors of the client's body stream end the attempt like an upstream error (as http-proxy reported them).
      req.on('error', (err: Error) => this.failed(err));
      proxyReq.once('finish', onStreamedBodySent);
      body.stream.pipe(proxyReq);
    }
  }

  /**
   * The keep-alive race: a pooled connection that the upstream closed (its idle timeout, shorter than ours and not
   * announced) resets as the request goes out, before any answer. The upstream did not act on a request it never
   * read, and a replayable request may be sent again, on another connection (as Go's HTTP transport does). Not for a
   * new connection, a streamed body, or a write the route does not declare idempotent.
   */
  retryStale(code: string): boolean {
    const { proxyReq, ex } = this;
    // A settled attempt (timed out, client gone) destroys its request, which then errors: that is not a stale connection.
    if (this.settled || !proxyReq?.reusedSocket || (code !== 'ECONNRESET' && code !== 'EPIPE') || this.staleRetries >= MAX_STALE_RETRIES || ex.clientGone) return false;
    if (this.body.kind === 'stream' || !(SAFE_METHODS.has(ex.req.method ?? 'GET') || ex.route.idempotent)) return false;
    this.staleRetries++;
    (proxyReq as AttemptRequest)[kAttempt] = undefined;
    proxyReq.destroy();
    clearTimeout(this.connectTimer);
    this.ready = false;
    ex.forwarder.staleConnection(ex, this.upstream, code, this.staleRetries);
    this.send();
    return true;
  }

  connecting(): boolean {
    return !this.ready;
  }

  /**
   * A write of the request failed (WriteGuard): the upstream closed the connection, typically right after answering
   * early (413, 401) without reading the whole body. The rest of the client's body is discarded, not forwarded; the
   * answer (if any) is read from the connection and relayed, and the read side's error fails the attempt otherwise.
   */
  bodyWriteFailed(): void {
    const { body, proxyReq } = this;
    if (body.kind === 'stream' && proxyReq) {
      body.stream.unpipe(proxyReq);
      body.stream.resume();
    }
    // The request will not finish now (onStreamedBodySent): the wait for an answer is bounded from here.
    this.awaitAnswer();
  }

  /** Starts the wait for response headers of a streamed body, once: its last byte was written, or a write failed. */
  awaitAnswer(): void {
    if (!this.settled && this.timer === undefined) this.timer = setTimeout(onAttemptTimeout, this.timeoutMs, this);
  }

  settle(o: Outcome): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    clearTimeout(this.connectTimer);
    if (this.ex.attempt === this) this.ex.attempt = null;
    this.done(o, this.ex);
  }

  /**
   * The client hung up. A service attempt whose request goes out whole (no streamed body) is left to finish, bounded
   * by its timeout, and settles later with the service's own outcome for its breaker (the answer is discarded):
   * counting a client that gives up first as a success would keep the breaker of a hung service closed, and close it
   * on a half-open trial. Returns whether the attempt goes on.
   */
  abort(): boolean {
    if (this.outlivesClient()) return true;
    this.settle({ ok: false, phase: 'client-aborted', sent: !this.connecting() });
    this.proxyReq?.destroy();
    return false;
  }

  /** A service attempt whose request goes out whole: a streamed upload is cut with its client, so that one cannot. */
  outlivesClient(): boolean {
    return this.forBreaker && this.body.kind !== 'stream';
  }

  failed(err: NodeJS.ErrnoException): void {
    const code = err.code ?? '';
    // A reset caused by the client going away is the client's doing: its 'close' settles the attempt.
    if (code === 'ECONNRESET' && this.ex.req.socket.destroyed && !this.outlivesClient()) {
      this.proxyReq?.destroy();
      return;
    }
    if (this.retryStale(code)) return;
    const neverConnected = CONNECT_ERRORS.has(code) || this.connecting();
    this.settle({ ok: false, phase: neverConnected ? 'connect' : 'reset', sent: !neverConnected, error: `${code || 'error'}: ${err.message}` });
  }
}

function onAttemptTimeout(a: Attempt): void {
  const neverConnected = a.connecting();
  a.settle({ ok: false, phase: neverConnected ? 'connect' : 'timeout', sent: !neverConnected, error: `no response headers within ${a.timeoutMs} ms` });
  a.proxyReq?.destroy();
}

function onStreamedBodySent(this: AttemptRequest): void {
  this[kAttempt]?.awaitAnswer();
}

function onConnectTimeout(a: Attempt): void {
  a.settle({ ok: false, phase: 'connect', sent: false, error: `no connection within ${a.upstream.config.connectTimeoutMs} ms` });
  a.proxyReq?.destroy();
}

function onUpstreamSocket(this: AttemptRequest, socket: Socket): void {
  const a = this[kAttempt];
  if (!a || a.settled) return;
  if (a.body.kind !== 'none') guardWrites(socket);
  // A pooled socket is open already; a new one is still connecting (node hands it over before any I/O completes).
  if (!socket.connecting) {
    a.ready = true;
    return;
  }
  a.connectTimer = setTimeout(onConnectTimeout, a.upstream.config.connectTimeoutMs, a);
  // For TLS the connect timeout covers the handshake too: a failed certificate check means nothing was sent.
  socket.once(socket instanceof TLSSocket ? 'secureConnect' : 'connect', () => {
    a.ready = true;
    clearTimeout(a.connectTimer);
  });
}

/**
 * An upstream may answer before it has read the whole request body (413, 401: nginx and most apps do) and then close
 * the connection, so the gateway's next write of the body fails (EPIPE, ECONNRESET). Node destroys a socket on a
 * failed write, which throws away the answer still unread in the kernel's receive buffer, and the client would get a
 * 502 instead of the upstream's answer (Envoy and nginx relay it). On a socket that carries a request body, a failed
 * write is therefore not fatal: it is reported to the attempt (which stops sending the body), later writes are
 * dropped, and the read side decides: the answer is read and relayed, then the read fails or ends, which fails the
 * attempt only if no answer came. Installed once per socket, on the first request with a body it carries.
 * Writable calls _write/_writev one at a time, so one pending callback per socket suffices (no closure per write).
 */
class WriteGuard {
  readonly #socket: GuardedSocket;
  readonly write: Socket['_write'];
  readonly writev: NonNullable<Socket['_writev']>;
  /** The callback of the write in progress. */
  cb: ((err?: Error | null) => void) | null = null;
  failed = false;

  constructor(socket: GuardedSocket) {
    this.#socket = socket;
    this.write = socket._write;
    this.writev = socket._writev as NonNullable<Socket['_writev']>;
  }

  readonly written = (err?: Error | null): void => {
    const cb = this.cb as (err?: Error | null) => void;
    this.cb = null;
    const code = (err as NodeJS.ErrnoException | null | undefined)?.code;
    if (code !== 'EPIPE' && code !== 'ECONNRESET') return cb(err);
    this.failed = true;
    cb();
    (this.#socket._httpMessage as AttemptRequest | null | undefined)?.[kAttempt]?.bodyWriteFailed();
  };
}

const kWriteGuard = Symbol('strangler.writeGuard');
type GuardedSocket = Socket & { [kWriteGuard]?: WriteGuard; _httpMessage?: ClientRequest | null };

function guardWrites(socket: GuardedSocket): void {
  if (socket[kWriteGuard]) return;
  socket[kWriteGuard] = new WriteGuard(socket);
  socket._write = guardedWrite;
  socket._writev = guardedWritev;
}

function guardedWrite(this: GuardedSocket, chunk: unknown, encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
  const guard = this[kWriteGuard] as WriteGuard;
  if (guard.failed) return cb(); // the connection is closing: the data is dropped
  guard.cb = cb;
  guard.write.call(this, chunk, encoding, guard.written);
}

function guardedWritev(this: GuardedSocket, chunks: { chunk: unknown; encoding: BufferEncoding }[], cb: (err?: Error | null) => void): void {
  const guard = this[kWriteGuard] as WriteGuard;
  if (guard.failed) return cb();
  guard.cb = cb;
  guard.writev.call(this, chunks, guard.written);
}

function onUpstreamResponse(this: AttemptRequest, upRes: IncomingMessage): void {
  const a = this[kAttempt];
  if (!a) return;
  const status = upRes.statusCode ?? 502;
  // As on requests (#normalizeTarget): a coding other than chunked would reach the client still applied but named
  // nowhere (Transfer-Encoding is hop-by-hop), a body it cannot decode. Envoy's codec refuses such an answer as a
  // protocol error (502, the upstream connection closed); here it is a broken answer, which may fall back.
  const te = rawHeader(upRes.rawHeaders, 'transfer-encoding');
  if (te !== undefined && !isChunkedOnly(te)) {
    upRes.destroy();
    return a.settle({ ok: false, phase: 'reset', sent: true, error: `unsupported Transfer-Encoding "${te.slice(0, 100)}" in the answer (only "chunked")` });
  }
  a.settle(status >= 500 ? { ok: false, phase: 'status', sent: true, res: upRes, error: `status ${status}` } : { ok: true, res: upRes });
}

function onUpstreamError(this: AttemptRequest, err: NodeJS.ErrnoException): void {
  this[kAttempt]?.failed(err);
}

function onUpstreamData(this: UpstreamResponse, chunk: Buffer): void {
  const res = this[kExchange]?.res;
  if (!res || res.write(chunk)) return;
  this.pause();
  res.once('drain', () => this.resume());
}

function onUpstreamEnd(this: UpstreamResponse): void {
  this[kExchange]?.res.end();
}

/** An upstream answer that breaks mid-body cannot be completed: the client's response is cut. */
function onUpstreamBodyError(this: UpstreamResponse): void {
  const ex = this[kExchange];
  if (!ex) return;
  ex.upstreamBroke = bodyIdleTimedOut(this) ? 'timeout' : 'reset';
  ex.res.destroy();
}

/** The JSON body of every answer the gateway makes itself: the error with its stable code, and the request id. */
function errorBody(err: StranglerError, requestId: string): string {
  return JSON.stringify({ ...err.toJSON(), requestId });
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
  #inflight = 0;
  /** Client sockets of proxied WebSocket upgrades, from routing until they close (the drain waits for them too). */
  readonly #upgrades = new Set<Duplex>();
  #idle: (() => void) | null = null;

  /** request.completed / request.failed lines (fixed fields, serialised directly; see RequestLog). */
  readonly #requestLog: RequestLog;

  constructor(runtime: Runtime) {
    this.#runtime = runtime;
    this.#requestLog = new RequestLog(runtime.log);
  }

  /** A request sent again after a stale pooled connection (Attempt.retryStale). */
  staleConnection(ex: Exchange, upstream: Upstream, code: string, retry: number): void {
    logEvent(this.#runtime.log, 'upstream.stale_connection', { [F.reqId]: ex.reqId, [F.routeId]: ex.route.id, upstream: upstream.id, code, retry, hint: 'the upstream closed an idle keep-alive connection first: set upstreams[].keepAliveMs below its idle timeout' });
  }

  /** Requests whose response has not closed yet. */
  get inflight(): number {
    return this.#inflight;
  }

  /** Proxied WebSocket connections still open. */
  get websockets(): number {
    return this.#upgrades.size;
  }

  /** Resolves when no request is in flight and no WebSocket is open. */
  whenIdle(): Promise<void> {
    if (this.#inflight === 0 && this.#upgrades.size === 0) return Promise.resolve();
    return new Promise((resolve) => (this.#idle = resolve));
  }

  #maybeIdle(): void {
    if (this.#inflight === 0 && this.#upgrades.size === 0 && this.#idle) {
      const idle = this.#idle;
      this.#idle = null;
      idle();
    }
  }

  /**
   * One shared 'close' listener for every response (`this` is the response): no closure per request. It also
   * records relayed answers (node emits 'close' just after 'finish'), so a response carries one listener, not two.
   */
  readonly #onClose = ((forwarder: Forwarder) =>
    function onResponseClose(this: ExchangeResponse): void {
      forwarder.#closed(this);
    })(this);

  #closed(res: ExchangeResponse): void {
    if (--this.#inflight === 0) this.#maybeIdle();
    const ex = res[kExchange];
    if (!ex) return;
    // An upstream answer relayed in full (the gateway's own answers are recorded where they are sent).
    if (res.writableFinished) {
      if (ex.upRes) this.#record(ex, ex.target, ex.status, ex.error, ex.fallback);
      return;
    }
    if (ex.upstreamBroke) return this.#record(ex, ex.target, ex.status, true, ex.fallback, failureCode(ex.upstreamBroke));
    ex.clientGone = true;
    // A service attempt that goes on for its breaker (Attempt.abort) settles later, when nothing is recorded.
    if (ex.attempt?.abort()) return this.#record(ex, 'service', CLIENT_CLOSED, true);
    if (ex.upRes) {
      // Mid-body: the rest of the upstream answer has nowhere to go, and its connection cannot be reused.
      if (!ex.upRes.complete) ex.upRes.destroy();
      this.#record(ex, ex.target, CLIENT_CLOSED, true, ex.fallback);
    }
  }

  /** Completes a legacy attempt; runs in a socket event, so nothing may be thrown from here. */
  static readonly #legacyDone = (outcome: Outcome, ex: Exchange): void => {
    try {
      ex.forwarder.#finish(ex, 'legacy', outcome, null);
    } catch (err) {
      ex.forwarder.#respondError(ex, 'legacy', new StranglerError('INTERNAL_ERROR', `gateway error: ${String(err)}`));
    }
  };

  /** The http.Server 'request' handler. */
  handle = (req: IncomingMessage, res: ServerResponse): void => {
    const start = performance.now();
    this.#inflight++;
    (res as ExchangeResponse)[kExchange] = null;
    res.on('close', this.#onClose);
    const snapshot = this.#runtime.snapshot;
    const reqId = requestIdOf(req.headers);

    const target = this.#normalizeTarget(req);
    if (target instanceof StranglerError) return this.#reject(req, res, reqId, target);
    const route = snapshot.table.match(req.method ?? 'GET', target.host, target.path);
    if (!route) return this.#reject(req, res, reqId, new StranglerError('ROUTE_NOT_FOUND', `no route matches ${req.method} ${target.path}`));

    const decision = this.decide(snapshot, route, req, reqId);
    const ex = new Exchange(this, req, res, snapshot, route, reqId, start, target.path, decision, upstreamRequestHeaders(req, forwardedInfo(snapshot, req, reqId)));
    (res as ExchangeResponse)[kExchange] = ex;
    if (decision.target === 'legacy') return this.#serveLegacy(ex);
    try {
      this.#serveService(ex);
    } catch (err) {
      this.#respondError(ex, 'service', new StranglerError('INTERNAL_ERROR', `gateway error: ${String(err)}`));
    }
  };

  /**
   * The http.Server 'checkContinue' handler: an HTTP/1.1 request with `Expect: 100-continue`. With this listener node
   * no longer sends `100 Continue` itself; the forwarder sends it once it is going to read the body (expectBody), so
   * a request refused first (no route, a declared length over a replay limit it must meet) is answered before the
   * client uploads anything, and node closes that connection (it never keeps one alive after a final answer that
   * was not preceded by 100 Continue: the client may send its body or not).
   */
  handleContinue = (req: IncomingMessage, res: ServerResponse): void => {
    (res as ExchangeResponse)[kContinue] = true;
    this.handle(req, res);
  };

  /** Decides the target (ENGINEERING.md §2 steps 2–3): override, then the route's flag for this identity. */
  decide(snapshot: Snapshot, route: LoadedRoute, req: IncomingMessage, reqId: string): Decision {
    if (!route.service) return { target: 'legacy', reason: 'legacy-only', identity: null };
    const override = snapshot.identifier.override(req.headers);
    if (override) {
      if ('target' in override) return { target: override.target, reason: `override-${override.target}`, identity: null };
      logEvent(this.#runtime.log, 'request.override_rejected', { [F.reqId]: reqId, [F.routeId]: route.id, reason: override.rejected });
    }
    const identity = snapshot.identifier.identify(req.headers, route.userKey, snapshot.config.proxy.trustForwardedHeaders);
    const on = this.#runtime.flags.isEnabled(route.flag.name, identity.context);
    return { target: on ? 'service' : 'legacy', reason: on ? 'flag-on' : 'flag-off', identity };
  }

  /** The legacy side: one attempt, no breaker, no promise. */
  #serveLegacy(ex: Exchange): void {
    const { req } = ex;
    const legacy = ex.snapshot.upstreams.get(ex.route.legacy) as Upstream;
    const body: Body = hasBody(req) ? { kind: 'stream', stream: req } : NO_BODY;
    if (body !== NO_BODY) expectBody(ex);
    try {
      new Attempt(ex, legacy, legacy.config.timeoutMs, Forwarder.#legacyDone).start(body);
    } catch (err) {
      this.#respondError(ex, 'legacy', new StranglerError('INTERNAL_ERROR', `gateway error: ${String(err)}`));
    }
  }

  /**
   * The service side: the body is buffered for a possible replay (bodiless requests go on at once), then one
   * attempt runs inside the upstream's breaker. Its outcome is handled where it settles, in the socket event, as on
   * the legacy side; the breaker learns it from the action's promise (a rejection is a failure it counts).
   */
  #serveService(ex: Exchange): void {
    const { route, snapshot, req } = ex;
    const policy = snapshot.config.policies.fallbacks[route.fallback];
    if (!policy) throw new Error(`route ${route.id}: policies not resolved`); // load.ts guarantees them
    if (!hasBody(req)) return this.#fireService(ex, NO_BODY);
    const mustReplay = policy.enabled && policy.onBodyTooLarge === 'reject';
    // A declared length over the limit is refused before the body is read: with Expect: 100-continue, before the
    // client sends it (no 100 Continue is sent, see handleContinue).
    if (mustReplay && Number(req.headers['content-length']) > policy.maxReplayBodyBytes) return this.#bodyTooLarge(ex, req, policy.maxReplayBodyBytes);
    expectBody(ex);
    readBody(req, policy.enabled ? policy.maxReplayBodyBytes : 0).then((body) => {
      if (ex.clientGone) return this.#record(ex, 'service', CLIENT_CLOSED, true);
      if (body.kind === 'stream' && mustReplay) return this.#bodyTooLarge(ex, body.stream, policy.maxReplayBodyBytes);
      this.#fireService(ex, body);
    }).catch((err: unknown) => this.#respondError(ex, 'service', new StranglerError('INTERNAL_ERROR', `gateway error: ${String(err)}`)));
  }

  /** 413: the body cannot be buffered for the replay the route's fallback policy demands. What was sent is discarded. */
  #bodyTooLarge(ex: Exchange, stream: Readable, limit: number): void {
    stream.resume();
    this.#respondError(ex, 'service', new StranglerError('BODY_TOO_LARGE_TO_REPLAY', `request body exceeds maxReplayBodyBytes (${limit}) of fallback policy "${ex.route.fallback}"`));
  }

  #fireService(ex: Exchange, body: Body): void {
    const { service, breaker, timeoutMs } = serviceOf(ex.snapshot, ex.route);
    breaker.fire(Forwarder.#serviceAction, ex, service, body, timeoutMs).catch((err: unknown) => {
      if (err instanceof AttemptFailed) return; // handled where the attempt settled
      // The breaker refused (open), or the attempt could not start (a header node refuses): neither reached the service.
      const outcome: Outcome = isOpenBreakerError(err) ? { ok: false, phase: 'breaker-open', sent: false } : { ok: false, phase: 'reset', sent: true, error: String(err) };
      this.#serviceFailed(ex, body, outcome);
    });
  }

  /**
   * The action run inside the service's breaker. Only real service failures reject (a client hanging up is not the
   * service's fault); either way the outcome is acted on at once, before the breaker sees the promise settle.
   */
  static readonly #serviceAction = (ex: Exchange, upstream: Upstream, body: Body, timeoutMs: number): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      new Attempt(ex, upstream, timeoutMs, (outcome) => {
        const failed = !outcome.ok && outcome.phase !== 'client-aborted';
        if (failed) reject(new AttemptFailed(outcome));
        else resolve();
        // It went on after the client hung up (Attempt.abort), only for the breaker: the answer has nowhere to go.
        if (ex.clientGone && (outcome.ok || outcome.phase !== 'client-aborted')) return void outcome.res?.destroy();
        try {
          if (failed) ex.forwarder.#serviceFailed(ex, body, outcome);
          else ex.forwarder.#finish(ex, 'service', outcome, null);
        } catch (err) {
          ex.forwarder.#respondError(ex, 'service', new StranglerError('INTERNAL_ERROR', `gateway error: ${String(err)}`));
        }
      }, true).start(body);
    });

  /** A failed service attempt: fall back to legacy when the rules allow it (see the file comment), else answer. */
  #serviceFailed(ex: Exchange, body: Body, outcome: Outcome & { ok: false }): void {
    const { route, snapshot, req } = ex;
    const policy = snapshot.config.policies.fallbacks[route.fallback];
    const replaySafe = SAFE_METHODS.has(req.method ?? 'GET') || route.idempotent || !outcome.sent;
    const canFallback = policy?.enabled === true && !ex.res.headersSent && body.kind !== 'stream' && replaySafe && !ex.clientGone;
    if (!canFallback) {
      if (outcome.phase === 'status' && outcome.res) return this.#finish(ex, 'service', { ok: true, res: outcome.res }, null, true);
      return this.#finish(ex, 'service', outcome, null);
    }
    outcome.res?.resume(); // discard the failed answer
    const reason = this.#fallingBack(ex, outcome);
    const legacy = snapshot.upstreams.get(route.legacy) as Upstream;
    attempt(ex, legacy, body, legacy.config.timeoutMs)
      .then((second) => {
        if (!second.ok && second.phase !== 'client-aborted') {
          second.res?.resume();
          return this.#respondError(ex, 'legacy', new StranglerError('ALL_UPSTREAMS_DOWN', `service failed (${reason}) and legacy failed (${second.phase})`), reason);
        }
        return this.#finish(ex, 'legacy', second, reason);
      })
      .catch((err: unknown) => this.#respondError(ex, 'legacy', new StranglerError('INTERNAL_ERROR', `gateway error: ${String(err)}`), reason));
  }

  /** Counts and logs a fallback to legacy after the service failed (a request or a WebSocket handshake); returns its reason. */
  #fallingBack(x: Recorded, failed: { phase: FailurePhase; res?: IncomingMessage | undefined; error?: string | undefined }): string {
    this.#runtime.stats(x.route.id).fallback();
    const reason = failed.phase === 'status' ? `service-${failed.res?.statusCode ?? 500}` : `service-${failed.phase}`;
    logEvent(this.#runtime.log, 'request.fallback', { [F.reqId]: x.reqId, [F.routeId]: x.route.id, reason, error: failed.error });
    return reason;
  }

  /** Sends an upstream answer (or the error for a failed outcome) and records it. */
  #finish(ex: Exchange, target: Target, outcome: Outcome, fallback: string | null, passThrough5xx = false): void {
    if (!outcome.ok) {
      if (outcome.phase === 'client-aborted') return this.#record(ex, target, CLIENT_CLOSED, true);
      outcome.res?.resume();
      return this.#respondError(ex, target, new StranglerError(failureCode(outcome.phase), `${target} upstream failed: ${outcome.error ?? outcome.phase}`), fallback);
    }
    const { res } = ex;
    const upRes = outcome.res;
    const status = upRes.statusCode ?? 502;
    // From the raw list: reading upRes.headers would build a second copy of every header.
    const raw = upRes.rawHeaders;
    // Redirects (3xx) and 201 Created carry a Location the client must be able to follow.
    const location = (status >= 300 && status < 400) || status === 201 ? locationRewrite(ex, target) : null;
    const headers = clientResponseHeaders(raw, rawHeader(raw, 'connection'), location);
    // Every header goes through this one writeHead list (nothing set earlier with setHeader), which keeps node on
    // its fast path instead of removing and re-appending each header.
    if (rawHeader(raw, 'x-request-id') === undefined) headers.push('x-request-id', ex.reqId);
    res.writeHead(status, this.#gatewayHeaders(headers, ex, target, fallback));
    (upRes as UpstreamResponse)[kExchange] = ex;
    // An upstream that breaks mid-body destroys upRes with an 'aborted' error (node emits 'error' when a listener
    // exists, after the deprecated 'aborted' event), so this one listener covers both.
    upRes.on('error', onUpstreamBodyError);
    ex.target = target;
    ex.status = status;
    ex.error = status >= 500 || passThrough5xx;
    ex.fallback = fallback;
    ex.upRes = upRes;
    // The body is copied by two shared listeners (pausing on backpressure) rather than pipe(), which adds and removes
    // seven listeners per response; a client that hangs up mid-body ends the upstream response (see #closed).
    upRes.on('data', onUpstreamData);
    upRes.on('end', onUpstreamEnd);
  }

  #respondError(ex: Exchange, target: Target, err: StranglerError, fallback: string | null = null): void {
    const { res } = ex;
    if (!res.headersSent && !ex.clientGone) {
      const body = errorBody(err, ex.reqId);
      const headers = ['content-type', 'application/json', 'content-length', String(Buffer.byteLength(body)), 'x-request-id', ex.reqId];
      res.writeHead(err.status, this.#gatewayHeaders(headers, ex, target, fallback));
      res.end(body);
    } else {
      res.destroy();
    }
    this.#record(ex, target, err.status, true, fallback, err.code);
  }

  /** appendGatewayHeaders, and `Connection: close` while the gateway drains. */
  #gatewayHeaders(headers: string[], ex: Exchange, target: Target, fallback: string | null): string[] {
    appendGatewayHeaders(headers, ex, target, fallback);
    if (this.#runtime.draining) headers.push('connection', 'close');
    return headers;
  }

  #record(ex: Recorded, target: Target, status: number, error: boolean, fallback: string | null = null, code?: string): void {
    const durationMs = performance.now() - ex.start;
    // A client that hung up (499) is logged as failed but is not the target's error: error counts and rates (the
    // metrics, the dashboard, the canary guard) mean answers >= 500 and proxy errors, as for the breaker.
    this.#runtime.stats(ex.route.id).record(target, durationMs, error && status !== CLIENT_CLOSED);
    const rate = ex.snapshot.config.proxy.logSampleRate;
    if (error || fallback || rate >= 1 || Math.random() < rate) {
      this.#requestLog.write(error ? 'request.failed' : 'request.completed', {
        reqId: ex.reqId,
        routeId: ex.route.id,
        target,
        decision: ex.decision,
        status,
        durationMs,
        method: ex.req.method,
        path: ex.path,
        fallback,
        code,
      });
    }
  }

  /** Rejections before a route is known: answered locally, never forwarded. */
  #reject(req: IncomingMessage, res: ServerResponse, reqId: string, err: StranglerError): void {
    const body = errorBody(err, reqId);
    // A body framed in a way the gateway does not take is not read on: the connection ends with the answer (Envoy).
    const close = this.#runtime.draining || err.code === 'UNSUPPORTED_TRANSFER_ENCODING';
    res.writeHead(err.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-request-id': reqId, ...(close ? { connection: 'close' } : {}) });
    res.end(body);
    req.resume();
    this.#logRejected(req, reqId, err);
  }

  #logRejected(req: IncomingMessage, reqId: string, err: StranglerError): void {
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
    const te = req.headers['transfer-encoding'];
    if (te !== undefined) {
      if (req.headers['content-length'] !== undefined) return new StranglerError('BAD_REQUEST', 'both Content-Length and Transfer-Encoding were sent');
      // Node decodes only the chunked framing and Transfer-Encoding is hop-by-hop, so a coding under it ("gzip,
      // chunked") would reach the upstream still applied but named nowhere. Only "chunked" alone is taken, as Envoy
      // and Go's net/http do (501, RFC 9112 §6.1).
      if (!isChunkedOnly(te)) return new StranglerError('UNSUPPORTED_TRANSFER_ENCODING', `Transfer-Encoding "${te.slice(0, 100)}" is not supported: only "chunked"; send a coded body with Content-Encoding instead`);
    }
    const q = url.indexOf('?');
    let path = q === -1 ? url : url.slice(0, q);
    // Routes are matched on the path the upstream will get, which has repeated slashes merged (upstreamPath, as
    // http-proxy joins it; nginx's merge_slashes): otherwise `//api/orders` would miss the orders route and reach
    // another one (a catch-all to legacy) as `/api/orders`.
    if (path.includes('//')) path = path.replace(/\/{2,}/g, '/');
    // Also a dot segment ended by a path parameter (`..;/`, which Tomcat and Jetty resolve as `..`) or bounded by an
    // encoded slash or backslash (`..%2f`, `%5c..`), which some upstreams decode before resolving dot segments.
    if (DOT_SEGMENT.test(path) || path.includes('\\')) return new StranglerError('BAD_REQUEST', 'dot segments or backslashes in the path are not allowed');
    const colon = host.lastIndexOf(':');
    const bare = colon > host.lastIndexOf(']') ? host.slice(0, colon) : host;
    return { path, host: bare.toLowerCase() };
  }

  /**
   * Routes a WebSocket upgrade by the same decision as a request. The handshake is a bodiless GET and nothing is
   * written to the client before an upstream's 101, so a service that cannot take it (breaker open, connect error,
   * timeout, reset, a 5xx refusal) falls back to legacy under the route's fallback policy, and its breaker counts
   * the outcome. Once switched, the two sockets are piped as one tunnel (closed together).
   */
  handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    // Only WebSocket upgrades are proxied. Any other offer, such as curl --http2's `Upgrade: h2c`, may be ignored
    // (RFC 9110 §7.8): the request is served as plain HTTP/1.1.
    if (req.method !== 'GET' || req.headers.upgrade?.toLowerCase() !== 'websocket') return reinjectWithoutUpgrade(req, socket, head);
    const start = performance.now();
    // node's server no longer listens for errors on an upgraded socket: a client reset would otherwise be uncaught.
    socket.on('error', ignoreError);
    const snapshot = this.#runtime.snapshot;
    const reqId = requestIdOf(req.headers);
    const target = this.#normalizeTarget(req);
    if (target instanceof StranglerError) return this.#rejectUpgrade(req, socket, reqId, target);
    const route = snapshot.table.match(req.method, target.host, target.path);
    if (!route) return this.#rejectUpgrade(req, socket, reqId, new StranglerError('ROUTE_NOT_FOUND', `no route matches ${req.method} ${target.path}`));
    const decision = this.decide(snapshot, route, req, reqId);
    const headers = upstreamRequestHeaders(req, forwardedInfo(snapshot, req, reqId), true);
    // Only the upgrade itself is a connection option upstream (other tokens named hop-by-hop headers, dropped above).
    headers.connection = 'Upgrade';
    const u: PendingUpgrade = { req, socket, head, snapshot, route, reqId, start, path: target.path, decision: decision.reason, setCookie: decision.identity?.setCookie ?? null, headers, clientGone: false };
    this.#upgrades.add(socket);
    socket.once('close', () => {
      u.clientGone = true;
      this.#upgrades.delete(socket);
      this.#maybeIdle();
    });
    logEvent(this.#runtime.log, 'upgrade.routed', { [F.reqId]: reqId, [F.routeId]: route.id, [F.target]: decision.target, [F.decision]: decision.reason });
    if (decision.target === 'legacy') {
      const legacy = snapshot.upstreams.get(route.legacy) as Upstream;
      return void upgradeAttempt(u, legacy, legacy.config.timeoutMs, false).then((o) => this.#upgradeDone(u, 'legacy', o, null));
    }
    const { service, breaker, timeoutMs } = serviceOf(snapshot, route);
    breaker.fire(Forwarder.#serviceUpgrade, this, u, service, timeoutMs).catch((err: unknown) => {
      if (err instanceof UpgradeFailed) return; // handled where the attempt settled
      this.#upgradeServiceFailed(u, isOpenBreakerError(err) ? { ok: false, phase: 'breaker-open' } : { ok: false, phase: 'reset', error: String(err) });
    });
  };

  /** The service's handshake inside its breaker: rejects on a service failure (a 4xx refusal is an answer, as for requests). */
  static readonly #serviceUpgrade = async (forwarder: Forwarder, u: PendingUpgrade, service: Upstream, timeoutMs: number): Promise<void> => {
    const o = await upgradeAttempt(u, service, timeoutMs, true);
    if (upstreamFailed(o)) {
      forwarder.#upgradeServiceFailed(u, o);
      throw new UpgradeFailed();
    }
    forwarder.#upgradeDone(u, 'service', o, null);
  };

  /** A failed service handshake: legacy takes it when the route's fallback policy allows (always replayable). */
  #upgradeServiceFailed(u: PendingUpgrade, o: UpgradeOutcome & { ok: false }): void {
    const { route, snapshot } = u;
    if (snapshot.config.policies.fallbacks[route.fallback]?.enabled !== true || u.clientGone) return this.#upgradeDone(u, 'service', o, null);
    o.res?.destroy(); // discard the refusal (its connection is not reused)
    const reason = this.#fallingBack(u, o);
    const legacy = snapshot.upstreams.get(route.legacy) as Upstream;
    void upgradeAttempt(u, legacy, legacy.config.timeoutMs, false).then((second) => {
      if (upstreamFailed(second)) {
        second.res?.destroy();
        return this.#upgradeError(u, 'legacy', new StranglerError('ALL_UPSTREAMS_DOWN', `service failed (${reason}) and legacy failed (${second.phase})`), reason);
      }
      this.#upgradeDone(u, 'legacy', second, reason);
    });
  }

  /** Answers the client with the handshake's outcome: the tunnel on a 101, else the refusal or the gateway's error. */
  #upgradeDone(u: PendingUpgrade, target: Target, o: UpgradeOutcome, fallback: string | null): void {
    const { socket } = u;
    if (!o.ok && o.phase === 'client-aborted') return this.#record(u, target, CLIENT_CLOSED, true, fallback);
    if (u.clientGone || !socket.writable) {
      if (o.ok) o.upstream.destroy();
      else o.res?.destroy();
      return this.#record(u, target, CLIENT_CLOSED, true, fallback);
    }
    if (!o.ok && !o.res) return this.#upgradeError(u, target, new StranglerError(failureCode(o.phase), `${target} upstream failed: ${o.error ?? o.phase}`), fallback);
    const res = o.ok ? o.res : (o.res as IncomingMessage);
    const status = o.ok ? 101 : (res.statusCode ?? 502);
    // The 101 keeps Connection/Upgrade (they are its point); a refusal is relayed whole, then the connection closes.
    const headers = o.ok ? upgradeResponseHeaders(res.rawHeaders) : clientResponseHeaders(res.rawHeaders, rawHeader(res.rawHeaders, 'connection'));
    if (!o.ok) headers.push('connection', 'close');
    socket.write(this.#upgradeHead(u, status, o.ok ? 'Switching Protocols' : (res.statusMessage ?? ''), headers, target, fallback));
    this.#record(u, target, status, !o.ok && status >= 500, fallback);
    if (!o.ok) {
      res.on('error', () => socket.destroy());
      res.pipe(socket);
      return;
    }
    const upstream = o.upstream;
    upstream.on('error', ignoreError);
    // The tunnel lives and dies as one: a pipe ends the other side only when one side ends cleanly.
    socket.once('close', () => upstream.destroy());
    upstream.once('close', () => socket.destroy());
    if (o.head.length > 0) socket.write(o.head);
    if (u.head.length > 0) upstream.write(u.head);
    upstream.pipe(socket).pipe(upstream);
  }

  /** The status line and headers the gateway sends on an upgrade: the upstream's, with the gateway's own appended. */
  #upgradeHead(u: PendingUpgrade, status: number, message: string, headers: string[], target: Target, fallback: string | null): string {
    if (rawHeader(headers, 'x-request-id') === undefined) headers.push('x-request-id', u.reqId);
    return headText(status, message, appendGatewayHeaders(headers, u, target, fallback));
  }

  /** The gateway's own JSON error on an upgrade that got no upstream answer, then the connection closes. */
  #upgradeError(u: PendingUpgrade, target: Target, err: StranglerError, fallback: string | null): void {
    logEvent(this.#runtime.log, 'upgrade.failed', { [F.reqId]: u.reqId, [F.routeId]: u.route.id, [F.target]: target, code: err.code, err: err.message });
    if (!u.clientGone && u.socket.writable) {
      const body = errorBody(err, u.reqId);
      u.socket.end(this.#upgradeHead(u, err.status, STATUS_CODES[err.status] ?? '', ['content-type', 'application/json', 'content-length', String(Buffer.byteLength(body)), 'connection', 'close'], target, fallback) + body);
    }
    this.#record(u, target, err.status, true, fallback, err.code);
  }

  /** An upgrade refused before routing: the same status and JSON error as a request gets (#reject), then close. */
  #rejectUpgrade(req: IncomingMessage, socket: Duplex, reqId: string, err: StranglerError): void {
    const body = errorBody(err, reqId);
    socket.end(headText(err.status, STATUS_CODES[err.status] ?? '', ['content-type', 'application/json', 'content-length', String(Buffer.byteLength(body)), 'x-request-id', reqId, 'connection', 'close']) + body);
    this.#logRejected(req, reqId, err);
  }

  /** Ends what is left after the drain: WebSockets still open are cut (their upstream sockets with them). */
  close(): void {
    for (const socket of this.#upgrades) socket.destroy();
  }
}

/** Rewrites a Location under the answering upstream's own origin to the origin the client used. */
function locationRewrite(ex: Exchange, target: Target): LocationRewrite | null {
  const upstream = ex.snapshot.upstreams.get(target === 'service' ? (ex.route.service as string) : ex.route.legacy);
  const trust = ex.snapshot.config.proxy.trustForwardedHeaders;
  const host = clientHost(ex.req.headers, trust);
  if (!upstream || host === '') return null;
  return { from: upstream.request.locationPrefix, to: `${clientScheme(ex.req.headers, trust)}://${host}` };
}

function ignoreError(): void {}

/** Thrown inside the breaker for a failed service handshake, already handled where it settled. */
class UpgradeFailed extends Error {}

/** A WebSocket handshake being routed: what every attempt and the answer need (and what #record reads). */
interface PendingUpgrade {
  readonly req: IncomingMessage;
  readonly socket: Duplex;
  /** Bytes the client sent after its request head (relayed once the tunnel is open). */
  readonly head: Buffer;
  readonly snapshot: Snapshot;
  readonly route: LoadedRoute;
  readonly reqId: string;
  readonly start: number;
  readonly path: string;
  readonly decision: string;
  readonly setCookie: string | null;
  readonly headers: IncomingHttpHeaders;
  clientGone: boolean;
}

/** A handshake's outcome: the upstream switched protocols, or answered otherwise (`res`, unread), or failed. */
type UpgradeOutcome =
  | { ok: true; res: IncomingMessage; upstream: Socket; head: Buffer }
  | { ok: false; phase: FailurePhase; res?: IncomingMessage; error?: string };

/**
 * One handshake with one upstream, on its agent (TLS with the upstream's CA and client certificate), settled once:
 * on the 101, on any other answer, on an error, after `timeoutMs` without an answer, or when the client leaves. A
 * service attempt (`forBreaker`) goes on without its client until it settles, so its breaker learns the service's
 * own outcome (as Attempt.abort); the answer is then discarded. A pooled connection the upstream had closed is
 * replaced, as for requests (Attempt.retryStale).
 */
function upgradeAttempt(u: PendingUpgrade, upstream: Upstream, timeoutMs: number, forBreaker: boolean): Promise<UpgradeOutcome> {
  return new Promise<UpgradeOutcome>((resolve) => {
    let settled = false;
    let connected = false;
    let stale = 0;
    let proxyReq: ClientRequest;
    const settle = (o: UpgradeOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      u.socket.off('close', onClientClose);
      resolve(o);
    };
    const onClientClose = (): void => {
      if (forBreaker) return;
      settle({ ok: false, phase: 'client-aborted' });
      proxyReq.destroy();
    };
    const send = (): void => {
      connected = false;
      const r = httpRequest({
        hostname: upstream.request.hostname,
        port: upstream.request.port,
        method: 'GET',
        path: upstreamPath(upstream.request.basePath, u.req.url ?? '/'),
        headers: { ...u.headers, host: upstreamHost(upstream, u.req.headers.host) },
        agent: upstream.agent,
      });
      proxyReq = r;
      r.once('socket', (s: Socket) => {
        if (!s.connecting) connected = true;
        else s.once(s instanceof TLSSocket ? 'secureConnect' : 'connect', () => (connected = true));
      });
      r.on('error', (err: NodeJS.ErrnoException) => {
        if (settled || r !== proxyReq) return;
        const code = err.code ?? '';
        if (r.reusedSocket && (code === 'ECONNRESET' || code === 'EPIPE') && stale < MAX_STALE_RETRIES) {
          stale++;
          return send();
        }
        settle({ ok: false, phase: CONNECT_ERRORS.has(code) || !connected ? 'connect' : 'reset', error: `${code || 'error'}: ${err.message}` });
      });
      r.once('upgrade', (res: IncomingMessage, socket: Socket, head: Buffer) => {
        if (settled) return void socket.destroy();
        settle({ ok: true, res, upstream: socket, head });
      });
      r.once('response', (res: IncomingMessage) => {
        if (settled) return void res.destroy();
        settle({ ok: false, phase: 'status', res, error: `status ${res.statusCode ?? 0} instead of 101` });
      });
      r.end();
    };
    const timer = setTimeout(() => {
      settle({ ok: false, phase: connected ? 'timeout' : 'connect', error: `no upgrade answer within ${timeoutMs} ms` });
      proxyReq.destroy();
    }, timeoutMs);
    u.socket.once('close', onClientClose);
    try {
      send();
    } catch (err) {
      // A header node refuses: nothing was sent.
      settle({ ok: false, phase: 'reset', error: String(err) });
    }
  });
}

/** A handshake the upstream failed: no answer, or a 5xx refusal (a 4xx is an answer; the client leaving is not the upstream's doing). */
function upstreamFailed(o: UpgradeOutcome): o is UpgradeOutcome & { ok: false } {
  return !o.ok && o.phase !== 'client-aborted' && (o.phase !== 'status' || (o.res?.statusCode ?? 502) >= 500);
}

/**
 * Appends what the gateway adds to every answer of a routed request or WebSocket handshake (the upstream's or its own
 * error) to a flat header list: the x-strangler-* headers unless turned off, and a newly minted session cookie.
 */
function appendGatewayHeaders(headers: string[], x: Pick<Exchange, 'snapshot' | 'route' | 'setCookie'>, target: Target, fallback: string | null): string[] {
  if (x.snapshot.config.proxy.responseHeaders) {
    headers.push('x-strangler-route', x.route.id, 'x-strangler-target', target);
    if (fallback) headers.push('x-strangler-fallback', fallback);
  }
  if (x.setCookie) headers.push('set-cookie', x.setCookie);
  return headers;
}

/** An HTTP/1.1 response head as text, for answers written straight to an upgrade's socket. */
function headText(status: number, message: string, headers: readonly string[]): string {
  let text = `HTTP/1.1 ${status} ${message}\r\n`;
  for (let i = 0; i < headers.length; i += 2) text += `${headers[i] as string}: ${headers[i + 1] as string}\r\n`;
  return `${text}\r\n`;
}

/** The headers of an upstream's 101 for the client: hop-by-hop ones dropped, except Connection and Upgrade. */
function upgradeResponseHeaders(raw: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const lower = name.toLowerCase();
    if (lower !== 'connection' && lower !== 'upgrade' && isHopByHop(lower, NO_EXTRA)) continue;
    out.push(name, raw[i + 1] as string);
  }
  return out;
}
const NO_EXTRA: readonly string[] = [];

/**
 * Hands an upgrade request the gateway does not proxy back to its HTTP server as a plain request: the head is
 * rebuilt without `Upgrade` (and without the `upgrade` token of Connection), put back in front of the bytes not yet
 * parsed, and the socket is given to the server again as a new connection (node documents emitting 'connection').
 * The body, if any, and later keep-alive requests are then parsed by node as usual.
 */
function reinjectWithoutUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
  const { server, _httpMessage: pending } = socket as Socket & { server?: Server; _httpMessage?: ServerResponse | null };
  if (!server || socket.destroyed) {
    socket.destroy();
    return;
  }
  // Pipelined behind an answer still being sent: node's new parser must not take the socket before that answer ends.
  if (pending) {
    pending.once('finish', () => reinjectWithoutUpgrade(req, socket, head));
    return;
  }
  let text = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    let value = raw[i + 1] as string;
    if (name === 'upgrade') continue;
    if (name === 'connection') {
      value = value.split(',').map((t) => t.trim()).filter((t) => t !== '' && t.toLowerCase() !== 'upgrade').join(', ');
      if (value === '') continue;
    }
    text += `${raw[i] as string}: ${value}\r\n`;
  }
  socket.unshift(Buffer.concat([Buffer.from(`${text}\r\n`, 'latin1'), head]));
  server.emit('connection', socket);
}

/**
 * The headers upstreams must not see, per config snapshot (not a new array per request): the tester override, and,
 * unless forwarded headers are trusted, the client-hop headers other than X-Forwarded-* (which are replaced) that
 * upstream frameworks read for the client's address, scheme and host (Spring's ForwardedHeaderFilter, gin's ClientIP).
 */
const dropped = new WeakMap<Snapshot, readonly string[]>();
const UNTRUSTED_CLIENT_HOP = ['forwarded', 'x-real-ip'];

function forwardedInfo(snapshot: Snapshot, req: IncomingMessage, reqId: string): ForwardedInfo {
  let drop = dropped.get(snapshot);
  if (!drop) {
    const override = snapshot.config.identity.override.header.toLowerCase();
    dropped.set(snapshot, (drop = snapshot.config.proxy.trustForwardedHeaders ? [override] : [override, ...UNTRUSTED_CLIENT_HOP]));
  }
  return {
    reqId,
    clientIp: req.socket.remoteAddress ?? '',
    proto: 'http',
    host: req.headers.host ?? '',
    trustForwarded: snapshot.config.proxy.trustForwardedHeaders,
    drop,
    dropCookie: snapshot.config.identity.override.cookie,
  };
}

function pathOf(url: string | undefined): string {
  const q = url?.indexOf('?') ?? -1;
  return q === -1 ? (url ?? '') : (url as string).slice(0, q);
}

const NO_BODY: Body = { kind: 'none' };

/** One attempt as a promise that resolves (never rejects) with its outcome. */
function attempt(ex: Exchange, upstream: Upstream, body: Body, timeoutMs: number): Promise<Outcome> {
  return new Promise<Outcome>((resolve) => new Attempt(ex, upstream, timeoutMs, resolve).start(body));
}

/**
 * The body of this request is about to be read: a client waiting for `100 Continue` (handleContinue) gets it now.
 * The gateway answered the expectation itself, so Expect is not forwarded (as Envoy does by default).
 */
function expectBody(ex: Exchange): void {
  const res = ex.res as ExchangeResponse;
  if (res[kContinue] !== true) return;
  res[kContinue] = false;
  ex.upstreamHeaders.expect = undefined;
  res.writeContinue();
}

/** A route's service upstream, its breaker, and the attempt timeout (the shorter of the upstream's and the breaker policy's). */
function serviceOf(snapshot: Snapshot, route: LoadedRoute): { service: Upstream; breaker: Breaker; timeoutMs: number } {
  const service = snapshot.upstreams.get(route.service as string) as Upstream;
  const breakerPolicy = snapshot.config.policies.breakers[route.breaker];
  const breaker = snapshot.breakers.get(service.id);
  if (!breakerPolicy || !breaker) throw new Error(`route ${route.id}: policies not resolved`); // load.ts guarantees them
  return { service, breaker, timeoutMs: Math.min(service.config.timeoutMs, breakerPolicy.timeoutMs) };
}

/** Whether a Transfer-Encoding value is the chunked framing alone (the only coding the gateway relays). */
function isChunkedOnly(te: string): boolean {
  return te === 'chunked' || te.toLowerCase() === 'chunked';
}

function hasBody(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  return (len !== undefined && len !== '0') || req.headers['transfer-encoding'] !== undefined;
}

/**
 * Buffers the body of a request that has one (hasBody) up to `limit` bytes so it can be replayed. Past the limit it
 * returns a stream that yields what was read followed by the rest: forwardable once, not replayable.
 */
function readBody(req: IncomingMessage, limit: number): Promise<Body> {
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
