/**
 * Typed client for the Unleash Admin API calls strangler uses (verified against unleash-server 7.5.1; see
 * /work/shared/reference/unleash.md §8). Every failure is a StranglerError whose message names the call
 * (method + path) and why; tokens never appear in messages or logs.
 *
 *   401/403 → UNLEASH_UNAUTHORIZED   404 → UNLEASH_NOT_FOUND   409 → UNLEASH_CONFLICT   400 → UNLEASH_REJECTED
 *   network error / timeout → UNLEASH_UNREACHABLE                 anything else unexpected → UNLEASH_BAD_RESPONSE
 */
import { StranglerError, messageOf, type ErrorCode } from '../common/errors.ts';
import { silentLogger, type Logger } from '../common/logger.ts';
import { FLAGS_LOG } from './log-events.ts';

export interface AdminApiOptions {
  /** Unleash base URL, e.g. http://127.0.0.1:4242 (a trailing slash or /api/ suffix is tolerated). */
  baseUrl: string;
  /** Admin token (`*:*.…`) or personal access token; null with auth type none. */
  token: string | null;
  timeoutMs?: number;
  log?: Logger;
}

export interface FlexibleRolloutParameters {
  rollout: string;
  stickiness: string;
  groupId: string;
}

export interface Strategy {
  id: string;
  name: string;
  title?: string | null;
  parameters: Record<string, string>;
  constraints: unknown[];
  variants?: unknown[];
  segments?: number[];
  disabled?: boolean | null;
  sortOrder?: number;
}

export interface StrategyInput {
  name: string;
  title?: string;
  parameters: Record<string, string>;
  constraints?: unknown[];
  segments?: number[];
  variants?: unknown[];
  disabled?: boolean;
}

export interface FeatureEnvironmentState {
  name: string;
  environment: string;
  enabled: boolean;
  strategies: Strategy[];
}

export interface Feature {
  name: string;
  project: string;
  type: string;
  description: string | null;
  archived?: boolean;
  environments: { name: string; enabled: boolean; strategies: Strategy[] }[];
}

export interface UnleashEvent {
  id: number;
  type: string;
  createdBy: string;
  createdAt: string;
  environment: string | null;
  featureName: string | null;
  data: Record<string, unknown> | null;
  preData: Record<string, unknown> | null;
}

export interface ProjectEnvironment {
  name: string;
  /** The environment is enabled in Unleash (globally). */
  enabled: boolean;
  /** The environment is enabled in the project. */
  visible?: boolean;
}

export type PatchOperation = { op: 'replace' | 'add' | 'remove'; path: string; value?: unknown };

export interface Addon {
  id: number;
  provider: string;
  enabled: boolean;
  description?: string | null;
  parameters: Record<string, unknown>;
  events: string[];
  projects?: string[];
  environments?: string[];
}

export interface AddonInput {
  provider: string;
  enabled: boolean;
  description?: string;
  parameters: Record<string, unknown>;
  events: string[];
  projects?: string[];
  environments?: string[];
}

const seg = (value: string) => encodeURIComponent(value);

/** The Unleash base URL for a configured client URL: http://h:4242/api/ → http://h:4242. */
export function adminBaseUrl(url: string): string {
  return url.replace(/\/+$/, '').replace(/\/api$/, '');
}

export class UnleashAdminApi {
  readonly baseUrl: string;
  #token: string | null;
  #timeoutMs: number;
  #log: Logger;

  constructor(options: AdminApiOptions) {
    this.baseUrl = adminBaseUrl(options.baseUrl);
    this.#token = options.token;
    this.#timeoutMs = options.timeoutMs ?? 5_000;
    this.#log = options.log ?? silentLogger;
  }

  // ── flags ──────────────────────────────────────────────────────────────

  /** POST /api/admin/projects/{project}/features → 201. Duplicate name → UNLEASH_CONFLICT. */
  createFeature(project: string, input: { name: string; type?: string; description?: string; impressionData?: boolean }): Promise<Feature> {
    return this.#call<Feature>('POST', `/api/admin/projects/${seg(project)}/features`, { type: 'release', impressionData: false, ...input });
  }

  /** GET /api/admin/projects/{project}/features/{name} (all environments). */
  getFeature(project: string, name: string): Promise<Feature> {
    return this.#call<Feature>('GET', `/api/admin/projects/${seg(project)}/features/${seg(name)}`);
  }

  /** Like getFeature, but undefined when the flag does not exist. */
  async findFeature(project: string, name: string): Promise<Feature | undefined> {
    try {
      return await this.getFeature(project, name);
    } catch (err) {
      if (err instanceof StranglerError && err.code === 'UNLEASH_NOT_FOUND') return undefined;
      throw err;
    }
  }

  /** DELETE /api/admin/projects/{project}/features/{name} → archive (SDKs then treat it as unknown → legacy). */
  async archiveFeature(project: string, name: string): Promise<void> {
    await this.#call('DELETE', `/api/admin/projects/${seg(project)}/features/${seg(name)}`);
  }

  /** GET …/features/{name}/environments/{env}: enabled state and strategies. */
  /**
   * The environment's state, its strategies with their segments: GET …/environments/{env} of unleash-server 7.5.1
   * leaves each strategy's segments out (a segment added by hand would look like none), the strategies list has them.
   */
  async getFeatureEnvironment(project: string, name: string, environment: string): Promise<FeatureEnvironmentState> {
    const [state, strategies] = await Promise.all([
      this.#call<FeatureEnvironmentState>('GET', `${this.#featurePath(project, name)}/environments/${seg(environment)}`),
      this.listStrategies(project, name, environment),
    ]);
    return { ...state, strategies };
  }

  // ── strategies ─────────────────────────────────────────────────────────

  listStrategies(project: string, name: string, environment: string): Promise<Strategy[]> {
    return this.#call<Strategy[]>('GET', this.#strategiesPath(project, name, environment));
  }

  addStrategy(project: string, name: string, environment: string, strategy: StrategyInput): Promise<Strategy> {
    return this.#call<Strategy>('POST', this.#strategiesPath(project, name, environment), {
      constraints: [], segments: [], variants: [], disabled: false, ...strategy,
    });
  }

  /** JSON-patch one strategy, e.g. [{op:'replace', path:'/parameters/rollout', value:'25'}]. */
  patchStrategy(project: string, name: string, environment: string, id: string, ops: PatchOperation[]): Promise<Strategy> {
    return this.#call<Strategy>('PATCH', `${this.#strategiesPath(project, name, environment)}/${seg(id)}`, ops);
  }

  /** PUT: replace the whole strategy. */
  updateStrategy(project: string, name: string, environment: string, id: string, strategy: StrategyInput): Promise<Strategy> {
    return this.#call<Strategy>('PUT', `${this.#strategiesPath(project, name, environment)}/${seg(id)}`, {
      constraints: [], segments: [], variants: [], disabled: false, ...strategy,
    });
  }

  /** Deleting the last strategy also disables the environment. */
  async deleteStrategy(project: string, name: string, environment: string, id: string): Promise<void> {
    await this.#call('DELETE', `${this.#strategiesPath(project, name, environment)}/${seg(id)}`);
  }

  // ── kill switch ────────────────────────────────────────────────────────

  /**
   * POST …/environments/{env}/on|off. Careful: /on with no active strategy makes Unleash add its default strategy
   * (100 % out of the box); callers in this package only switch on when a strategy exists.
   */
  async setEnvironmentEnabled(project: string, name: string, environment: string, enabled: boolean): Promise<void> {
    await this.#call('POST', `${this.#featurePath(project, name)}/environments/${seg(environment)}/${enabled ? 'on' : 'off'}`);
  }

  // ── audit ──────────────────────────────────────────────────────────────

  /** GET /api/admin/events/{name}: the flag's audit log, newest first. */
  async getFeatureEvents(name: string): Promise<UnleashEvent[]> {
    const body = await this.#call<{ events: UnleashEvent[] }>('GET', `/api/admin/events/${seg(name)}`);
    if (!body || !Array.isArray(body.events)) throw this.#badBody('GET', `/api/admin/events/${name}`, 'no events array');
    return body.events;
  }

  // ── environments ───────────────────────────────────────────────────────

  /**
   * GET /api/admin/environments/project/{project}: every environment of the Unleash instance, `visible` when it is
   * enabled in the project. Unleash answers 404 for a flag in an environment the project does not have, the same
   * answer as for a missing flag; this tells the two apart.
   */
  async projectEnvironments(project: string): Promise<ProjectEnvironment[]> {
    const body = await this.#call<{ environments: ProjectEnvironment[] }>('GET', `/api/admin/environments/project/${seg(project)}`);
    if (!body || !Array.isArray(body.environments)) throw this.#badBody('GET', `/api/admin/environments/project/${project}`, 'no environments array');
    return body.environments;
  }

  // ── environment defaults ───────────────────────────────────────────────

  /** POST /api/admin/projects/{project}/environments/{env}/default-strategy (strategy used by /on on an empty flag). */
  async setDefaultStrategy(project: string, environment: string, strategy: Omit<StrategyInput, 'title'>): Promise<void> {
    await this.#call('POST', `/api/admin/projects/${seg(project)}/environments/${seg(environment)}/default-strategy`, { constraints: [], ...strategy });
  }

  // ── addons (webhook) ───────────────────────────────────────────────────

  async listAddons(): Promise<Addon[]> {
    const body = await this.#call<{ addons: Addon[] }>('GET', '/api/admin/addons');
    return body.addons;
  }

  createAddon(addon: AddonInput): Promise<Addon> {
    return this.#call<Addon>('POST', '/api/admin/addons', addon);
  }

  /** PUT the whole addon; parameters Unleash listed masked ("*****") keep their stored value. */
  updateAddon(id: number, addon: AddonInput): Promise<Addon> {
    return this.#call<Addon>('PUT', `/api/admin/addons/${id}`, addon);
  }

  /**
   * Deletes an addon at once. On unleash-server 7.5.1 an addon deleted within a minute of its last firing can take
   * the server down (flags/webhooks.ts removeWebhooks: disable, wait, then delete).
   */
  async deleteAddon(id: number): Promise<void> {
    await this.#call('DELETE', `/api/admin/addons/${id}`);
  }

  /** A webhook addon that POSTs flag events for `environments` to `url` (unleash.md §11; Unleash caches addons ≤ 60 s). */
  createWebhook(url: string, options: { events: string[]; environments?: string[]; projects?: string[]; description?: string; authorization?: string }): Promise<Addon> {
    return this.createAddon({
      provider: 'webhook',
      enabled: true,
      description: options.description ?? 'strangler: push flag changes to the gateway',
      parameters: { url, ...(options.authorization ? { authorization: options.authorization } : {}) },
      events: options.events,
      projects: options.projects ?? ['*'],
      environments: options.environments ?? ['*'],
    });
  }

  /** GET /health: true when the server answers 200. Never throws. */
  async health(): Promise<boolean> {
    try {
      const res = await fetch(`${this.baseUrl}/health`, { signal: AbortSignal.timeout(this.#timeoutMs) });
      await res.body?.cancel();
      return res.ok;
    } catch {
      return false;
    }
  }

  // ── plumbing ───────────────────────────────────────────────────────────

  #featurePath(project: string, name: string): string {
    return `/api/admin/projects/${seg(project)}/features/${seg(name)}`;
  }

  #strategiesPath(project: string, name: string, environment: string): string {
    return `${this.#featurePath(project, name)}/environments/${seg(environment)}/strategies`;
  }

  #badBody(method: string, path: string, why: string): StranglerError {
    return new StranglerError('UNLEASH_BAD_RESPONSE', `Unleash ${method} ${path}: unexpected answer (${why})`);
  }

  async #call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const started = performance.now();
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (this.#token) headers.Authorization = this.#token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (err) {
      const timedOut = err instanceof DOMException && err.name === 'TimeoutError';
      const why = timedOut ? `no answer within ${this.#timeoutMs} ms` : describeNetworkError(err);
      this.#log.warn({ method, path, err: why }, FLAGS_LOG.adminCallFailed);
      throw new StranglerError('UNLEASH_UNREACHABLE', `Unleash ${method} ${path}: cannot reach ${this.baseUrl} (${why})`, { cause: err });
    }
    const text = await res.text();
    const ms = Math.round(performance.now() - started);
    if (res.ok) {
      this.#log.debug({ method, path, status: res.status, ms }, FLAGS_LOG.adminCall);
      if (text === '') return undefined as T;
      try {
        return JSON.parse(text) as T;
      } catch {
        throw this.#badBody(method, path, `HTTP ${res.status} with a body that is not JSON: ${text.slice(0, 120)}`);
      }
    }
    const reason = unleashReason(text);
    const code: ErrorCode =
      res.status === 401 || res.status === 403 ? 'UNLEASH_UNAUTHORIZED'
        : res.status === 404 ? 'UNLEASH_NOT_FOUND'
          : res.status === 409 ? 'UNLEASH_CONFLICT'
            : res.status === 400 ? 'UNLEASH_REJECTED'
              : 'UNLEASH_BAD_RESPONSE';
    const hint =
      code === 'UNLEASH_UNAUTHORIZED' ? (this.#token ? '; check flags.adminToken: it must be an admin token (*:*.…) or a personal access token, not a backend token' : '; flags.adminToken is not set')
        : '';
    // A 404 is often the expected answer (findFeature before creating a flag); the caller decides, the thrown error says it.
    this.#log[res.status === 404 ? 'debug' : 'warn']({ method, path, status: res.status, ms, reason }, FLAGS_LOG.adminCallFailed);
    throw new StranglerError(code, `Unleash ${method} ${path}: HTTP ${res.status}${reason ? ` ${reason}` : ''}${hint}`, { details: { method, path, status: res.status } });
  }
}

/** "NotFoundError: Could not find feature …" from Unleash's error body, or the first bytes of an unknown body. */
function unleashReason(text: string): string {
  if (!text) return '';
  try {
    const body = JSON.parse(text) as { name?: string; message?: string; details?: { message?: string }[] };
    const detail = body.details?.[0]?.message;
    const message = body.message ?? detail ?? '';
    return `${body.name ?? 'Error'}: ${message}${detail && detail !== message ? ` (${detail})` : ''}`;
  } catch {
    return text.slice(0, 200);
  }
}

function describeNetworkError(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? messageOf(err);
}
