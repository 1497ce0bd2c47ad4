/**
 * Reading a config file: parse (YAML or JSON) → interpolate ${ENV} → validate the shape → check cross-references →
 * fill derived defaults → freeze. Every problem is collected and reported together, each with its path, what was
 * expected, what was found and a hint, so one run of the validator is enough to fix a file.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { StranglerError } from '../../common/errors.ts';
import { configSchema, type RouteConfig, type StranglerConfig } from './schema.ts';
import { compilePattern } from '../routing/route-table.ts';

export interface ConfigProblem {
  /** Dotted path into the file, e.g. `routes[0].legacy`. */
  path: string;
  expected: string;
  found: string;
  hint: string;
}

/** Config fields that hold a secret, by name (`admin.token`, `identity.previousSessionSecrets[1]`, `kafka.sasl.password`). */
export const SECRET_FIELD = /(token|secrets?|password)$/i;

/**
 * Credentials inside a URL (any scheme: postgres://, an Unleash or upstream URL with basic auth): the password of
 * user:password@ (the userinfo ends at the authority's last "@", as URL parsers read it) and query parameters named
 * like a secret (postgres' ?password=).
 */
export function redactUrl(value: string): string {
  return value
    .replace(/^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)@/i, (_m, scheme: string, userinfo: string) => `${scheme}${userinfo.includes(':') ? `${userinfo.slice(0, userinfo.indexOf(':'))}:[redacted]` : userinfo}@`)
    .replace(/([?&][^=&#]*(?:password|passwd|secret|token)[^=&#]*=)[^&#]*/gi, '$1[redacted]');
}

/**
 * A problem as it may be shown: a secret's value never goes into a message, whatever its type (a string of the wrong
 * shape, a single string where a list was expected, a number YAML read from an all-digit token). A URL's password is
 * left out where the value is described (describeFound).
 */
function withoutSecrets(p: ConfigProblem): ConfigProblem {
  const field = p.path.replace(/(\[\d+\])+$/, '');
  const type = /^(string|number|boolean) /.exec(p.found)?.[1];
  if (SECRET_FIELD.test(field) && type !== undefined) return { ...p, found: `a ${type} (not shown: a secret)` };
  // A URL too malformed for redactUrl ("postgres//user:pw@host", a scheme typo) may still carry user:password@:
  // everything up to its last "@" is left out.
  if (/url$/i.test(field) && type === 'string' && p.found.includes('@') && !p.found.includes(':[redacted]@')) return { ...p, found: p.found.replace(/^string "[^"]*@/, 'string "[redacted]@') };
  return p;
}

export class ConfigError extends StranglerError {
  readonly file: string;
  readonly problems: readonly ConfigProblem[];
  constructor(file: string, problems: ConfigProblem[], code: 'CONFIG_INVALID' | 'CONFIG_UNREADABLE' = 'CONFIG_INVALID') {
    // A secret's value never goes into the message: it is logged (config.reload_failed) and shown by GET /admin/config.
    problems = problems.map(withoutSecrets);
    const lines = problems.map((p) => `  - ${p.path || '(root)'}: expected ${p.expected}, found ${p.found}${p.hint ? `. Hint: ${p.hint}` : ''}`);
    super(code, `${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n${lines.join('\n')}`, { details: { file, problems } });
    this.file = file;
    this.problems = problems;
  }
}

export interface ResolvedFlagRef {
  name: string;
  project: string;
  environment: string;
  stickiness: string;
  groupId: string;
  initialPercent: number;
}

export type LoadedRoute = Omit<RouteConfig, 'flag'> & { flag: ResolvedFlagRef };
export type LoadedConfig = Readonly<Omit<StranglerConfig, 'routes'> & { routes: LoadedRoute[]; source: string }>;

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  return parseConfigText(readConfigText(file), file, env);
}

/** The text of a config file, for parseConfigText (the cluster primary hands the text it validated to its workers). */
export function readConfigText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [{ path: '', expected: 'a readable file', found: (err as NodeJS.ErrnoException).code ?? String(err), hint: 'check the --config path' }], 'CONFIG_UNREADABLE');
  }
}

export function parseConfigText(text: string, file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  let raw: unknown;
  if (file.endsWith('.json')) {
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new ConfigError(file, [{ path: '', expected: 'valid JSON', found: (err as Error).message, hint: 'fix the syntax at the position shown' }], 'CONFIG_UNREADABLE');
    }
  } else {
    const doc = parseDocument(text, { prettyErrors: true });
    if (doc.errors.length > 0) {
      throw new ConfigError(file, doc.errors.slice(0, 1).map((e) => ({ path: '', expected: 'valid YAML', found: e.message.split('\n')[0] ?? e.message, hint: `line ${e.linePos?.[0]?.line ?? '?'}` })), 'CONFIG_UNREADABLE');
    }
    raw = doc.toJS();
  }
  return validateConfig(raw, file, env);
}

/** Validates an already-parsed config object (used by tests and by the admin API's dry-run). */
export function validateConfig(raw: unknown, file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const problems: ConfigProblem[] = [];
  const interpolated = interpolate(raw, '', env, problems);
  const parsed = configSchema.safeParse(interpolated, { reportInput: true });
  if (!parsed.success) {
    problems.push(...parsed.error.issues.flatMap((issue) => issueToProblems(issue, [])));
    // Cross-references are checked too, on whatever parts have the right types, so one run lists everything.
    const shapePaths = new Set(problems.map((p) => p.path));
    const refs: ConfigProblem[] = [];
    checkReferences(lenientView(interpolated), refs);
    problems.push(...refs.filter((p) => !shapePaths.has(p.path)));
    throw new ConfigError(file, problems);
  }
  if (problems.length > 0) throw new ConfigError(file, problems);
  const config = parsed.data;
  checkReferences(config, problems);
  checkFlagEnvironments(config, problems);
  if (problems.length > 0) throw new ConfigError(file, problems);
  return deepFreeze({ ...config, routes: config.routes.map((r) => resolveRoute(r, config)), source: file });
}

function resolveRoute(route: RouteConfig, config: StranglerConfig): LoadedRoute {
  const name = route.flag.name ?? `strangler.${route.id}`;
  return {
    ...route,
    flag: {
      name,
      project: route.flag.project ?? config.flags.project,
      environment: route.flag.environment ?? config.flags.environment,
      stickiness: route.flag.stickiness,
      groupId: route.flag.groupId ?? name,
      initialPercent: route.flag.initialPercent,
    },
  };
}

/**
 * A route's flag must live in the environment the gateway reads: its SDK sees only flags.token's environment, which
 * must be flags.environment, so a shift or rollback written to another one would never reach the route.
 */
function checkFlagEnvironments(config: StranglerConfig, problems: ConfigProblem[]): void {
  config.routes.forEach((r, i) => {
    const env = r.flag.environment;
    if (env !== undefined && env !== config.flags.environment) {
      problems.push({ path: `routes[${i}].flag.environment`, expected: `flags.environment ("${config.flags.environment}") or omitted`, found: JSON.stringify(env), hint: 'a gateway reads one Unleash environment (its backend token\'s, set as flags.environment); run one gateway config per environment' });
    }
  });
}

/** The subset of a config that checkReferences reads, keeping only fields that have the right types. */
type ReferenceView = Pick<StranglerConfig, 'upstreams' | 'routes' | 'policies' | 'admin'>;

function lenientView(raw: unknown): ReferenceView {
  const obj = (v: unknown): Record<string, unknown> => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {});
  const str = (v: unknown, fallback?: string) => (typeof v === 'string' ? v : fallback);
  const list = (v: unknown) => (Array.isArray(v) ? v.map(obj) : []);
  const root = obj(raw);
  const policies = obj(root.policies);
  const admin = obj(root.admin);
  return {
    upstreams: list(root.upstreams).map((u) => ({ id: str(u.id, ''), url: str(u.url), tls: u.tls })),
    routes: list(root.routes).map((r) => {
      const match = obj(r.match);
      return {
        id: str(r.id, ''),
        match: { pathPrefix: str(match.pathPrefix), pattern: str(match.pattern) },
        legacy: str(r.legacy),
        service: str(r.service),
        breaker: str(r.breaker, 'default'),
        fallback: str(r.fallback, 'default'),
        flag: { name: str(obj(r.flag).name) },
      };
    }),
    policies: { breakers: root.policies === undefined ? { default: {} } : obj(policies.breakers), fallbacks: root.policies === undefined ? { default: {} } : obj(policies.fallbacks) },
    admin: { bind: str(admin.bind, '127.0.0.1'), token: str(admin.token) ?? null },
  } as unknown as ReferenceView;
}

function checkReferences(config: ReferenceView, problems: ConfigProblem[]): void {
  const upstreamIds = new Set<string>();
  config.upstreams.forEach((u, i) => {
    if (u.tls !== undefined && u.url?.startsWith('http://')) problems.push({ path: `upstreams[${i}].tls`, expected: 'tls only on an https:// upstream', found: `url ${JSON.stringify(redactUrl(u.url ?? ''))}`, hint: 'make the url https:// or remove tls' });
    if (upstreamIds.has(u.id)) problems.push({ path: `upstreams[${i}].id`, expected: 'a unique upstream id', found: JSON.stringify(u.id), hint: 'each upstream id may appear once' });
    upstreamIds.add(u.id);
  });
  const known = (set: Iterable<string>) => `known: ${[...set].join(', ') || '(none)'}`;
  const routeIds = new Set<string>();
  const flagNames = new Map<string, string>();
  const breakerOwner = new Map<string, { route: string; policy: string }>();
  config.routes.forEach((r, i) => {
    const at = `routes[${i}]`;
    if (routeIds.has(r.id)) problems.push({ path: `${at}.id`, expected: 'a unique route id', found: JSON.stringify(r.id), hint: 'each route id may appear once' });
    routeIds.add(r.id);
    for (const side of ['legacy', 'service'] as const) {
      const ref = r[side];
      if (side === 'legacy' && ref === undefined) continue; // reported by the shape check
      if (ref !== undefined && !upstreamIds.has(ref)) problems.push({ path: `${at}.${side}`, expected: 'an id from upstreams', found: JSON.stringify(ref), hint: known(upstreamIds) });
    }
    if (r.service === undefined) {
      // legacy-only routes never call a service, so breaker and fallback policies do not apply
    } else if (r.legacy === r.service) problems.push({ path: `${at}.service`, expected: 'an upstream other than legacy', found: JSON.stringify(r.service), hint: 'a route moves traffic between two different upstreams' });
    if (r.service !== undefined && !(r.breaker in config.policies.breakers)) problems.push({ path: `${at}.breaker`, expected: 'a name from policies.breakers', found: JSON.stringify(r.breaker), hint: known(Object.keys(config.policies.breakers)) });
    if (r.service !== undefined && !(r.fallback in config.policies.fallbacks)) problems.push({ path: `${at}.fallback`, expected: 'a name from policies.fallbacks', found: JSON.stringify(r.fallback), hint: known(Object.keys(config.policies.fallbacks)) });
    const hasPrefix = r.match.pathPrefix !== undefined;
    const hasPattern = r.match.pattern !== undefined;
    if (hasPrefix === hasPattern) {
      problems.push({ path: `${at}.match`, expected: 'exactly one of pathPrefix or pattern', found: hasPrefix ? 'both' : 'neither', hint: 'use pathPrefix: /api/orders for a subtree, pattern: /api/orders/:id for a shape' });
    }
    if (hasPattern) {
      try {
        compilePattern(r.match.pattern as string);
      } catch (err) {
        problems.push({ path: `${at}.match.pattern`, expected: 'a valid path pattern', found: JSON.stringify(r.match.pattern), hint: (err as Error).message });
      }
    }
    if (r.service !== undefined) {
      const owner = breakerOwner.get(r.service);
      if (owner && owner.policy !== r.breaker) {
        problems.push({ path: `${at}.breaker`, expected: `the same breaker policy as route "${owner.route}" ("${owner.policy}")`, found: JSON.stringify(r.breaker), hint: `there is one breaker per service upstream ("${r.service}"); routes sharing it must share its policy` });
      } else breakerOwner.set(r.service, { route: r.id, policy: r.breaker });
    }
    const flagName = r.flag.name ?? `strangler.${r.id}`;
    const other = flagNames.get(flagName);
    if (other !== undefined) problems.push({ path: `${at}.flag.name`, expected: 'a flag name not used by another route', found: JSON.stringify(flagName), hint: `route "${other}" already uses it` });
    flagNames.set(flagName, r.id);
  });
  const adminLoopback = isLoopback(config.admin.bind);
  if (!adminLoopback && !config.admin.token) {
    problems.push({ path: 'admin.token', expected: 'a token of 16+ characters when admin.bind is not a loopback address', found: 'null', hint: `admin.bind is ${config.admin.bind}; set admin.token (e.g. \${STRANGLER_ADMIN_TOKEN}) or bind 127.0.0.1` });
  }
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

const NUMERIC_FIELD = /(port|Ms|Bytes|workers|Percent|S)$/;

/** Replaces ${NAME} and ${NAME:-default} in every string; a missing variable without default is a problem. */
function interpolate(value: unknown, path: string, env: NodeJS.ProcessEnv, problems: ConfigProblem[]): unknown {
  if (typeof value === 'string') {
    const whole = /^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}$/.exec(value);
    const replace = (name: string, fallback: string | undefined): string => {
      const v = env[name];
      if (v !== undefined && v !== '') return v;
      if (fallback !== undefined) return fallback;
      problems.push({ path, expected: `environment variable ${name} to be set`, found: 'unset', hint: `export ${name}=… or write \${${name}:-default}` });
      return '';
    };
    if (whole) {
      const [, name = '', fallback] = whole;
      const v = env[name];
      // A whole-value "${X:-null}" with X unset yields null, so optional secrets can be left out.
      if ((v === undefined || v === '') && fallback === 'null') return null;
      const out = replace(name, fallback);
      // Environment values are strings; numeric fields (ports, *Ms, *Bytes, workers) take them as numbers.
      return NUMERIC_FIELD.test(path) && /^\d+$/.test(out) ? Number(out) : out;
    }
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_m, name: string, fallback: string | undefined) => replace(name, fallback));
  }
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, `${path}[${i}]`, env, problems));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, path ? `${path}.${k}` : k, env, problems)]));
  }
  return value;
}

function formatPath(segments: readonly PropertyKey[]): string {
  let out = '';
  for (const s of segments) out += typeof s === 'number' ? `[${s}]` : out ? `.${String(s)}` : String(s);
  return out;
}

function describeFound(input: unknown): string {
  if (input === undefined) return 'nothing (missing)';
  if (input === null) return 'null';
  if (Array.isArray(input)) return `an array of ${input.length}`;
  if (typeof input === 'object') return 'an object';
  const s = JSON.stringify(typeof input === 'string' ? redactUrl(input) : input);
  return `${typeof input} ${s.length > 60 ? `${s.slice(0, 57)}...` : s}`;
}

type Issue = z.core.$ZodIssue;

/** Problems for one zod issue; `prefix` is the path of the union a nested issue came from. */
function issueToProblems(issue: Issue, prefix: PropertyKey[]): ConfigProblem[] {
  if (issue.code !== 'invalid_union') return [issueToProblem(issue, prefix)];
  const at = [...prefix, ...issue.path];
  const input = (issue as { input?: unknown }).input;
  const branches = issue.errors;
  // An object meant for one of several object shapes: report the problems of the shape it comes closest to
  // (fewest problems) instead of "not any of them".
  if (input !== null && typeof input === 'object' && !Array.isArray(input)) {
    const objectShapes = branches.filter((b) => !b.some((i) => i.path.length === 0 && i.code === 'invalid_type'));
    const closest = objectShapes.sort((a, b) => a.length - b.length)[0];
    if (closest && closest.length > 0) return closest.flatMap((i) => issueToProblems(i, at));
  }
  const types = [...new Set(branches.flatMap((b) => b.filter((i) => i.path.length === 0 && i.code === 'invalid_type').map((i) => (i as { expected: string }).expected)))];
  const isUserKey = at[at.length - 2] === 'userKey' || at[at.length - 1] === 'userKey';
  return [{
    path: formatPath(at),
    expected: types.length > 1 ? `one of: ${types.join(', ')}` : 'one of the allowed shapes',
    found: describeFound(input),
    hint: isUserKey ? 'e.g. { header: x-user-id }, { cookie: uid } or { jwtClaim: sub }' : 'see this field in the config reference (README) or the JSON Schema',
  }];
}

function issueToProblem(issue: Issue, prefix: PropertyKey[] = []): ConfigProblem {
  const path = formatPath([...prefix, ...issue.path]);
  const input = (issue as { input?: unknown }).input;
  switch (issue.code) {
    case 'invalid_type':
      return { path, expected: issue.expected, found: describeFound(input), hint: input === undefined ? 'this field is required' : `use a ${issue.expected}` };
    case 'unrecognized_keys':
      return { path, expected: 'only known fields', found: `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`, hint: 'check the spelling against the config reference (README) or the JSON Schema' };
    case 'invalid_value':
      return { path, expected: `one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`, found: describeFound(input), hint: /^Invalid (input|option)\b/.test(issue.message) ? 'values are case-sensitive' : issue.message }; // a schema's own error message is the hint
    case 'too_small':
    case 'too_big':
      return { path, expected: issue.message.replace(/^Too (small|big): expected /, ''), found: describeFound(input), hint: 'adjust the value to the allowed range' };
    case 'invalid_format':
      return { path, expected: issue.format === 'regex' ? issue.message.replace(/^Invalid string: /, '') : issue.format, found: describeFound(input), hint: issue.format === 'starts_with' ? 'paths start with "/"' : 'see the config reference' };
    default:
      return { path, expected: issue.message, found: describeFound(input), hint: 'see the config reference' };
  }
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
