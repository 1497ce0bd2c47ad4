/**
 * Runtime state shared by the data plane and the control plane (neither imports the other): the current config
 * snapshot (route table, upstreams, breakers), per-route stats, the flag client and the identifier. A reload
 * builds a new snapshot and swaps it in one assignment; requests in flight keep the snapshot they started with.
 */
import type { Logger } from '../common/logger.ts';
import { messageOf } from '../common/errors.ts';
import { ConfigError, loadConfigFile, parseConfigText, type LoadedConfig } from './config/load.ts';
import { RouteTable } from './routing/route-table.ts';
import { buildUpstreams, retireUpstreams, type Upstream } from './proxy/upstreams.ts';
import { Breaker } from './resilience/breakers.ts';
import { RouteStats } from './observability/stats.ts';
import { logEvent } from './observability/log-events.ts';
import { Identifier } from '../flags/context.ts';
import { FlagClient, type FlagPush } from '../flags/client.ts';

export interface Snapshot {
  readonly config: LoadedConfig;
  readonly table: RouteTable;
  readonly upstreams: ReadonlyMap<string, Upstream>;
  /** Keyed by service upstream id. */
  readonly breakers: ReadonlyMap<string, Breaker>;
  readonly identifier: Identifier;
  readonly loadedAt: string;
}

export interface ReloadStatus {
  lastReloadAt: string | null;
  lastError: { at: string; message: string; problems?: unknown } | null;
  /** Settings of the file that differ from those the process started with but are read at start only. */
  restartRequired: string[];
}

/**
 * Settings a running gateway reads at start only: the flag client and its connection, the listeners, the worker
 * count, the logger, and the sections of the other roles. Everything else (routes, upstreams, policies, identity,
 * the proxy's per-request settings) takes effect on reload.
 */
const START_ONLY: readonly (readonly [keyof LoadedConfig, readonly string[] | 'all'])[] = [
  ['flags', 'all'],
  ['proxy', ['bind', 'port', 'workers', 'maxHeaderBytes', 'headersTimeoutMs', 'requestTimeoutMs']],
  ['admin', 'all'],
  ['log', 'all'],
  ['controller', 'all'],
  ['kafka', 'all'],
  ['sync', 'all'],
];

/** The start-only settings (by path, never by value: some are secrets) that differ between two configs. */
export function startOnlyChanges(started: LoadedConfig, now: LoadedConfig): string[] {
  const changed: string[] = [];
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  for (const [section, fields] of START_ONLY) {
    const a = (started[section] ?? {}) as Record<string, unknown>;
    const b = (now[section] ?? {}) as Record<string, unknown>;
    const keys = fields === 'all' ? [...new Set([...Object.keys(a), ...Object.keys(b)])] : fields;
    for (const key of keys) if (!same(a[key], b[key])) changed.push(`${section}.${key}`);
  }
  return changed;
}

/**
 * Records a reload that took effect (`fields` go on its config.reloaded line), and which start-only settings of the
 * new file need a restart. The single-process runtime and the cluster primary both report through here.
 */
export function reloadSucceeded(reload: ReloadStatus, started: LoadedConfig, config: LoadedConfig, log: Logger, fields: Record<string, unknown>, at = new Date().toISOString()): void {
  reload.lastReloadAt = at;
  reload.lastError = null;
  logEvent(log, 'config.reloaded', fields);
  reload.restartRequired = startOnlyChanges(started, config);
  if (reload.restartRequired.length > 0) logEvent(log, 'config.restart_required', { fields: reload.restartRequired, hint: 'these settings are read at start only: restart the gateway to apply them (the rest of the file is live)' });
}

/** Records a refused reload (the last good config stays): the error, with every problem of a bad file. */
export function reloadFailed(reload: ReloadStatus, file: string, err: unknown, log: Logger): void {
  reload.lastError = { at: new Date().toISOString(), message: messageOf(err), ...(err instanceof ConfigError ? { problems: err.problems } : {}) };
  logEvent(log, 'config.reload_failed', { file, err: messageOf(err) });
}

/**
 * `opens` has the open count of each upstream's last breaker: breaker_opens_total is a counter, so a breaker rebuilt
 * by a reload (or an upstream routed to again) goes on from the count it had, as route totals do.
 */
function buildBreakers(config: LoadedConfig, log: Logger, opens: ReadonlyMap<string, number>, previous?: Snapshot): Map<string, Breaker> {
  const out = new Map<string, Breaker>();
  for (const route of config.routes) {
    if (!route.service || out.has(route.service)) continue;
    const policy = config.policies.breakers[route.breaker];
    if (!policy) continue; // load.ts already rejected unknown policy names
    // Keep the breaker (and its state) when neither its upstream nor its policy changed.
    const old = previous?.breakers.get(route.service);
    const unchanged = old && old.policyName === route.breaker && JSON.stringify(previous?.config.policies.breakers[old.policyName]) === JSON.stringify(policy);
    out.set(route.service, unchanged ? old : new Breaker(route.service, route.breaker, policy, log, opens.get(route.service) ?? 0));
  }
  return out;
}

/** The flags that decide a route's target (routes without a service never ask one). */
function routedFlags(config: LoadedConfig): string[] {
  return config.routes.flatMap((r) => (r.service ? [r.flag.name] : []));
}

export class Runtime {
  #snapshot: Snapshot;
  readonly #stats = new Map<string, RouteStats>();
  /** Open counts of each upstream's last breaker, as of the last reload (buildBreakers). */
  readonly #breakerOpens = new Map<string, number>();
  readonly flags: FlagClient;
  readonly log: Logger;
  readonly reload: ReloadStatus = { lastReloadAt: null, lastError: null, restartRequired: [] };
  /** The config this process started with (start-only settings stay as they were). */
  readonly #started: LoadedConfig;
  readonly instanceId: string;
  readonly startedAt = new Date().toISOString();
  draining = false;

  constructor(config: LoadedConfig, log: Logger, options: { instanceId?: string } = {}) {
    this.log = log;
    this.instanceId = options.instanceId ?? `${process.pid}`;
    this.#snapshot = this.#build(config);
    this.#started = config;
    this.flags = new FlagClient(config.flags, log.child({ component: 'flags' }), { instanceId: options.instanceId });
    this.flags.routeBy(routedFlags(config));
    if (this.#snapshot.identifier.ephemeralSessions) logEvent(log, 'config.ephemeral_session_secret', { hint: 'set identity.sessionSecret so sessions survive restarts and span gateways' });
  }

  get snapshot(): Snapshot {
    return this.#snapshot;
  }

  #build(config: LoadedConfig, previous?: Snapshot): Snapshot {
    return {
      config,
      table: new RouteTable(config.routes),
      upstreams: buildUpstreams(config.upstreams, previous?.upstreams, config.source),
      breakers: buildBreakers(config, this.log, this.#breakerOpens, previous),
      identifier: previous && JSON.stringify(previous.config.identity) === JSON.stringify(config.identity) ? previous.identifier : new Identifier(config.identity),
      loadedAt: new Date().toISOString(),
    };
  }

  /**
   * A flag push from the control plane. A resume starts a fresh analysis for the flag's routes, as Flagger starts a
   * new one after a rollback: the window's failures from before the rollback would otherwise make the canary guard
   * roll the resumed route back at once.
   */
  async push(push: FlagPush): Promise<void> {
    await this.flags.push(push);
    if (push.action !== 'resume' || !push.flag) return;
    for (const route of this.#snapshot.config.routes) if (route.flag.name === push.flag) this.#stats.get(route.id)?.restartWindow();
  }

  stats(routeId: string): RouteStats {
    let s = this.#stats.get(routeId);
    if (!s) {
      s = new RouteStats(this.#snapshot.config.admin.statsWindowMs);
      this.#stats.set(routeId, s);
    }
    return s;
  }

  /** Applies a new config. Start-only settings (START_ONLY) keep their start values and are reported. */
  apply(config: LoadedConfig): void {
    const previous = this.#snapshot;
    for (const [id, b] of previous.breakers) this.#breakerOpens.set(id, b.opens);
    this.#snapshot = this.#build(config, previous);
    this.flags.routeBy(routedFlags(config));
    retireUpstreams(previous.upstreams, this.#snapshot.upstreams);
    for (const [id, b] of previous.breakers) if (this.#snapshot.breakers.get(id) !== b) b.shutdown();
    reloadSucceeded(this.reload, this.#started, config, this.log, { file: config.source, routes: config.routes.length }, this.#snapshot.loadedAt);
  }

  /**
   * Re-reads the config file (or parses `text`, the file's text a cluster primary read and validated, so every worker
   * loads what the primary did); a bad file keeps the last good config and is reported on the admin API.
   */
  reloadFromFile(text?: string): boolean {
    const file = this.#snapshot.config.source;
    try {
      this.apply(text === undefined ? loadConfigFile(file) : parseConfigText(text, file));
      return true;
    } catch (err) {
      reloadFailed(this.reload, file, err, this.log);
      return false;
    }
  }

  close(): void {
    for (const b of this.#snapshot.breakers.values()) b.shutdown();
    for (const u of this.#snapshot.upstreams.values()) u.agent.destroy();
    this.flags.close();
  }
}
