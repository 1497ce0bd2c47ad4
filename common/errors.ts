/**
 * Every error strangler raises or returns carries a stable code from this one catalogue.
 * Codes are never reused: a retired code moves to RETIRED_CODES and stays there.
 * README.md's error table is generated from ERROR_CATALOGUE (`npm run docs`); a test keeps them in sync.
 */

export interface ErrorSpec {
  /** HTTP status when the error is answered to a client (data plane or admin API). */
  readonly status: number;
  /** Whether repeating the same operation later can succeed. */
  readonly retriable: boolean;
  /** One line for the docs: what happened and what to do. */
  readonly doc: string;
}

export const ERROR_CATALOGUE = {
  // ── config ───────────────────────────────────────────────────────────────
  CONFIG_INVALID: { status: 500, retriable: false, doc: 'The config file failed validation; every problem is listed with its path, what was expected, what was found and a hint.' },
  CONFIG_UNREADABLE: { status: 500, retriable: false, doc: 'The config file could not be read or parsed as YAML/JSON; the message names the file and the parser position.' },
  // ── data plane ───────────────────────────────────────────────────────────
  ROUTE_NOT_FOUND: { status: 404, retriable: false, doc: 'No configured route matches the request (path, method or host). Add a route or check the match rules.' },
  BAD_REQUEST: { status: 400, retriable: false, doc: 'The request was malformed or ambiguous (absolute-form URI to another host, conflicting Content-Length/Transfer-Encoding); it was not forwarded.' },
  UNSUPPORTED_TRANSFER_ENCODING: { status: 501, retriable: false, doc: 'The request\'s Transfer-Encoding was other than exactly "chunked" (e.g. "gzip, chunked"): the gateway decodes only the chunked framing, so the body would reach the upstream still coded but unlabelled. It was not forwarded and the connection is closed; send the body with Content-Encoding instead.' },
  UPSTREAM_CONNECT_FAILED: { status: 502, retriable: true, doc: 'The chosen upstream refused or reset the connection before answering, and the request could not fall back.' },
  UPSTREAM_TIMEOUT: { status: 504, retriable: true, doc: 'The upstream did not send response headers within its timeout, and the request could not fall back.' },
  UPSTREAM_BAD_RESPONSE: { status: 502, retriable: true, doc: 'The upstream answered with a server error, broke the response, or framed it with a Transfer-Encoding other than "chunked" (a body the client could not decode), and the request could not fall back.' },
  BREAKER_OPEN: { status: 503, retriable: true, doc: 'The service\'s circuit breaker is open and the request could not fall back to legacy (fallback disabled for the route).' },
  INTERNAL_ERROR: { status: 500, retriable: true, doc: 'An unexpected gateway error; the log line with the same requestId has the cause. Please report it.' },
  ALL_UPSTREAMS_DOWN: { status: 503, retriable: true, doc: 'The service failed (or its breaker is open) and the legacy fallback failed too.' },
  BODY_TOO_LARGE_TO_REPLAY: { status: 413, retriable: false, doc: 'The route requires a replayable body for fallback and the body exceeded maxReplayBodyBytes. Raise the limit or set fallback.onBodyTooLarge to "forward".' },
  SHUTTING_DOWN: { status: 503, retriable: true, doc: 'The gateway is draining for shutdown; retry against another instance.' },
  // ── control plane ────────────────────────────────────────────────────────
  ADMIN_UNAUTHORIZED: { status: 401, retriable: false, doc: 'The admin API needs `Authorization: Bearer <admin.token>`.' },
  ADMIN_NOT_FOUND: { status: 404, retriable: false, doc: 'The admin resource (route id, upstream id) does not exist.' },
  ADMIN_BAD_REQUEST: { status: 400, retriable: false, doc: 'The admin request body or parameter was invalid; the message says which field and what was expected.' },
  ADMIN_INSECURE_BIND: { status: 500, retriable: false, doc: 'The admin listener was asked to bind a non-loopback address without admin.token; set a token or bind 127.0.0.1. A config file with that mistake is refused earlier, as CONFIG_INVALID at admin.token; this is the listener\'s own guard for configs built in code.' },
  // ── flags / Unleash ──────────────────────────────────────────────────────
  FLAGS_UNAVAILABLE: { status: 503, retriable: true, doc: 'No flag data could be loaded (Unleash unreachable, no backup, no bootstrap); every route goes to legacy and /readyz reports degraded.' },
  FLAGS_UNAUTHORIZED: { status: 502, retriable: false, doc: 'Unleash refused the token (401/403). The SDK stops polling; fix flags.token and restart the gateway (flag-client settings are read at start only).' },
  UNLEASH_UNREACHABLE: { status: 502, retriable: true, doc: 'An Unleash Admin API call could not reach the server (connection refused, DNS, timeout).' },
  UNLEASH_UNAUTHORIZED: { status: 502, retriable: false, doc: 'An Unleash Admin API call was refused (401/403): use an admin token or a personal access token.' },
  UNLEASH_NOT_FOUND: { status: 404, retriable: false, doc: 'The Unleash project, flag, environment or strategy named in the call does not exist.' },
  UNLEASH_CONFLICT: { status: 409, retriable: false, doc: 'Unleash reported a conflict (for example the flag name already exists).' },
  UNLEASH_BAD_RESPONSE: { status: 502, retriable: true, doc: 'Unleash answered with an unexpected status or body.' },
  PERCENT_INVALID: { status: 400, retriable: false, doc: 'A rollout percentage must be an integer from 0 to 100.' },
  // ── data sync (migration-scripts, capture) ───────────────────────────────
  SYNC_MAPPING_INVALID: { status: 500, retriable: false, doc: 'A sync table mapping does not fit the real schema (unknown table or column, key not unique, nullable or unique only through a DEFERRABLE constraint, type that cannot map); every problem is listed and nothing was installed.' },
  SYNC_NOT_INSTALLED: { status: 500, retriable: false, doc: 'The sync state schema or capture triggers are missing on a database; run `strangler sync capture install --config FILE`.' },
  SYNC_RELAY_BUSY: { status: 409, retriable: true, doc: 'Another relay holds the capture lock for this database; only one relay per side runs at a time.' },
  SYNC_KAFKA_FAILED: { status: 502, retriable: true, doc: 'A Kafka produce, fetch or commit failed, or apply could not learn a partition\'s first offset (to check a hole or where to start); the relay or apply worker retries from its stored position.' },
  SYNC_APPLY_FAILED: { status: 500, retriable: true, doc: 'An apply batch could not be committed after retries; nothing of it was stored, it is retried from the stored position.' },
  SYNC_LOGICAL_UNAVAILABLE: { status: 500, retriable: false, doc: 'sync.capture.mode "logical" needs wal_level = logical and a free replication slot on the database server; nothing was installed.' },
  SYNC_UNSUPPORTED: { status: 500, retriable: false, doc: 'The requested sync feature is not supported (for example TRUNCATE on a captured table); the message says what to use instead.' },
  SYNC_SCHEMA_CHANGED: { status: 500, retriable: false, doc: 'Logical capture found a change in its replication slot that no longer fits the table (a column renamed, dropped, or a synced column added after the change was written); decoding stops there instead of capturing a wrong or NULL value. The message names table and column: undo the DDL, let the relay drain the slot, then repeat it with writes stopped and the slot drained.' },
  SYNC_DECODE_FAILED: { status: 500, retriable: false, doc: 'Logical capture found a change in its replication slot it can never decode: the table\'s replica identity is no longer FULL (set back by hand, so updates and deletes were logged without the old row), or its decode function fails on the change (a value that no longer fits the column). The relay stops instead of retrying it forever (every later change waits behind it); transient failures stay retried. The message names side, table, transaction, commit LSN, cause and what to do: usually `strangler sync capture install --side <side>` (sets FULL again and skips the undecodable changes of that table), restart the relay, then verify and `strangler sync repair --from <side>`.' },
  SYNC_CAPTURE_OFF: { status: 500, retriable: false, doc: 'sync status found capture off for a synced table: in trigger mode its capture trigger dropped or disabled by hand (ALTER TABLE … DISABLE TRIGGER, as bulk loads do), so its writes were not captured; in logical mode its replica identity no longer FULL (the relay stops at its next update or delete). The direction is reported broken and the command exits 1. Run `strangler sync capture install --side <side>`, then with lag 0 `strangler sync verify` and `strangler sync repair --from <side>`.' },
  SYNC_DATABASE_UNAVAILABLE: { status: 503, retriable: true, doc: 'A sync command could not connect to or log into a database (refused, unknown host, no answer, password refused, database missing). The message names the config field and URL (password left out) of each side that fails and how; fix the URL or the credentials, or start the server, and run the command again.' },
  SYNC_EVENT_TOO_LARGE: { status: 500, retriable: false, doc: 'A captured change is larger than Kafka accepts (the topic\'s max.message.bytes or the broker\'s message.max.bytes); the relay stops instead of retrying it forever, since every later change waits behind it. The message names table, key, event size and the limit: raise the limit (topic max.message.bytes, and the consumers\' fetch sizes) or exclude the column, then restart the relay.' },
  SYNC_ORIGINS_LEFT: { status: 500, retriable: true, doc: 'Uninstall of logical capture could not drop a sync replication origin (still in use by a running sync process, or no EXECUTE on pg_replication_origin_drop); the message names it; stop sync and run uninstall again.' },
  SYNC_SLOT_LOST: { status: 500, retriable: false, doc: 'Logical capture is installed but its replication slot is gone (dropped, or a failover to a standby without it): changes since the last decoded one were not captured. The relay stops and status reports the direction broken; run `strangler sync capture install --side <side> --accept-gap`, then verify and `strangler sync repair --from <side>` (runbook: docs/deployment.md §9).' },
  SYNC_EVENTS_LOST: { status: 500, retriable: false, doc: 'Apply found events missing from a Kafka partition it had not read yet (the next offset to apply is below the partition\'s first offset: retention or a records deletion removed them, and the consumer was reset past them). Apply stops instead of skipping them, and status reports the direction broken. The message names topic, partition and offsets: accept the gap as it says, then with lag 0 verify and `strangler sync repair --from <source>`.' },
  SYNC_TOPIC_COMPACTED: { status: 500, retriable: false, doc: 'A sync topic already exists with a cleanup.policy containing compact (created before sync, by someone else): compaction drops a key\'s older changes and leaves offset gaps apply cannot tell from lost events, so the relay and apply refuse to start. The message names the topic: recreate it with cleanup.policy=delete (or let sync create it), or point sync.topics.pattern at topics of its own.' },
  SYNC_BACKFILL_INTERRUPTED: { status: 503, retriable: true, doc: 'A backfill stopped part-way (a database restarted or failed over, a chunk kept failing); the message names the table, the rows done and the cause. Every committed chunk stored its cursor: run the same `strangler sync backfill` command again to resume.' },
  SYNC_SLOT_BLOCKED: { status: 409, retriable: true, doc: 'capture install (logical mode) could not create the replication slot within max(sync.capture.lockTimeoutMs, sync.capture.lockRetryMs): PostgreSQL creates a slot only after every transaction holding a transaction id on that server has ended. The message names the open ones (PID, database, application, state, how long, last query); nothing was created. Let them end (or end them with pg_terminate_backend) and run install again.' },
  SYNC_SLOT_IN_USE: { status: 409, retriable: true, doc: 'Uninstall could not drop the logical capture slot because a session still reads it; the message names the PID; stop the sync relay, apply and backfill processes on that database and run uninstall again (nothing was removed).' },
  SYNC_TABLE_LOCKED: { status: 409, retriable: true, doc: 'capture install/uninstall could not lock a synced table within sync.capture.lockRetryMs (each attempt waits at most lockTimeoutMs, so application queries were held up at most that long): another transaction holds it. The message names that session (PID, application, state, transaction start, query); nothing was changed (uninstall in logical mode: the slot was already dropped). Let that transaction end (or end it with pg_terminate_backend) and run the command again.' },
  // ── flags (flags/: sync, traffic, guard, controller) ─────────────────────
  UNLEASH_REJECTED: { status: 400, retriable: false, doc: 'Unleash rejected an Admin API request as invalid (400); the message names the call and Unleash\'s reason.' },
  FLAGS_NOT_CONFIGURED: { status: 500, retriable: false, doc: 'A flags command needs flags.adminUrl (or flags.url) and flags.adminToken in the config; set them (e.g. adminToken: ${UNLEASH_ADMIN_TOKEN}).' },
  FLAG_ROUTE_UNKNOWN: { status: 404, retriable: false, doc: 'The route id is not in the config, or the route has no service and therefore no flag; the message lists the known routes.' },
  FLAG_NOT_SYNCED: { status: 409, retriable: false, doc: 'The route\'s flag or its flexibleRollout strategy does not exist in Unleash yet; run `strangler flags sync` first.' },
  FLAG_DRIFT: { status: 409, retriable: false, doc: 'The flag in Unleash differs from the config (changed by hand); `strangler flags sync` lists the differences and `--fix` reconciles them.' },
  FLAG_ENVIRONMENT_MISSING: { status: 409, retriable: false, doc: 'The route\'s Unleash environment (flags.environment) does not exist or is not enabled in the flag\'s project, so the Admin API can neither read nor change the flag there; add the environment to the project in Unleash, or fix flags.environment.' },
  FLAG_CONFLICT: { status: 409, retriable: true, doc: 'A shift decided on an earlier read (the promotion controller\'s plan step) found the flag changed meanwhile, e.g. rolled back by an operator; nothing was written or pushed (a write that raced the rollback is undone), and the controller decides again from the current state.' },
  CONTROLLER_STATE_CONFLICT: { status: 409, retriable: true, doc: 'Another controller changed the promotion state first (version compare-and-set failed); this controller re-reads and does not advance.' },
  CONTROLLER_STATE_UNREADABLE: { status: 500, retriable: false, doc: 'The controller state file or table could not be read or holds invalid data; the message names it.' },
  // ── CLI ──────────────────────────────────────────────────────────────────
  CLI_USAGE: { status: 400, retriable: false, doc: 'The command line was incomplete or invalid (the CLI exits 2); run the command with --help.' },
  PORT_IN_USE: { status: 500, retriable: false, doc: 'A listener could not bind because the port is taken; the message names the port and the flag or variable that changes it.' },
  POSTGRES_START_FAILED: { status: 500, retriable: false, doc: 'The embedded PostgreSQL of the devstack (`strangler start`, tests) did not start; the message has its data folder and the server\'s own reason, e.g. another running `strangler start` already uses that --data-dir. One left running by a killed earlier run is stopped and replaced automatically.' },
  // ── demo apps (devstack/demo/monolith, services/example-orders) ─────────────
  DEMO_VALIDATION_FAILED: { status: 400, retriable: false, doc: 'A demo orders API request was invalid (body, query or path); the message names the field and what was expected.' },
  DEMO_NOT_FOUND: { status: 404, retriable: false, doc: 'The demo order (or customer) with that id does not exist on the system that answered.' },
  DEMO_CONFLICT: { status: 409, retriable: false, doc: 'The demo order request conflicts with current state: the order id already exists, or the status change is not an allowed transition.' },
  DEMO_ROUTE_NOT_FOUND: { status: 404, retriable: false, doc: 'The demo app has no endpoint for that method and path; see devstack/demo/README.md for the API.' },
  DEMO_INTERNAL_ERROR: { status: 500, retriable: true, doc: 'The demo app failed unexpectedly; its log has the stack under the same request.' },
  DEMO_DATABASE_UNAVAILABLE: { status: 503, retriable: true, doc: 'The demo app could not reach its PostgreSQL database; /healthz reports it too.' },
  // ── Kafka client connection (migration-scripts/kafka.ts) ──────────────────
  KAFKA_DEV_BROKER_OPTIONS_INVALID: { status: 500, retriable: false, doc: 'The dev Kafka broker (devstack/kafka) was given an unusable TLS certificate or key, or an invalid SASL user or mechanism; the message says which.' },
  KAFKA_TLS_FILE_UNREADABLE: { status: 500, retriable: false, doc: 'A PEM file named in kafka.ssl (caFile, certFile, keyFile) is missing or unreadable; the message names the config field and the path.' },
  KAFKA_TLS_CERTIFICATE_REJECTED: { status: 502, retriable: false, doc: 'A TLS certificate check with a Kafka broker failed (its certificate not signed by kafka.ssl.caFile, expired, or for another host name; or it refused our client certificate, kafka.ssl.certFile); not retried. The message names the config field and the TLS error code.' },
  KAFKA_SASL_AUTHENTICATION_FAILED: { status: 502, retriable: false, doc: 'A Kafka broker refused the SASL login (kafka.sasl: wrong user or password, or a mechanism the broker does not enable); not retried. The message names the user, the mechanism and the config fields, with the broker\'s own reason; the password is never shown.' },
  KAFKA_TLS_KEY_MISMATCH: { status: 500, retriable: false, doc: 'kafka.ssl.certFile and kafka.ssl.keyFile are readable but not a usable pair (the key does not belong to the certificate, or a file is not PEM); the message names both paths.' },
} as const satisfies Record<string, ErrorSpec>;

/** Codes that once existed and must never be given a new meaning. */
export const RETIRED_CODES: readonly string[] = [];

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export class StranglerError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly retriable: boolean;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'StranglerError';
    this.code = code;
    const spec: ErrorSpec = ERROR_CATALOGUE[code];
    this.status = spec.status;
    this.retriable = spec.retriable;
    this.details = options.details;
  }

  /** The JSON body used by the data plane and the admin API. */
  toJSON(): { error: { code: ErrorCode; message: string; retriable: boolean; details?: Record<string, unknown> } } {
    return { error: { code: this.code, message: this.message, retriable: this.retriable, ...(this.details ? { details: this.details } : {}) } };
  }
}

export function isStranglerError(err: unknown): err is StranglerError {
  return err instanceof StranglerError;
}

/** A message for any thrown value, without assuming it is an Error. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * `err` and its `cause`s, at most 8 deep, with the fields callers classify them by: kafkajs wraps the socket's error
 * (code, broker) that way, and names its own (name, and type for a broker's error code).
 */
export function* causeChain(err: unknown): Generator<{ readonly name?: unknown; readonly code?: unknown; readonly type?: unknown; readonly broker?: unknown }> {
  for (let e = err, depth = 0; e !== null && typeof e === 'object' && depth < 8; depth++) {
    yield e;
    e = (e as { cause?: unknown }).cause;
  }
}
