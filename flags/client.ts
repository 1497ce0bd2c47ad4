/**
 * The gateway's flag client: unleash-client evaluates every decision locally (`isEnabled(flag, context, false)`),
 * but the flag data comes through our own repository (unleash-client's `repository` option) instead of the SDK's
 * poller, because the SDK's own poller
 *   - stops polling for good after one 401/403 (we keep polling and report the error on the admin API),
 *   - has no public "fetch now" (its internal fetch starts an extra poll loop per call); a push must fetch at once,
 *   - crashes on destroy() during an in-flight fetch to a dead host.
 * Start-up order: backup file (last good data), else the bootstrap file (always the bootstrap when offline) → live API. No data at all means "not ready":
 * every decision is legacy and /readyz reports degraded.
 *
 * A push that says "rollback" also sets a local override to legacy at once, because Unleash's read-after-write lag
 * (about 1 s) means a refetch right after the write can still see the old state, and because a rollback made while
 * Unleash was down or refused the admin token never reached Unleash at all. The override is cleared only when the
 * flag is seen disabled and then enabled again, or by an explicit resume push. A shift or refresh push (including
 * every strategy webhook, such as the one for the title a rollback writes) only refetches: it must not undo a rollback.
 */
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Unleash, UnleashEvents, type Context } from 'unleash-client';
import type { ClientFeaturesResponse, FeatureInterface } from 'unleash-client/lib/feature.js';
import type { RepositoryInterface } from 'unleash-client/lib/repository/index.js';
import type { Segment } from 'unleash-client/lib/strategy/strategy.js';
import type { FlagsConfig } from '../gateway/config/schema.ts';
import { messageOf } from '../common/errors.ts';
import { writeFileAtomic } from '../common/files.ts';
import type { Logger } from '../common/logger.ts';

export interface FlagState {
  known: boolean;
  enabled: boolean;
  rolloutPercent: number | null;
  localOverride: 'legacy' | null;
}

export interface FlagPush {
  flag?: string;
  action?: 'rollback' | 'resume' | 'shift' | 'refresh';
  percent?: number;
}

export interface FlagClientStatus {
  ready: boolean;
  synchronized: boolean;
  source: 'none' | 'backup' | 'bootstrap' | 'api';
  lastError: string | null;
  authError: boolean;
  lastFetchAt: string | null;
}

const activeStrategies = (feature: FeatureInterface) => (feature.strategies ?? []).filter((s) => !(s as { disabled?: boolean }).disabled);

/**
 * The share of users the flag sends to the service when that is one percentage: 100 for an enabled flag without
 * strategies or with one unconstrained "default" strategy, else the rollout of its only strategy when that is an
 * unconstrained flexibleRollout with "default" stickiness. null ("?") when the decision is not one percentage:
 * several strategies (any one may enable), constraints or segments, a parent flag, another strategy or stickiness.
 */
export function rolloutPercentOf(feature: FeatureInterface | undefined): number | null {
  if (!feature) return null;
  const strategies = activeStrategies(feature);
  if (strategies.length === 0) return 100;
  const [only] = strategies;
  if (!only || strategies.length > 1 || (feature.dependencies?.length ?? 0) > 0 || (only.constraints?.length ?? 0) > 0 || (only.segments?.length ?? 0) > 0) return null;
  if (only.name === 'default') return 100;
  if (only.name !== 'flexibleRollout' || (only.parameters?.stickiness ?? 'default') !== 'default') return null;
  const n = Number(only.parameters?.rollout);
  return Number.isFinite(n) ? Math.max(0, Math.min(100, n)) : 0;
}

/** Why a flag would send one user to either side from one request to the next (a random strategy), or null. */
export function unstickyReason(feature: FeatureInterface | undefined): string | null {
  for (const s of feature ? activeStrategies(feature) : []) {
    if (s.name === 'gradualRolloutRandom') return 'strategy gradualRolloutRandom picks a side at random on every request';
    if (s.name === 'flexibleRollout' && s.parameters?.stickiness === 'random') return 'flexibleRollout with stickiness "random" picks a side at random on every request';
  }
  return null;
}

class FlagRepository extends EventEmitter implements RepositoryInterface {
  #features = new Map<string, FeatureInterface>();
  #segments = new Map<number, Segment>();
  #etag: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #inflight: Promise<void> | undefined;
  /** Set while the token reads another environment than flags.environment (kept across 304s); null when they match. */
  #environmentMismatch: string | null = null;
  #stopped = false;
  #ready = false;
  readonly status: FlagClientStatus = { ready: false, synchronized: false, source: 'none', lastError: null, authError: false, lastFetchAt: null };
  readonly #config: FlagsConfig;
  readonly #log: Logger;
  readonly #instanceId: string;
  readonly #backupFile: string | null;

  constructor(config: FlagsConfig, log: Logger, instanceId: string) {
    super();
    this.#config = config;
    this.#log = log;
    this.#instanceId = instanceId;
    this.#backupFile = config.backupPath ? join(config.backupPath, `unleash-backup-${config.appName}.json`) : null;
  }

  getToggle(name: string): FeatureInterface | undefined {
    return this.#features.get(name);
  }
  getToggles(): FeatureInterface[] {
    return [...this.#features.values()];
  }
  getTogglesWithSegmentData() {
    return this.getToggles().map((t) => ({
      ...t,
      strategies: t.strategies?.map((s) => ({ ...s, segments: s.segments?.map((id) => this.#segments.get(id)).filter((x): x is Segment => x !== undefined) })),
    }));
  }
  getSegment(id: number): Segment | undefined {
    return this.#segments.get(id);
  }

  async start(): Promise<void> {
    const fromBackup = await this.#loadFile(this.#backupFile, 'backup');
    // The backup is what Unleash last served, newer than a bootstrap file shipped with the gateway (a rollback made
    // since, say): the bootstrap only fills a first start, or is the source of truth offline (no url).
    if (fromBackup && this.#config.url && this.#config.bootstrapFile) this.#log.info({ file: this.#config.bootstrapFile, backup: this.#backupFile }, 'flags.bootstrap_skipped');
    else await this.#loadFile(this.#config.bootstrapFile, 'bootstrap');
    if (this.#config.url) await this.fetchNow();
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
  }

  /** Fetches now; concurrent callers share one request. Never throws. */
  fetchNow(): Promise<void> {
    if (!this.#config.url || this.#stopped) return Promise.resolve();
    this.#inflight ??= this.#fetch().finally(() => {
      this.#inflight = undefined;
      this.#schedule();
    });
    return this.#inflight;
  }

  #schedule(): void {
    if (this.#stopped || this.#config.refreshIntervalMs <= 0) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.fetchNow(), this.#config.refreshIntervalMs);
    this.#timer.unref();
  }

  async #fetch(): Promise<void> {
    const url = new URL('client/features', this.#config.url?.endsWith('/') ? this.#config.url : `${this.#config.url}/`);
    const headers: Record<string, string> = {
      'unleash-appname': this.#config.appName,
      'unleash-instanceid': this.#instanceId,
      'unleash-sdk': 'strangler-repository:1',
      accept: 'application/json',
    };
    if (this.#config.token) headers.authorization = this.#config.token;
    if (this.#etag) headers['if-none-match'] = this.#etag;
    try {
      const res = await fetch(url, { headers, signal: AbortSignal.timeout(this.#config.requestTimeoutMs) });
      this.status.lastFetchAt = new Date().toISOString();
      if (res.status === 304) {
        await res.arrayBuffer();
        this.#clearError();
        this.emit(UnleashEvents.Unchanged);
        return;
      }
      if (res.status === 401 || res.status === 403) {
        await res.arrayBuffer();
        this.#setError(`Unleash refused the token (${res.status}) at ${url.pathname}: check flags.token (a backend token for environment ${this.#config.environment})`, true);
        return;
      }
      if (!res.ok) {
        await res.arrayBuffer();
        this.#setError(`Unleash answered ${res.status} at ${url.pathname}`, false);
        return;
      }
      const body = (await res.json()) as ClientFeaturesResponse;
      if (!Array.isArray(body.features)) {
        this.#setError(`Unleash answered without a features array at ${url.pathname}`, false);
        return;
      }
      this.#etag = res.headers.get('etag') ?? undefined;
      // The token, not flags.environment, decides what Unleash serves; the flags commands and the controller write to
      // flags.environment. A difference means their shifts and rollbacks never reach this gateway through Unleash.
      const served = (body as { query?: { environment?: unknown } }).query?.environment;
      this.#environmentMismatch = typeof served === 'string' && served !== this.#config.environment
        ? `flags.token reads environment "${served}" but flags.environment is "${this.#config.environment}": \`strangler flags\` shift, rollback and sync write to "${this.#config.environment}", which this gateway never reads; use a backend token for "${this.#config.environment}" or set flags.environment to "${served}"`
        : null;
      this.#clearError();
      this.#apply(body, 'api');
      await this.#writeBackup(body);
    } catch (err) {
      this.#setError(`Unleash unreachable at ${url.origin}: ${messageOf(err)}`, false);
    }
  }

  #apply(body: ClientFeaturesResponse, source: FlagClientStatus['source']): void {
    this.#features = new Map(body.features.map((f) => [f.name, f]));
    this.#segments = new Map((body.segments ?? []).map((s) => [s.id, s]));
    this.status.source = source;
    if (source === 'api' || source === 'bootstrap') this.status.synchronized = this.status.synchronized || source === 'api';
    if (!this.#ready) {
      this.#ready = true;
      this.status.ready = true;
      this.emit(UnleashEvents.Ready);
    }
    this.emit(UnleashEvents.Changed, this.getToggles());
  }

  /** Loads a backup or bootstrap file; false when there is none or it is unusable (logged). */
  async #loadFile(file: string | null, source: 'backup' | 'bootstrap'): Promise<boolean> {
    if (!file) return false;
    try {
      const body = JSON.parse(await readFile(file, 'utf8')) as ClientFeaturesResponse;
      if (!Array.isArray(body.features)) throw new Error('no "features" array');
      this.#apply(body, source);
      this.#log.info({ file, source, flags: body.features.length }, 'flags.loaded_from_file');
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || source !== 'backup') this.#log.warn({ file, source, err: messageOf(err) }, 'flags.file_unusable');
      return false;
    }
  }

  async #writeBackup(body: ClientFeaturesResponse): Promise<void> {
    if (!this.#backupFile || !this.#config.backupPath) return;
    try {
      await writeFileAtomic(this.#backupFile, JSON.stringify({ version: body.version, features: body.features, segments: body.segments ?? [] }));
    } catch (err) {
      this.#log.warn({ file: this.#backupFile, err: messageOf(err) }, 'flags.backup_failed');
    }
  }

  #setError(message: string, auth: boolean): void {
    const changed = this.status.lastError !== message;
    this.status.lastError = message;
    this.status.authError = auth;
    if (changed) this.emit(UnleashEvents.Error, new Error(message));
  }

  /** After a good answer: no error, except an environment mismatch, which lasts (reported once, not on every poll). */
  #clearError(): void {
    if (this.#environmentMismatch) return this.#setError(this.#environmentMismatch, false);
    this.status.lastError = null;
    this.status.authError = false;
  }
}

export class FlagClient {
  readonly #unleash: Unleash;
  readonly #repository: FlagRepository;
  readonly #log: Logger;
  /** flag → override record; present means "route to legacy now". Kept in #overridesFile across restarts. */
  readonly #overrides = new Map<string, { sawDisabled: boolean }>();
  /** Where the overrides live between restarts (in flags.backupPath; null without one). */
  readonly #overridesFile: string | null;
  /** Writes of #overridesFile, one after another, so an older state never lands last. */
  #overridesWrite: Promise<void> = Promise.resolve();
  /** Flags the gateway routes by (routeBy) → the unsticky reason last logged for it (null: none). */
  readonly #routed = new Map<string, string | null>();

  constructor(config: FlagsConfig, log: Logger, options: { instanceId?: string } = {}) {
    this.#log = log;
    const instanceId = config.instanceId ?? options.instanceId ?? `${hostname()}-${process.pid}`;
    this.#repository = new FlagRepository(config, log, instanceId);
    this.#overridesFile = config.backupPath ? join(config.backupPath, `rollback-overrides-${config.appName}.json`) : null;
    this.#unleash = new Unleash({
      appName: config.appName,
      instanceId,
      url: config.url ?? 'http://127.0.0.1:9/api/',
      environment: config.environment,
      repository: this.#repository,
      disableMetrics: config.disableMetrics || !config.url,
      customHeaders: config.token ? { Authorization: config.token } : {},
      disableAutoStart: true,
      skipInstanceCountWarning: true,
    });
    // Errors are reported through status and the admin API; without a listener the SDK would log them itself.
    this.#unleash.on(UnleashEvents.Error, (err: Error) => this.#log.warn({ err: err.message }, 'flags.error'));
    // The SDK's warnings matter (its metrics or registration refused with 401/403 stop Unleash's usage data for good;
    // a flag asked for before any data) but some repeat per call, so each distinct one is logged once a minute.
    const warned = new Map<string, number>();
    this.#unleash.on(UnleashEvents.Warn, (msg: unknown) => {
      const text = msg instanceof Error ? msg.message : String(msg);
      const now = Date.now();
      if (now - (warned.get(text) ?? -Infinity) < 60_000) return;
      if (warned.size >= 1_000) warned.clear();
      warned.set(text, now);
      this.#log.warn({ warning: text }, 'flags.warn');
    });
    this.#repository.on(UnleashEvents.Changed, () => {
      this.#reconcileOverrides();
      for (const flag of this.#routed.keys()) this.#checkSticky(flag);
    });
  }

  /** Loads backup/bootstrap and does the first fetch. Resolves within requestTimeoutMs even if Unleash is down. */
  async start(): Promise<void> {
    await this.#restoreOverrides();
    await this.#unleash.start();
  }

  get status(): FlagClientStatus {
    return this.#repository.status;
  }

  /** The decision for one request. Unknown flag or no data → false (legacy). */
  isEnabled(flag: string, context: Context): boolean {
    if (this.#overrides.has(flag)) return false;
    return this.#unleash.isEnabled(flag, context, false);
  }

  /**
   * The flags the gateway routes by (its routes' flags, given at start and on each reload), so that one which is not
   * sticky is reported when it is routed by or when its definition changes, never on the request path.
   */
  routeBy(flags: Iterable<string>): void {
    const next = new Set(flags);
    for (const flag of this.#routed.keys()) if (!next.has(flag)) this.#routed.delete(flag);
    for (const flag of next) this.#checkSticky(flag);
  }

  /** Warns (once per change) when a flag the gateway routes by is not sticky: users would bounce between sides. */
  #checkSticky(flag: string): void {
    const reason = unstickyReason(this.#repository.getToggle(flag));
    if (reason && this.#routed.get(flag) !== reason) this.#log.warn({ flag, reason, hint: 'users move between legacy and the service from one request to the next; use flexibleRollout with stickiness "default" (`strangler flags sync --fix`)' }, 'flags.not_sticky');
    this.#routed.set(flag, reason);
  }

  state(flag: string): FlagState {
    const feature = this.#repository.getToggle(flag);
    return {
      known: feature !== undefined,
      enabled: feature?.enabled ?? false,
      rolloutPercent: rolloutPercentOf(feature),
      localOverride: this.#overrides.has(flag) ? 'legacy' : null,
    };
  }

  /** Handles a push from the control plane (shift/rollback/resume, or an Unleash webhook): act now, then refetch. */
  async push(push: FlagPush): Promise<void> {
    if (push.flag && push.action === 'rollback') {
      // The override is the rollback; the refetch that follows must not hold up the answer (an Unleash that hangs
      // would delay the caller by requestTimeoutMs, longer than a cluster primary waits for its workers).
      this.#overrides.set(push.flag, { sawDisabled: false });
      void this.#repository.fetchNow();
      return this.#saveOverrides();
    }
    if (push.flag && push.action === 'resume' && this.#overrides.delete(push.flag)) await this.#saveOverrides();
    await this.#repository.fetchNow();
  }

  refresh(): Promise<void> {
    return this.#repository.fetchNow();
  }

  close(): void {
    this.#repository.stop();
    this.#unleash.destroy();
  }

  #reconcileOverrides(): void {
    let changed = false;
    for (const [flag, record] of this.#overrides) {
      const f = this.#repository.getToggle(flag);
      if (!f || !f.enabled || rolloutPercentOf(f) === 0) {
        changed ||= !record.sawDisabled;
        record.sawDisabled = true;
      } else if (record.sawDisabled) {
        this.#overrides.delete(flag); // turned back on in Unleash after the rollback landed
        changed = true;
      }
    }
    if (changed) void this.#saveOverrides();
  }

  /**
   * A rollback override outlives a restart: one made while Unleash was down or refused the admin token exists only
   * here, and a restarted gateway would otherwise follow Unleash (or its backup) straight back to the service.
   */
  async #restoreOverrides(): Promise<void> {
    const file = this.#overridesFile;
    if (!file) return;
    let saved: unknown;
    try {
      saved = JSON.parse(await readFile(file, 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.#log.warn({ file, err: messageOf(err), hint: 'rollback overrides from before the restart are not known; check flags status and roll back again if needed' }, 'flags.overrides_unreadable');
      return;
    }
    const overrides = (saved as { overrides?: unknown } | null)?.overrides;
    if (!overrides || typeof overrides !== 'object') return void this.#log.warn({ file, err: 'no "overrides" object' }, 'flags.overrides_unreadable');
    for (const [flag, record] of Object.entries(overrides as Record<string, { sawDisabled?: unknown }>)) this.#overrides.set(flag, { sawDisabled: record?.sawDisabled === true });
    if (this.#overrides.size > 0) this.#log.warn({ file, flags: [...this.#overrides.keys()], hint: 'these flags stay on legacy until a resume (or until Unleash shows them off and then on again)' }, 'flags.overrides_restored');
  }

  /** Writes the overrides (atomically: temporary file, then rename); a failure is logged, the override still holds. */
  #saveOverrides(): Promise<void> {
    const file = this.#overridesFile;
    if (!file) return Promise.resolve();
    const body = JSON.stringify({ overrides: Object.fromEntries(this.#overrides) });
    this.#overridesWrite = this.#overridesWrite.then(async () => {
      try {
        await writeFileAtomic(file, body);
      } catch (err) {
        this.#log.warn({ file, err: messageOf(err), hint: 'the rollback holds in this process but will not survive a restart' }, 'flags.overrides_unsaved');
      }
    });
    return this.#overridesWrite;
  }
}
