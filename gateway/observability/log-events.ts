/**
 * Every log message the gateway writes, with its level, in one place (fastify's log controller, YARP's event ids).
 * Field names are constants so dashboards and alerts can rely on them.
 */
import { levels, symbols } from 'pino';
import type { Logger } from '../../common/logger.ts';

export const F = { reqId: 'reqId', routeId: 'routeId', target: 'target', decision: 'decision', status: 'status', durationMs: 'durationMs' } as const;

type Level = 'debug' | 'info' | 'warn' | 'error';

const EVENTS = {
  'gateway.started': 'info',
  'gateway.stopping': 'info',
  'gateway.stopped': 'info',
  'gateway.drain_timeout': 'warn',
  'gateway.worker_exit': 'warn',
  'gateway.worker_hung': 'error',
  'gateway.worker_restart': 'info',
  'gateway.worker_start_failed': 'error',
  'request.completed': 'info',
  'request.failed': 'warn',
  'request.fallback': 'warn',
  'request.override_rejected': 'warn',
  'request.rejected': 'warn',
  'upstream.stale_connection': 'info',
  'upgrade.routed': 'info',
  'upgrade.failed': 'warn',
  'breaker.open': 'warn',
  'breaker.half_open': 'info',
  'breaker.close': 'info',
  'config.reloaded': 'info',
  'config.reload_failed': 'error',
  'config.restart_required': 'warn',
  'config.ephemeral_session_secret': 'warn',
  'flags.ready': 'info',
  'flags.degraded': 'warn',
  'flags.push': 'info',
  'admin.change': 'info',
  'admin.error': 'error',
  'admin.local_push_failed': 'warn',
  'admin.drain_timeout': 'warn',
} as const satisfies Record<string, Level>;

export type LogEvent = keyof typeof EVENTS;

/** Writes one catalogued event. */
export function logEvent(log: Logger, event: LogEvent, fields: Record<string, unknown> = {}): void {
  log[EVENTS[event]](fields, event);
}

/** The fields of a per-request line, in the order they are written. */
export interface RequestLineFields {
  reqId: string;
  routeId: string;
  target: string;
  decision: string;
  status: number;
  durationMs: number;
  method: string | undefined;
  /** The path without its query string (query strings can carry credentials). */
  path: string;
  fallback: string | null;
  code: string | undefined;
}

/** What the request log reads from a pino logger: its public symbols for bindings, timestamp and destination. */
interface PinoParts {
  levelVal: number;
  [symbols.chindingsSym]: string;
  [symbols.timeSym]: () => string;
  [symbols.streamSym]: { write(line: string): unknown };
}

/** Printable ASCII without `"` or `\\`: the strings JSON writes as they are, between quotes. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** JSON.stringify for a string, without its cost for the usual one that needs no escaping (ids, methods, paths). */
function str(s: string): string {
  return PLAIN.test(s) ? `"${s}"` : JSON.stringify(s);
}

/**
 * The per-request events (`request.completed`, `request.failed`), written as the exact line pino would write for
 * `logEvent(log, event, fields)` (level, time, the logger's bindings, the fields in order, msg) straight to the
 * logger's destination. At one line per request pino's generic path (walking the object, checking each value's
 * type, its serializer and redaction hooks) was about 2.5 µs of the gateway's ~50 µs per request; these fields
 * are fixed and carry no credentials (no headers, no query string), so they are serialised directly.
 * test/unit/gateway/log-events.test.ts holds the two to the same output.
 */
export class RequestLog {
  readonly #log: PinoParts;

  constructor(log: Logger) {
    this.#log = log as unknown as PinoParts;
  }

  write(event: 'request.completed' | 'request.failed', f: RequestLineFields): void {
    const log = this.#log;
    const level = levels.values[EVENTS[event]] as number;
    if (level < log.levelVal) return;
    let line = `{"level":${level}${log[symbols.timeSym]()}${log[symbols.chindingsSym]},"reqId":${str(f.reqId)},"routeId":${str(f.routeId)},"target":${str(f.target)},"decision":${str(f.decision)},"status":${f.status},"durationMs":${Number.isFinite(f.durationMs) ? f.durationMs : null}`;
    if (f.method !== undefined) line += `,"method":${str(f.method)}`;
    line += `,"path":${str(f.path)}`;
    if (f.fallback) line += `,"fallback":${str(f.fallback)}`;
    if (f.code !== undefined) line += `,"code":${str(f.code)}`;
    log[symbols.streamSym].write(`${line},"msg":"${event}"}\n`);
  }
}
