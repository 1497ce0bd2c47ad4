/**
 * The one schema of strangler's config file. It gives the TypeScript types (`StranglerConfig`), the validator and
 * every default; `npm run docs` turns it into the published JSON Schema and the README's config reference.
 * Units are in the names (`timeoutMs`, `maxReplayBodyBytes`). Cross-references (route → upstream, route → policy)
 * are checked in load.ts after the shape is valid.
 */
import { z } from 'zod';
import { kafkaConfigSchema, syncConfigSchema } from '../../migration-scripts/config-schema.ts';
import { tlsClientSchema } from '../../common/tls.ts';

const id = z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9._-]*$/, 'letters, digits, ".", "_" or "-", starting with a letter or digit').describe('Identifier used to join sections.');
const ms = z.number().int().nonnegative();
const httpUrl = z.string().regex(/^https?:\/\/[^\s/]+(\/.*)?$/, 'an http:// or https:// URL');
/**
 * A URL strangler calls with fetch (Unleash, a gateway's admin API): fetch refuses credentials in a URL and its error
 * repeats the URL, password included, into logs and CLI output; these services take a token instead.
 */
const fetchUrl = z.string().regex(/^https?:\/\/[^\s/@]+(\/.*)?$/, 'an http:// or https:// URL without user:password@ (give the token in its own field)');
const HTTP_METHODS = ['GET', 'HEAD', 'OPTIONS', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

export const upstreamSchema = z.object({
  id,
  url: httpUrl.describe('Base URL of the upstream. Requests keep their path; a path here is prepended.'),
  connectTimeoutMs: ms.default(1_000).describe('Time allowed to open a connection.'),
  timeoutMs: ms.default(15_000).describe('Time allowed until response headers arrive, counted from when the request (its body included) has been sent.'),
  healthPath: z.string().startsWith('/').default('/healthz').describe('Path probed by GET /admin/upstreams.'),
  maxSockets: z.number().int().positive().default(256).describe('Keep-alive agent: maximum concurrent sockets to this upstream.'),
  keepAliveMs: ms.default(30_000).describe('Keep-alive agent: idle socket lifetime.'),
  bodyIdleTimeoutMs: ms.default(300_000).describe('Time allowed between two reads of an answer\'s body once its headers have arrived, while the client keeps up (nginx\'s proxy_read_timeout, Envoy\'s stream idle timeout): past it the upstream connection is closed and the client\'s response cut (logged as UPSTREAM_TIMEOUT). 0 = no limit, for long-lived streams without heartbeats.'),
  preserveHost: z.boolean().default(false).describe('Send the client\'s Host header to this upstream instead of the upstream\'s own host, for applications that route or build absolute URLs by Host (e.g. a tenant per subdomain). X-Forwarded-Host carries the client\'s Host either way; TLS still verifies the upstream\'s own host name.'),
  tls: tlsClientSchema.optional().describe('TLS to an https:// upstream: CA, client certificate (mutual TLS), SNI name. Omitted = verified against the system CAs. The PEM files are read when the gateway starts and on every reload.'),
}).strict();

export const matchSchema = z.object({
  pathPrefix: z.string().startsWith('/').optional().describe('Matches this path and everything below it, on segment boundaries.'),
  pattern: z.string().startsWith('/').optional().describe('Path pattern: literal segments, ":name" for one segment, a trailing "*" for the rest.'),
  methods: z.array(z.enum(HTTP_METHODS)).min(1).optional().describe('Methods this route takes; all when omitted. GET includes HEAD.'),
  host: z.string().min(1).optional().describe('Host header (without port) this route requires; any when omitted.'),
}).strict();

export const userKeySchema = z.union([
  z.object({ header: z.string().min(1) }).strict(),
  z.object({ cookie: z.string().min(1) }).strict(),
  z.object({ jwtClaim: z.string().min(1), header: z.string().min(1).default('authorization') }).strict(),
]).describe('Where a user id is read from: a header, a cookie, or a claim of a JWT (read without verification).');

export const flagRefSchema = z.object({
  name: z.string().regex(/^[a-zA-Z0-9._~-]+$/).optional().describe('Unleash flag name; default strangler.<route id>.'),
  project: z.string().optional().describe('Unleash project; default flags.project.'),
  environment: z.string().optional().describe('Unleash environment; must be flags.environment (the one the gateway reads) if given.'),
  // Only what flags/context.ts honours: every request carries userId (identified) or sessionId (anonymous).
  stickiness: z.enum(['default'], { error: 'the gateway gives Unleash a userId for identified users and a sessionId for anonymous ones, and only "default" (userId, else sessionId) puts both in the rollout: "userId" would keep every anonymous user on legacy, "sessionId" every identified one, a custom field everyone, and "random" would move a user between legacy and the service from one request to the next. Remove the field; what identifies a user is set by identity.userKey or routes[].userKey' }).default('default').describe('flexibleRollout stickiness; only "default" (userId, else sessionId), the key the gateway gives every request.'),
  groupId: z.string().optional().describe('flexibleRollout groupId; default the flag name. Changing it reshuffles every user.'),
  initialPercent: z.number().int().min(0).max(100).default(0).describe('Rollout created by `strangler flags sync` for a new flag.'),
}).strict();

export const guardSchema = z.object({
  enabled: z.boolean().default(true),
  windowMs: ms.default(60_000).describe('Sliding window compared between service and legacy.'),
  minRequests: z.number().int().nonnegative().default(50).describe('Service requests needed in the window before any verdict.'),
  maxErrorRateIncrease: z.number().min(0).max(1).default(0.05).describe('Allowed service error rate minus legacy error rate (0.05 = 5 points).'),
  maxP99Ratio: z.number().positive().default(2).describe('Allowed service p99 / legacy p99.'),
  maxFallbacks: z.number().int().nonnegative().default(10).describe('Fallbacks to legacy allowed in the window (each is a service failure).'),
  maxBreakerOpens: z.number().int().nonnegative().default(0).describe('Breaker openings allowed in the window.'),
  action: z.enum(['rollback', 'alert', 'pause']).default('rollback').describe('What a breach does.'),
}).strict();

export const planSchema = z.object({
  steps: z.array(z.number().int().min(0).max(100)).min(1)
    .refine((s) => s.every((p, i) => i === 0 || p > s[i - 1]!), { message: 'strictly increasing percentages such as [1, 5, 25, 50, 100] (the controller only ever moves a route up)' })
    .default([1, 5, 25, 50, 100]).describe('Rollout percentages, in order.'),
  holdMs: ms.default(60_000).describe('Time each step must stay healthy before the next.'),
}).strict();

export const routeSchema = z.object({
  id,
  match: matchSchema,
  legacy: id.describe('Upstream id of the legacy side (fallback target).'),
  service: id.optional().describe('Upstream id of the extracted service; omit for a legacy-only route (e.g. a catch-all).'),
  flag: flagRefSchema.default({ stickiness: 'default', initialPercent: 0 }),
  userKey: z.array(userKeySchema).optional().describe('Overrides identity.userKey for this route.'),
  breaker: id.default('default').describe('Name of a policies.breakers entry.'),
  fallback: id.default('default').describe('Name of a policies.fallbacks entry.'),
  idempotent: z.boolean().default(false).describe('Declares this route\'s writes (POST, PATCH) safe to replay on legacy after a service failure.'),
  guard: guardSchema.optional(),
  plan: planSchema.optional(),
}).strict();

export const breakerPolicySchema = z.object({
  timeoutMs: ms.default(10_000).describe('A service call slower than this counts as a failure (and answers 504 if it cannot fall back).'),
  errorThresholdPercentage: z.number().min(1).max(100).default(50).describe('Failure percentage in the rolling window that opens the breaker.'),
  volumeThreshold: z.number().int().nonnegative().default(20).describe('Calls in the rolling window before the breaker may open.'),
  resetTimeoutMs: ms.default(10_000).describe('Time open before a half-open trial call.'),
  rollingCountTimeoutMs: ms.default(10_000).describe('Length of the rolling statistics window.'),
  rollingCountBuckets: z.number().int().positive().default(10),
}).strict();

export const fallbackPolicySchema = z.object({
  enabled: z.boolean().default(true).describe('Fall back to legacy when the service fails before answering.'),
  maxReplayBodyBytes: z.number().int().nonnegative().default(1_048_576).describe('Bodies up to this size are buffered so the request can be replayed on legacy.'),
  onBodyTooLarge: z.enum(['forward', 'reject']).default('forward').describe('"forward": stream to the service without fallback; "reject": answer 413.'),
}).strict();

const DEFAULT_BREAKER = breakerPolicySchema.parse({});
const DEFAULT_FALLBACK = fallbackPolicySchema.parse({});

export const policiesSchema = z.object({
  breakers: z.record(z.string(), breakerPolicySchema).default({ default: DEFAULT_BREAKER }),
  fallbacks: z.record(z.string(), fallbackPolicySchema).default({ default: DEFAULT_FALLBACK }),
}).strict();

export const gatewayRefSchema = z.object({
  url: fetchUrl.describe('A gateway control plane, e.g. http://10.0.0.5:9901.'),
  token: z.string().nullable().default(null),
}).strict();

export const flagsSchema = z.object({
  url: fetchUrl.nullable().default(null).describe('Unleash client API base, e.g. http://127.0.0.1:4242/api/. null = offline (bootstrapFile only).'),
  token: z.string().nullable().default(null).describe('Unleash backend token the gateway polls with (no "Bearer").'),
  adminUrl: fetchUrl.nullable().default(null).describe('Unleash base URL for the Admin API; default url without /api/.'),
  adminToken: z.string().nullable().default(null).describe('Admin token or personal access token for sync, shift, rollback and the controller.'),
  project: z.string().default('default'),
  environment: z.string().default('development').describe('Environment the flags live in; must match the backend token\'s environment.'),
  appName: z.string().min(1).regex(/^(?!\.\.?$)[^/\\]+$/, { error: 'an application name without / or \\ (it names the flag backup files in backupPath), e.g. "orders-gateway"' }).default('strangler-gateway').describe('Unleash application name; also names the backup files in backupPath.'),
  instanceId: z.string().nullable().default(null).describe('Shown in Unleash\'s applications view; default hostname-pid.'),
  refreshIntervalMs: ms.default(1_000).describe('Poll interval. Pushes to POST /admin/flags/refresh make changes arrive sooner.'),
  requestTimeoutMs: ms.default(5_000),
  backupPath: z.string().nullable().default('.data/flags').describe('Folder for the last good flag set, used when Unleash is unreachable at start.'),
  bootstrapFile: z.string().nullable().default(null).describe('A /api/client/features JSON file used at start when there is no backup (and always offline, when url is null).'),
  disableMetrics: z.boolean().default(false),
  gateways: z.array(gatewayRefSchema).default([]).describe('Control planes that shift/rollback push a refresh to.'),
}).strict();

export const identitySchema = z.object({
  userKey: z.array(userKeySchema).default([{ header: 'x-user-id' }]).describe('Sources of a user id, tried in order.'),
  sessionCookie: z.string().default('strangler_sid').describe('Cookie holding the signed session id used when no user id is found.'),
  sessionSecret: z.string().min(16).nullable().default(null).describe('HMAC key for session cookies; null = random per process (sessions then do not survive restarts or span gateways).'),
  previousSessionSecrets: z.array(z.string().min(16)).default([]).describe('Earlier sessionSecret values, still accepted: a session signed with one keeps its id (and its bucket) and gets its cookie re-signed with sessionSecret. Rotate by moving the old key here; drop it after sessionMaxAgeS.'),
  sessionMaxAgeS: z.number().int().positive().default(30 * 24 * 3600),
  override: z.object({
    header: z.string().default('x-strangler-override'),
    cookie: z.string().default('strangler_override'),
    secret: z.string().min(16).nullable().default(null).describe('HMAC key for tester overrides; null disables overrides.'),
  }).strict().default({ header: 'x-strangler-override', cookie: 'strangler_override', secret: null }),
}).strict();

export const proxySchema = z.object({
  bind: z.string().default('0.0.0.0'),
  port: z.number().int().min(0).max(65535).default(8080),
  workers: z.number().int().positive().default(1).describe('Processes serving the data plane (node:cluster).'),
  workerHangTimeoutMs: ms.default(15_000).describe('With workers > 1: a data-plane worker whose event loop has not answered the primary\'s liveness check (over IPC) for this long is killed (SIGKILL) and replaced, as if it had crashed; a replacement not listening within flags.requestTimeoutMs plus this long is killed and retried too. 0 disables both.'),
  workersDownLivenessMs: ms.default(60_000).describe('With workers > 1: GET /healthz answers 503 once no data-plane worker has been serving for this long (every replacement failing to start), so the orchestrator restarts the pod. Replacements are retried meanwhile, 1 s doubling to 30 s apart. 0 disables.'),
  maxHeaderBytes: z.number().int().positive().default(16_384).describe('Requests with larger headers get 431.'),
  headersTimeoutMs: ms.default(20_000),
  requestTimeoutMs: ms.default(300_000),
  drainTimeoutMs: ms.default(10_000).describe('On SIGTERM, in-flight requests (proxy and admin API) and open WebSockets get this long to finish.'),
  responseHeaders: z.boolean().default(true).describe('Add x-strangler-route, x-strangler-target and x-strangler-fallback to responses.'),
  logSampleRate: z.number().min(0).max(1).default(1).describe('Share of successful requests logged (errors and fallbacks always are).'),
  trustForwardedHeaders: z.boolean().default(false).describe('Append to an incoming X-Forwarded-For instead of replacing it, and pass the client\'s X-Forwarded-Proto/Host, Forwarded and X-Real-IP through (otherwise they are replaced or dropped).'),
}).strict();

export const adminSchema = z.object({
  bind: z.string().default('127.0.0.1').describe('Control plane address; a non-loopback address requires a token.'),
  port: z.number().int().min(0).max(65535).default(9901),
  token: z.string().min(16).regex(/^\S+$/, { error: 'a token without spaces or line breaks (it travels as "Authorization: Bearer <token>"), e.g. from `openssl rand -hex 24`' }).nullable().default(null).describe('Bearer token for /admin/*, /metrics and the dashboard.'),
  statsWindowMs: ms.default(60_000).describe('Window of the per-target stats shown by GET /admin/routes.'),
}).strict();

export const controllerSchema = z.object({
  databaseUrl: z.string().nullable().default(null).describe('PostgreSQL for durable plan state and the leader lock.'),
  stateFile: z.string().nullable().default('.data/controller.json').describe('State file used when databaseUrl is null (single controller only).'),
  intervalMs: ms.default(1_000),
}).strict();

export const logSchema = z.object({
  level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  buffer: z.boolean().default(true).describe('Write log lines to stdout from a log thread (at most 25 ms late; flushed on a clean stop and at exit): the request path hands the thread the fields of its request line and the thread makes the text, which was the largest cost the gateway added to a proxied request. false writes with the default pino destination on the event loop.'),
}).strict();

export const configSchema = z.object({
  $schema: z.string().optional(),
  upstreams: z.array(upstreamSchema).default([]).describe('Where routes send traffic; the gateway never connects anywhere else. A file only for the sync roles may leave it out.'),
  routes: z.array(routeSchema).default([]),
  policies: policiesSchema.default({ breakers: { default: DEFAULT_BREAKER }, fallbacks: { default: DEFAULT_FALLBACK } }),
  flags: flagsSchema.default(flagsSchema.parse({})),
  identity: identitySchema.default(identitySchema.parse({})),
  proxy: proxySchema.default(proxySchema.parse({})),
  admin: adminSchema.default(adminSchema.parse({})),
  controller: controllerSchema.default(controllerSchema.parse({})),
  log: logSchema.default(logSchema.parse({})),
  kafka: kafkaConfigSchema.optional().describe('Kafka connection for the data sync (migration-scripts/README.md).'),
  sync: syncConfigSchema.optional().describe('Data sync: databases, tables and mappings (migration-scripts/README.md).'),
}).strict();

export type StranglerConfig = z.output<typeof configSchema>;
export type UpstreamConfig = z.output<typeof upstreamSchema>;
export type RouteConfig = z.output<typeof routeSchema>;
export type MatchConfig = z.output<typeof matchSchema>;
export type UserKeySource = z.output<typeof userKeySchema>;
export type BreakerPolicy = z.output<typeof breakerPolicySchema>;
export type FallbackPolicy = z.output<typeof fallbackPolicySchema>;
export type FlagsConfig = z.output<typeof flagsSchema>;
export type IdentityConfig = z.output<typeof identitySchema>;
export type GuardConfig = z.output<typeof guardSchema>;
export type PlanConfig = z.output<typeof planSchema>;
export type HttpMethod = (typeof HTTP_METHODS)[number];
export { HTTP_METHODS };
