/**
 * What the flags commands share: the loaded config, the Admin API client, the routes that have a flag, and the
 * gateways to push refreshes to. Built once per command (or once in the gateway for its admin API).
 */
import { StranglerError } from '../common/errors.ts';
import { silentLogger, type Logger } from '../common/logger.ts';
import type { LoadedConfig, LoadedRoute, ResolvedFlagRef } from '../gateway/config/load.ts';
import { UnleashAdminApi, adminBaseUrl } from './admin-api.ts';

export interface ManagedRoute {
  routeId: string;
  flag: ResolvedFlagRef;
  route: LoadedRoute;
}

export interface GatewayRef {
  url: string;
  token: string | null;
}

export interface FlagsControl {
  readonly config: LoadedConfig;
  readonly api: UnleashAdminApi;
  readonly log: Logger;
  /** Routes with a service (and therefore a flag), by route id, in config order. */
  readonly routes: ReadonlyMap<string, ManagedRoute>;
  readonly gateways: readonly GatewayRef[];
  /** Timeout for each refresh push to a gateway. */
  readonly refreshTimeoutMs: number;
}

export interface FlagsControlOptions {
  log?: Logger;
  /** Replaces the API client (tests, or the gateway reusing one). */
  api?: UnleashAdminApi;
  refreshTimeoutMs?: number;
}

export function createFlagsControl(config: LoadedConfig, options: FlagsControlOptions = {}): FlagsControl {
  const log = options.log ?? silentLogger;
  let api = options.api;
  if (!api) {
    const base = config.flags.adminUrl ?? config.flags.url;
    if (!base) throw new StranglerError('FLAGS_NOT_CONFIGURED', `${config.source}: flags.adminUrl (or flags.url) is not set; the flags commands need the Unleash Admin API`);
    if (!config.flags.adminToken) throw new StranglerError('FLAGS_NOT_CONFIGURED', `${config.source}: flags.adminToken is not set; use an Unleash admin token or personal access token (e.g. adminToken: \${UNLEASH_ADMIN_TOKEN})`);
    api = new UnleashAdminApi({ baseUrl: adminBaseUrl(base), token: config.flags.adminToken, timeoutMs: config.flags.requestTimeoutMs, log });
  }
  const routes = new Map<string, ManagedRoute>();
  for (const route of config.routes) {
    if (route.service !== undefined) routes.set(route.id, { routeId: route.id, flag: route.flag, route });
  }
  return { config, api, log, routes, gateways: config.flags.gateways, refreshTimeoutMs: options.refreshTimeoutMs ?? 2_000 };
}

/** The managed route for an id, or FLAG_ROUTE_UNKNOWN listing the known ones. */
export function managedRoute(control: FlagsControl, routeId: string): ManagedRoute {
  const found = control.routes.get(routeId);
  if (found) return found;
  const known = [...control.routes.keys()].join(', ') || '(none)';
  const exists = control.config.routes.some((r) => r.id === routeId);
  throw new StranglerError('FLAG_ROUTE_UNKNOWN', exists
    ? `route "${routeId}" has no service in ${control.config.source}, so it has no flag; routes with flags: ${known}`
    : `route "${routeId}" is not in ${control.config.source}; routes with flags: ${known}`, { details: { routeId, known: [...control.routes.keys()] } });
}
