/**
 * The control plane: an express app on its own listener (127.0.0.1 by default). Everything under /admin, /metrics
 * and the dashboard's data needs `Authorization: Bearer <admin.token>`; /healthz and /readyz are open so
 * orchestrators can probe them. GET never changes state.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { type NextFunction, type Request, type Response } from 'express';
import { StranglerError, isStranglerError, messageOf } from '../../common/errors.ts';
import type { Logger } from '../../common/logger.ts';
import { redactUrl, SECRET_FIELD, type LoadedConfig } from '../config/load.ts';
import type { UpstreamConfig } from '../config/schema.ts';
import { requestTarget, upstreamAgent, upstreamTls } from '../proxy/upstreams.ts';
import type { ReloadStatus } from '../runtime.ts';
import type { BreakerView } from '../resilience/breakers.ts';
import type { FlagPush } from '../../flags/client.ts';
import type { RoutesResponse } from './types.ts';
import { renderMetrics } from '../observability/metrics.ts';
import { logEvent } from '../observability/log-events.ts';
import { parsePercent, type ChangeOptions } from '../../flags/traffic.ts';

/** shift / rollback / resume: flags/traffic.ts `trafficActions`, against the Unleash Admin API. */
export interface TrafficActions {
  shift(routeId: string, percent: number, change: ChangeOptions): Promise<unknown>;
  rollback(routeId: string, change: ChangeOptions): Promise<unknown>;
  resume(routeId: string, change: ChangeOptions): Promise<unknown>;
}

/** The control plane's view of the data plane: one process, or a cluster's workers behind IPC. */
export interface ControlPlane {
  config(): LoadedConfig;
  reloadStatus(): ReloadStatus;
  view(): Promise<RoutesResponse>;
  breakers(): Promise<BreakerView[]>;
  /** Delivers a flag push to every worker; resolves when all have acted on it. */
  push(push: FlagPush): Promise<{ delivered: number }>;
  traffic?: TrafficActions;
  /** Sync lag and last verify (migration-scripts), when this process knows the sync config. */
  sync?: () => Promise<unknown>;
  /** Guard/plan state by route id (flags controller), when one runs in this process. */
  controllerState?: () => Promise<Record<string, { guard: unknown; plan: unknown }>>;
  /** True once shutdown has begun: the data plane no longer accepts connections, so /readyz answers 503. */
  draining?: () => boolean;
  /** Why /healthz should fail (cluster mode: no worker serving for too long), or null when live. Must stay cheap. */
  liveness?: () => { reason: string; [field: string]: unknown } | null;
}

const here = dirname(fileURLToPath(import.meta.url));

/** `Bearer <token>`, the scheme in any case (RFC 9110 §11.1); compared in constant time, length included. */
function tokenMatches(header: string | undefined, token: string): boolean {
  const given = /^bearer +(\S+) *$/i.exec(header ?? '')?.[1];
  if (given === undefined) return false;
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(given), digest(token));
}

/** Secrets replaced by "[redacted]" wherever they appear in the config. */
function redactConfig(value: unknown, key = ''): unknown {
  if (typeof value === 'string' && SECRET_FIELD.test(key)) return '[redacted]';
  if (typeof value === 'string' && /^[a-z][a-z0-9+.-]*:\/\//i.test(value)) return redactUrl(value);
  if (Array.isArray(value)) return value.map((v) => redactConfig(v, key));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactConfig(v, k)]));
  return value;
}

/**
 * GET <healthPath> on an upstream, over the same kind of connection the data plane makes (TLS with the upstream's
 * CA and client certificate for https://), on a connection of its own.
 */
async function probe(upstream: UpstreamConfig, index: number): Promise<{ healthy: boolean; status: number | null; latencyMs: number; error: string | null }> {
  const start = performance.now();
  const result = (status: number | null, error: string | null) => ({ healthy: status !== null && status >= 200 && status < 300, status, latencyMs: Math.round(performance.now() - start), error });
  const tls = upstreamTls(upstream, index);
  if ('problem' in tls) return result(null, `${tls.problem.path}: expected ${tls.problem.expected}, found ${tls.problem.found}`);
  const agent = upstreamAgent(upstream, tls.tls);
  const { hostname, port, hostHeader } = requestTarget(new URL(upstream.url));
  const timeoutMs = Math.min(2000, upstream.timeoutMs);
  try {
    return await new Promise((resolve) => {
      const req = httpRequest({ hostname, port, path: upstream.healthPath, headers: { host: hostHeader }, agent, timeout: timeoutMs }, (res) => {
        res.resume();
        res.on('end', () => resolve(result(res.statusCode ?? null, null)));
        res.on('error', (err) => resolve(result(null, messageOf(err))));
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on('error', (err: NodeJS.ErrnoException) => resolve(result(null, err.code ? `${err.code}: ${err.message}` : err.message)));
      req.end();
    });
  } finally {
    agent.destroy();
  }
}

/**
 * Maps an Unleash webhook event (or our own push body) to a flag push. Only the environment's on/off events carry a
 * rollback or resume, and only for an environment this gateway reads the flag from (`reads`): a webhook made for all
 * environments also fires when the flag is switched in another one, which must not roll this gateway back (the
 * override would stick, as its own environment never shows the flag off) nor lift its rollback. A strategy event (a
 * percentage or title change, such as the annotation a rollback writes) is a refresh, never a resume.
 */
export function pushFromBody(body: unknown, reads: (flag: string, environment: string) => boolean): FlagPush {
  if (!body || typeof body !== 'object') return { action: 'refresh' };
  const b = body as Record<string, unknown>;
  if (typeof b.type === 'string' && typeof b.featureName === 'string') {
    const ours = typeof b.environment !== 'string' || reads(b.featureName, b.environment);
    const action = !ours ? 'refresh' : b.type === 'feature-environment-disabled' ? 'rollback' : b.type === 'feature-environment-enabled' ? 'resume' : 'refresh';
    return { flag: b.featureName, action };
  }
  const action = b.action === 'rollback' || b.action === 'resume' || b.action === 'shift' ? b.action : 'refresh';
  return { ...(typeof b.flag === 'string' ? { flag: b.flag } : {}), action, ...(typeof b.percent === 'number' ? { percent: b.percent } : {}) };
}

export function createAdminApp(plane: ControlPlane, options: { token: string; log: Logger }): express.Express {
  const { token, log } = options;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(express.json({ limit: '256kb' }));

  app.get('/healthz', (_req, res) => {
    const failing = plane.liveness?.();
    if (failing) return void res.status(503).json({ status: 'unhealthy', ...failing });
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (_req, res) => {
    // A draining gateway refuses new connections: fail readiness so load balancers stop sending.
    if (plane.draining?.()) return void res.status(503).json({ status: 'draining' });
    try {
      const view = await plane.view();
      const degraded = view.gateway.degraded;
      // Degraded still serves (everything to legacy), so it is ready; the body says why it is degraded.
      res.status(200).json({ status: degraded ? 'degraded' : 'ready', degraded, flagsSynchronized: view.gateway.flagsSynchronized });
    } catch (err) {
      // No answer from the data plane (no worker serving): not ready, rather than a 500.
      res.status(503).json({ status: 'unavailable', error: messageOf(err) });
    }
  });

  app.get('/dashboard', (_req, res) => {
    let html: string;
    try {
      html = readFileSync(join(here, 'dashboard', 'index.html'), 'utf8');
    } catch {
      html = '<!doctype html><title>strangler</title><p>dashboard not installed</p>';
    }
    // frame-ancestors: a page with kill-switch buttons is never framed by another site (clickjacking).
    res.type('html').set('cache-control', 'no-store').set('content-security-policy', "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'").set('x-frame-options', 'DENY').send(html);
  });

  const auth = (req: Request, res: Response, next: NextFunction) => {
    // Answers behind the token (routes, config, sync state) stay out of browser and proxy caches.
    res.set('cache-control', 'no-store');
    if (!tokenMatches(req.headers.authorization, token)) return next(new StranglerError('ADMIN_UNAUTHORIZED', 'missing or wrong bearer token: send Authorization: Bearer <admin.token>'));
    next();
  };
  app.use(['/admin', '/metrics'], auth);

  app.get('/metrics', async (_req, res, next) => {
    try {
      res.type('text/plain; version=0.0.4').send(renderMetrics(await plane.view()));
    } catch (err) {
      next(err);
    }
  });

  const withController = async (view: RoutesResponse): Promise<RoutesResponse> => {
    if (!plane.controllerState) return view;
    const state = await plane.controllerState();
    for (const r of view.routes) {
      const s = state[r.id];
      if (s) Object.assign(r, { guard: s.guard ?? r.guard, plan: s.plan ?? r.plan });
    }
    return view;
  };

  app.get('/admin/routes', async (_req, res, next) => {
    try {
      res.json(await withController(await plane.view()));
    } catch (err) {
      next(err);
    }
  });
  app.get('/admin/routes/:id', async (req, res, next) => {
    try {
      const view = await withController(await plane.view());
      const route = view.routes.find((r) => r.id === req.params.id);
      if (!route) throw new StranglerError('ADMIN_NOT_FOUND', `no route "${req.params.id}"; known: ${view.routes.map((r) => r.id).join(', ')}`);
      res.json({ gateway: view.gateway, route });
    } catch (err) {
      next(err);
    }
  });
  app.get('/admin/upstreams', async (_req, res, next) => {
    try {
      const config = plane.config();
      const upstreams = await Promise.all(config.upstreams.map(async (u, i) => ({ id: u.id, url: redactUrl(u.url), healthPath: u.healthPath, health: await probe(u, i) })));
      res.json({ upstreams });
    } catch (err) {
      next(err);
    }
  });
  app.get('/admin/breakers', async (_req, res, next) => {
    try {
      res.json({ breakers: await plane.breakers() });
    } catch (err) {
      next(err);
    }
  });
  app.get('/admin/config', (_req, res) => {
    const config = plane.config();
    res.json({ source: config.source, reload: plane.reloadStatus(), config: redactConfig(config) });
  });
  app.get('/admin/sync', async (_req, res, next) => {
    try {
      if (!plane.sync) throw new StranglerError('ADMIN_NOT_FOUND', 'this gateway has no sync section in its config');
      res.json(await plane.sync());
    } catch (err) {
      next(err);
    }
  });

  app.post('/admin/flags/refresh', async (req, res, next) => {
    try {
      const push = pushFromBody(req.body, (flag, environment) => plane.config().routes.some((r) => r.flag.name === flag && r.flag.environment === environment));
      const result = await plane.push(push);
      logEvent(log, 'flags.push', { ...push, delivered: result.delivered });
      res.json({ ok: true, ...push, ...result });
    } catch (err) {
      next(err);
    }
  });

  const change = (req: Request): ChangeOptions => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const reason = typeof body.reason === 'string' && body.reason.trim() ? body.reason.trim() : undefined;
    const actor = typeof body.actor === 'string' && body.actor.trim() ? `admin-api:${body.actor.trim()}` : `admin-api@${req.socket.remoteAddress ?? '?'}`;
    return { actor, ...(reason ? { reason } : {}) };
  };
  /**
   * Runs a traffic change through flags/ (Unleash Admin API, audit, push to configured gateways), then pushes it
   * to this gateway's own workers, which fetch the flags at once: a shift or resume shows here once Unleash serves it
   * (1–2 s, its read-after-write lag); a rollback acts here first, before Unleash is written (see below).
   */
  const trafficChange = (action: 'shift' | 'rollback' | 'resume') => async (req: Request, res: Response, next: NextFunction) => {
    try {
      if (!plane.traffic) throw new StranglerError('ADMIN_BAD_REQUEST', 'traffic changes need flags.adminUrl (or flags.url) and flags.adminToken in the gateway config');
      const id = String(req.params.id);
      const route = plane.config().routes.find((r) => r.id === id);
      if (!route) throw new StranglerError('ADMIN_NOT_FOUND', `no route "${id}"; known: ${plane.config().routes.map((r) => r.id).join(', ')}`);
      const who = change(req);
      let result: unknown;
      let percent: number | undefined;
      if (action === 'shift') {
        percent = parsePercent((req.body as Record<string, unknown> | undefined)?.percent);
        result = await plane.traffic.shift(id, percent, who);
        await plane.push({ flag: route.flag.name, action, percent });
      } else if (action === 'rollback') {
        // The kill switch acts here first, so its speed never depends on Unleash; then Unleash is switched off
        // (and audited) so every other gateway converges and the dashboard shows the truth, even when this
        // gateway's own push failed (a worker that did not answer in time).
        const pushed = plane.push({ flag: route.flag.name, action }).then(() => null, (err: unknown) => messageOf(err));
        const change = await plane.traffic.rollback(id, who);
        const pushError = await pushed;
        if (pushError !== null) logEvent(log, 'admin.local_push_failed', { routeId: id, action, err: pushError });
        result = pushError === null ? change : { ...(change as object), localPush: { ok: false, error: pushError } };
      } else {
        result = await plane.traffic.resume(id, who);
        await plane.push({ flag: route.flag.name, action });
      }
      logEvent(log, 'admin.change', { routeId: id, action, percent, actor: who.actor, reason: who.reason });
      res.json(result);
    } catch (err) {
      next(err);
    }
  };
  app.post('/admin/routes/:id/shift', trafficChange('shift'));
  app.post('/admin/routes/:id/rollback', trafficChange('rollback'));
  app.post('/admin/routes/:id/resume', trafficChange('resume'));

  app.use((req: Request, _res: Response, next: NextFunction) => next(new StranglerError('ADMIN_NOT_FOUND', `no admin endpoint ${req.method} ${req.path}`)));
  // Express recognises error handlers by their four parameters.
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    // Errors of the request itself from express and its body parser (too large, bad charset, bad %-encoding) are 4xx.
    const clientError = (err as { status?: unknown }).status;
    const known = isStranglerError(err)
      ? err
      : (err as { type?: string }).type === 'entity.parse.failed'
        ? new StranglerError('ADMIN_BAD_REQUEST', 'request body is not valid JSON')
        : typeof clientError === 'number' && clientError >= 400 && clientError < 500
          ? new StranglerError('ADMIN_BAD_REQUEST', `request refused: ${messageOf(err)}${(err as { type?: string }).type === 'entity.too.large' ? ' (the admin API takes JSON bodies up to 256 kB)' : ''}`)
          : null;
    if (!known) logEvent(log, 'admin.error', { err: messageOf(err) });
    const e = known ?? new StranglerError('INTERNAL_ERROR', messageOf(err));
    res.status(e.status).json(e.toJSON());
  });
  return app;
}
