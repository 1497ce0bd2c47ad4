/**
 * Every log message the gateway writes, with its level, in one place (fastify's log controller, YARP's event ids).
 * Field names are constants so dashboards and alerts can rely on them.
 */
import { levels, symbols } from 'pino';
import type { Logger } from '../../common/logger.ts';
import { LogThreadDestination } from '../../common/log-destination.ts';
import { RequestLineFormat, type RequestEvent, type RequestLineFields } from '../../common/request-line.ts';

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

/** What the request log reads from a pino logger: its public symbols for bindings, timestamp and destination. */
interface PinoParts {
  levelVal: number;
  [symbols.chindingsSym]: string;
  [symbols.timeSym]: () => string;
  [symbols.streamSym]: { write(line: string): unknown };
}

const levelOf = (event: RequestEvent): number => levels.values[EVENTS[event]] as number;
const LEVEL: Record<RequestEvent, number> = { 'request.completed': levelOf('request.completed'), 'request.failed': levelOf('request.failed') };

/**
 * The per-request events (`request.completed`, `request.failed`), written as the exact line pino would write for
 * `logEvent(log, event, fields)` (common/request-line.ts) straight to the logger's destination. At one line per
 * request pino's generic path (walking the object, checking each value's type, its serializer and redaction hooks)
 * was about 2.5 µs of the gateway's ~50 µs per request; these fields are fixed and carry no credentials (no headers,
 * no query string), so they are serialised directly. When the destination is a log thread (the gateway's default),
 * only the fields are handed over and that thread makes the text. test/unit/gateway/log-events.test.ts holds both
 * to pino's output.
 */
export class RequestLog {
  readonly #log: PinoParts;
  readonly #stream: PinoParts[typeof symbols.streamSym];
  readonly #thread: LogThreadDestination | null;
  readonly #time: () => string;
  readonly #format = new RequestLineFormat();

  constructor(log: Logger) {
    this.#log = log as unknown as PinoParts;
    this.#stream = this.#log[symbols.streamSym];
    this.#thread = this.#stream instanceof LogThreadDestination ? this.#stream : null;
    this.#time = this.#log[symbols.timeSym].bind(this.#log);
  }

  write(event: RequestEvent, f: RequestLineFields): void {
    const log = this.#log;
    const level = LEVEL[event];
    if (level < log.levelVal) return;
    const bindings = log[symbols.chindingsSym];
    if (this.#thread) this.#thread.writeRequest(event, level, bindings, f);
    else this.#stream.write(this.#format.line(event, level, this.#time(), bindings, f));
  }
}
