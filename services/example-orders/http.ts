/**
 * HTTP plumbing shared by the demo monolith and the extracted orders service: the `x-served-by` header, JSON body
 * parsing, error bodies in the catalogue's shape, a JSON 404 for unknown endpoints, and a server wrapper with
 * graceful close. Both apps answer errors identically, which the shared contract test relies on.
 */
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import pg from 'pg';
import { StranglerError } from '../../common/errors.ts';
import type { Logger } from '../../common/logger.ts';
import { ORDERS_LOG } from './log-events.ts';

export type ServedBy = 'legacy' | 'service';

/** The header both apps set on every response, so the gateway's routing is visible to clients and tests. */
export const SERVED_BY_HEADER = 'x-served-by';

/** An express app with the served-by header, a JSON body parser and per-request debug logging. */
export function createBaseApp(servedBy: ServedBy, log: Logger): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use((req: Request, res: Response, next: NextFunction) => {
    res.setHeader(SERVED_BY_HEADER, servedBy);
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      log.debug({ method: req.method, path: req.path, status: res.statusCode, ms }, ORDERS_LOG.request);
    });
    next();
  });
  app.use(express.json({ limit: '100kb' }));
  return app;
}

/** Appends the JSON 404 and the error handler; call after every route is mounted. */
export function finishApp(app: Express, log: Logger): void {
  app.use((req: Request, _res: Response, next: NextFunction) => {
    next(new StranglerError('DEMO_ROUTE_NOT_FOUND', `no endpoint ${req.method} ${req.path}; see devstack/demo/README.md`));
  });
  // Express recognises error handlers by their four parameters.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const error = toStranglerError(err);
    if (error.status >= 500) log.error({ err, method: req.method, path: req.path }, ORDERS_LOG.requestFailed);
    res.status(error.status).json(error.toJSON());
  });
}

/**
 * Errors meaning the database cannot answer now (retry later, 503), beside SQLSTATE classes 08 (connection), 53
 * (insufficient resources: too many connections, disk full) and 57P (server shutting down or starting): socket and
 * DNS failures (a database named by host name, as on Kubernetes), a statement cancelled by `statement_timeout`
 * (57014: a lock held by a migration, an overloaded server) and a write sent to a read-only standby after a failover.
 */
const DATABASE_DOWN_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', '57014', '25006']);

/** Maps body-parser, router, PostgreSQL and unexpected errors onto catalogue codes. */
export function toStranglerError(err: unknown): StranglerError {
  if (err instanceof StranglerError) return err;
  const e = err as { type?: string; code?: string; message?: string };
  if (e?.type === 'entity.parse.failed') {
    return new StranglerError('DEMO_VALIDATION_FAILED', `request body is not valid JSON: ${e.message ?? ''}`.trim(), { cause: err });
  }
  if (e?.type === 'entity.too.large') {
    return new StranglerError('DEMO_VALIDATION_FAILED', 'request body is larger than 100kb', { cause: err });
  }
  // The client's fault, caught before a route ran: an unsupported charset or Content-Encoding, a body that does not
  // decompress or is shorter than its Content-Length (body-parser), a path that is not valid percent-encoding (the
  // router). These carry a 4xx status; answering them 500 made client mistakes trip the gateway's breaker and guard.
  const status = (err as { status?: unknown } | undefined)?.status;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new StranglerError('DEMO_VALIDATION_FAILED', `request rejected: ${e.message ?? 'malformed request'}; send JSON in UTF-8 (Content-Encoding none, gzip, deflate or br) to a well-formed path`, { cause: err });
  }
  if (typeof e?.code === 'string' && (DATABASE_DOWN_CODES.has(e.code) || /^(08|53|57P)/.test(e.code))) {
    // The code only: the driver's text names the database's host and port (or user and database), which a client
    // reading this through the gateway must not learn. The log line of the failed request has the whole error.
    return new StranglerError('DEMO_DATABASE_UNAVAILABLE', `database unavailable (${e.code}); retry later, the service log has the cause`, { cause: err });
  }
  if (err instanceof Error && /Connection terminated|timeout exceeded when trying to connect|Query read timeout/i.test(err.message)) {
    return new StranglerError('DEMO_DATABASE_UNAVAILABLE', `database unavailable: ${err.message}`, { cause: err });
  }
  return new StranglerError('DEMO_INTERNAL_ERROR', 'internal error', { cause: err });
}

/** The request body, or DEMO_VALIDATION_FAILED when the client sent none or not as JSON. */
export function jsonBody(req: Request): unknown {
  if (req.body === undefined) {
    throw new StranglerError('DEMO_VALIDATION_FAILED', 'request body must be a JSON object sent with Content-Type: application/json');
  }
  return req.body;
}

/** node:http server around an express app: listen on port 0 and read the port back; close drains, then cuts. */
export class DemoHttpServer {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  /** Responses in progress (until close() starts). */
  readonly #answering = new Set<ServerResponse>();
  readonly #log: Logger;
  #closing: Promise<void> | undefined;

  constructor(app: Express, log: Logger) {
    this.#log = log;
    this.#server = createServer(app);
    // Once closing, every answer not yet started says Connection: close: a keep-alive client such as the gateway's
    // pool then does not send its next request on a connection about to be closed (a POST sent there is lost with
    // ECONNRESET, and not replayable). Registered ahead of the app, which may answer at once.
    this.#server.prependListener('request', (_req, res) => {
      if (this.#closing) return void res.setHeader('connection', 'close');
      this.#answering.add(res);
      res.once('close', () => this.#answering.delete(res));
    });
    this.#server.on('connection', (socket) => {
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
    });
  }

  /** Resolves to the bound port. */
  async listen(port = 0, host = '127.0.0.1'): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, host, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    const bound = (this.#server.address() as AddressInfo).port;
    this.#log.info({ host, port: bound }, ORDERS_LOG.listening);
    return bound;
  }

  get listening(): boolean {
    return this.#server.listening;
  }

  /** Stops accepting, lets in-flight requests finish for up to `graceMs`, then destroys what is left. */
  close(graceMs = 5_000): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      if (!this.#server.listening) return resolve();
      for (const res of this.#answering) if (!res.headersSent) res.setHeader('connection', 'close');
      const timer = setTimeout(() => this.#server.closeAllConnections(), graceMs);
      timer.unref();
      this.#server.close(() => {
        clearTimeout(timer);
        resolve();
      });
      this.#server.closeIdleConnections();
    });
    return this.#closing;
  }
}

/** What `createMonolithApp` and `createOrdersServiceApp` return. */
export interface DemoApp {
  readonly servedBy: ServedBy;
  readonly app: Express;
  readonly pool: pg.Pool;
  /** Creates the schema idempotently. */
  migrate(): Promise<void>;
  /** Writes the demo seed data when absent; returns what it did. */
  seed(): Promise<Record<string, number | boolean>>;
  /** Resolves to the bound port. */
  listen(port?: number, host?: string): Promise<number>;
  /** Graceful: stop accepting, drain in-flight requests, close the pool. Idempotent. */
  close(): Promise<void>;
}

export interface DemoAppOptions {
  /** postgres:// URL of this app's own database. */
  databaseUrl: string;
  log?: Logger;
  /** Connection pool size (default 10). */
  poolSize?: number;
  /** Clock for new order ids (tests). */
  clock?: () => number;
  /**
   * Bound on one database statement (default 5000 ms; PostgreSQL's statement_timeout, plus a client-side bound one
   * second later for a server that stopped answering). A statement that outlives it (a lock held by a migration, a
   * database behind a network partition) answers 503 DEMO_DATABASE_UNAVAILABLE instead of hanging the request, the
   * connection it holds and a graceful shutdown. 0: unbounded.
   */
  queryTimeoutMs?: number;
}

export const DEFAULT_QUERY_TIMEOUT_MS = 5_000;

/** Pool + health endpoint + server wrapper: the parts of a demo app that are not routes. */
export function createDemoRuntime(servedBy: ServedBy, options: DemoAppOptions, log: Logger): {
  app: Express; pool: pg.Pool; server: DemoHttpServer; close(): Promise<void>;
} {
  const queryTimeoutMs = options.queryTimeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS;
  const pool = new pg.Pool({
    connectionString: options.databaseUrl, max: options.poolSize ?? 10, connectionTimeoutMillis: 5_000,
    keepAlive: true, ...(queryTimeoutMs > 0 ? { statement_timeout: queryTimeoutMs, query_timeout: queryTimeoutMs + 1_000 } : {}),
  });
  // An idle client whose server went away emits here; without a listener the process would crash.
  pool.on('error', (err) => log.warn({ err }, ORDERS_LOG.poolError));
  const app = createBaseApp(servedBy, log);
  app.get('/healthz', async (_req: Request, res: Response) => {
    try {
      await pool.query('SELECT 1');
      res.json({ status: 'ok', servedBy });
    } catch (err) {
      // Probes do not log what they read: the cause goes to the log, the body says what a client may know.
      log.warn({ err }, ORDERS_LOG.healthFailed);
      res.status(503).json({ status: 'unavailable', servedBy, error: toStranglerError(err).message });
    }
  });
  const server = new DemoHttpServer(app, log);
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      log.info(ORDERS_LOG.closing);
      await server.close();
      await pool.end();
      log.info(ORDERS_LOG.closed);
    })();
    return closing;
  };
  return { app, pool, server, close };
}
