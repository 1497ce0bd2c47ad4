/**
 * Listeners and lifecycle: the data plane (node:http + the forwarder) and the control plane (express) on separate
 * ports, config reload on file change, and a bounded drain on shutdown.
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { settlesWithin } from '../common/timeout.ts';
import type { Logger } from '../common/logger.ts';
import { createLogger, flushLogger } from '../common/logger.ts';
import { StranglerError } from '../common/errors.ts';
import { isLoopback, type LoadedConfig } from './config/load.ts';
import { watchConfigFile } from './config/watch.ts';
import { Runtime } from './runtime.ts';
import { Forwarder } from './proxy/forward.ts';
import { createAdminApp, type ControlPlane, type TrafficActions } from './admin/app.ts';
import { routesResponse } from './admin/status.ts';
import { logEvent } from './observability/log-events.ts';

export interface DataPlane {
  readonly server: Server;
  readonly port: number;
  /** Stops accepting, lets in-flight requests finish (at most drainTimeoutMs), then closes every connection. */
  drain(): Promise<void>;
}

function listen(server: Server, port: number, host: string, what: string, howToChange: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      reject(err.code === 'EADDRINUSE' ? new StranglerError('PORT_IN_USE', `${what}: port ${port} on ${host} is already in use; ${howToChange}`) : err);
    };
    server.once('error', onError);
    server.listen({ port, host, exclusive: false }, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function urlOf(host: string, port: number): string {
  const h = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  return `http://${h}:${port}`;
}

/**
 * V8 pretenures objects from allocation sites whose objects survived once; under proxy load that promotes
 * short-lived per-request objects straight to old space and multiplies full collections (measured in
 * bench/gateway.bench.ts: young-generation GC time per 10 s fell from ~1.0 s to ~0.35 s without it).
 * Also start data-plane processes with --max-semi-space-size=64 (NODE_OPTIONS; cluster workers get it).
 */
let v8Tuned = false;
function tuneV8ForProxying(): void {
  if (v8Tuned) return;
  v8Tuned = true;
  setFlagsFromString('--no-allocation-site-pretenuring');
}

export async function startDataPlane(runtime: Runtime, options: { port?: number } = {}): Promise<DataPlane> {
  tuneV8ForProxying();
  const { proxy } = runtime.snapshot.config;
  const forwarder = new Forwarder(runtime);
  // The forwarder counts requests in flight itself (one shared 'close' listener per response) for the drain below.
  const server = createServer({ maxHeaderSize: proxy.maxHeaderBytes, headersTimeout: proxy.headersTimeoutMs, requestTimeout: proxy.requestTimeoutMs, keepAliveTimeout: 5_000 }, forwarder.handle);
  server.on('upgrade', forwarder.handleUpgrade);
  // Expect: 100-continue is answered by the forwarder once it will read the body, not by node at once.
  server.on('checkContinue', forwarder.handleContinue);
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    // Malformed requests (smuggling attempts, oversized headers) are refused by node's parser; answer and close.
    if (!socket.writable) return socket.destroy();
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
    socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    logEvent(runtime.log, 'request.rejected', { code: err.code, reason: err.message });
  });
  const port = await listen(server, options.port ?? proxy.port, proxy.bind, 'data plane', 'set proxy.port in the config or pass --port');
  return {
    server,
    port,
    drain: async () => {
      runtime.draining = true;
      server.close();
      server.closeIdleConnections();
      if (forwarder.inflight > 0 || forwarder.websockets > 0) {
        // From the config in force now (a reload may have changed it).
        const { drainTimeoutMs } = runtime.snapshot.config.proxy;
        if (!(await settlesWithin(forwarder.whenIdle(), drainTimeoutMs))) logEvent(runtime.log, 'gateway.drain_timeout', { inflight: forwarder.inflight, websockets: forwarder.websockets, drainTimeoutMs });
      }
      server.closeAllConnections();
      forwarder.close();
    },
  };
}

export interface ControlPlaneServer {
  readonly server: Server;
  readonly port: number;
  readonly token: string;
  /**
   * Stops accepting and lets in-flight admin requests (a shift or rollback waiting on Unleash) finish until
   * `deadline` (epoch ms; default now + proxy.drainTimeoutMs), then closes every connection: cutting one would leave
   * its operator unsure whether the change reached Unleash.
   */
  close(deadline?: number): Promise<void>;
}

/** Refuses a non-loopback bind without a token; with no token on loopback, mints one for this run. */
export function adminToken(config: LoadedConfig): { token: string; generated: boolean } {
  if (config.admin.token) return { token: config.admin.token, generated: false };
  if (!isLoopback(config.admin.bind)) throw new StranglerError('ADMIN_INSECURE_BIND', `admin.bind is ${config.admin.bind} but admin.token is not set`);
  return { token: randomBytes(24).toString('base64url'), generated: true };
}

export async function startControlPlane(plane: ControlPlane, log: Logger, options: { port?: number; token?: string } = {}): Promise<ControlPlaneServer> {
  const config = plane.config();
  const token = options.token ?? adminToken(config).token;
  const server = createServer(createAdminApp(plane, { token, log }));
  let inflight = 0;
  let idle: (() => void) | undefined;
  server.on('request', (_req, res: ServerResponse) => {
    inflight += 1;
    res.once('close', () => {
      inflight -= 1;
      if (inflight === 0) idle?.();
    });
  });
  const port = await listen(server, options.port ?? config.admin.port, config.admin.bind, 'control plane', 'set admin.port in the config or pass --admin-port');
  return {
    server,
    port,
    token,
    close: async (deadline = Date.now() + plane.config().proxy.drainTimeoutMs) => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      if (inflight > 0 && !(await settlesWithin(new Promise<void>((resolve) => (idle = resolve)), deadline - Date.now()))) logEvent(log, 'admin.drain_timeout', { inflight });
      server.closeAllConnections();
      await closed;
    },
  };
}

/** The control plane of a single-process gateway: reads its own runtime directly. */
export function localControlPlane(runtime: Runtime, extras: Partial<Pick<ControlPlane, 'traffic' | 'sync' | 'controllerState'>> = {}): ControlPlane {
  return {
    config: () => runtime.snapshot.config,
    reloadStatus: () => runtime.reload,
    view: async () => routesResponse(runtime),
    draining: () => runtime.draining,
    breakers: async () => [...runtime.snapshot.breakers.values()].map((b) => b.view()),
    push: async (push) => {
      await runtime.push(push);
      return { delivered: 1 };
    },
    ...extras,
  };
}

export interface GatewayOptions {
  log?: Logger;
  /** Override proxy.port / admin.port (tests pass 0). */
  port?: number;
  adminPort?: number;
  adminToken?: string;
  /** Reload when the config file changes (default true when the config came from a file). */
  watch?: boolean;
  instanceId?: string;
  traffic?: TrafficActions;
  sync?: ControlPlane['sync'];
  controllerState?: ControlPlane['controllerState'];
}

export interface RunningGateway {
  readonly runtime: Runtime;
  readonly proxyUrl: string;
  readonly adminUrl: string;
  readonly adminToken: string;
  readonly adminTokenGenerated: boolean;
  close(): Promise<void>;
}

/**
 * The logger a gateway process makes from its config's `log` section (`name` tells primary and workers apart). A
 * process that proxies logs per request, through a log thread when `log.buffer` is on; a cluster primary, which does
 * not proxy (`proxies` false), writes its few lines on its event loop and saves the thread's memory (~20 MB).
 */
export function gatewayLogger(config: LoadedConfig, name = 'gateway', proxies = true): Logger {
  return createLogger({ level: config.log.level, name, buffer: proxies && config.log.buffer });
}

/** A single-process gateway: data plane, control plane and flag client in this process. */
export async function startGateway(config: LoadedConfig, options: GatewayOptions = {}): Promise<RunningGateway> {
  const log = options.log ?? gatewayLogger(config);
  const { token, generated } = options.adminToken ? { token: options.adminToken, generated: false } : adminToken(config);
  const runtime = new Runtime(config, log, options.instanceId ? { instanceId: options.instanceId } : {});
  await runtime.flags.start();
  if (!runtime.flags.status.ready) logEvent(log, 'flags.degraded', { reason: runtime.flags.status.lastError ?? 'no flag data' });
  else logEvent(log, 'flags.ready', { source: runtime.flags.status.source });
  const data = await startDataPlane(runtime, options.port === undefined ? {} : { port: options.port });
  let admin: ControlPlaneServer;
  try {
    admin = await startControlPlane(localControlPlane(runtime, { ...(options.traffic ? { traffic: options.traffic } : {}), ...(options.sync ? { sync: options.sync } : {}), ...(options.controllerState ? { controllerState: options.controllerState } : {}) }), log, { token, ...(options.adminPort === undefined ? {} : { port: options.adminPort }) });
  } catch (err) {
    await data.drain();
    runtime.close();
    throw err;
  }
  const watcher = options.watch ?? true ? watchConfigFile(config.source, () => runtime.reloadFromFile()) : undefined;
  const proxyUrl = urlOf(config.proxy.bind, data.port);
  const adminUrl = urlOf(config.admin.bind, admin.port);
  logEvent(log, 'gateway.started', { proxy: proxyUrl, admin: adminUrl, routes: config.routes.length });
  let closing: Promise<void> | undefined;
  return {
    runtime,
    proxyUrl,
    adminUrl,
    adminToken: token,
    adminTokenGenerated: generated,
    close: () =>
      (closing ??= (async () => {
        logEvent(log, 'gateway.stopping', {});
        watcher?.close();
        // One drain budget for both listeners; the control plane keeps answering (/readyz: draining) meanwhile.
        const deadline = Date.now() + runtime.snapshot.config.proxy.drainTimeoutMs;
        await data.drain();
        await admin.close(deadline);
        runtime.close();
        logEvent(log, 'gateway.stopped', {});
        await flushLogger(log);
      })()),
  };
}
