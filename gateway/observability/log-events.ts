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
  /** Written rounded to the microsecond. */
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
 * str() for the few values a gateway writes over and over: route ids, targets, decisions, methods, fallback reasons,
 * codes. Bounded, in case one of them ever comes from a client.
 */
const QUOTED_MAX = 1024;
const quotedCache = new Map<string, string>();
function quoted(s: string): string {
  let q = quotedCache.get(s);
  if (q === undefined) {
    q = str(s);
    if (quotedCache.size < QUOTED_MAX) quotedCache.set(s, q);
  }
  return q;
}

/** ".001" … ".999" without trailing zeros, and "" for 0: a duration's fraction of a millisecond, to the microsecond. */
const FRACTIONS = Array.from({ length: 1000 }, (_, i) => (i === 0 ? '' : `.${String(i).padStart(3, '0').replace(/0+$/, '')}`));
const WHOLE_MS_MAX = 1e9;

/**
 * A duration in milliseconds rounded to the microsecond, as JSON writes it (`String(Math.round(ms * 1000) / 1000)`,
 * null when not finite), without turning a double into text, which was the largest single cost of a request line.
 */
export function durationText(ms: number): string {
  const us = Math.round(ms * 1000);
  if (us >= 0 && us < WHOLE_MS_MAX * 1000) {
    const whole = Math.floor(us / 1000);
    return `${whole}${FRACTIONS[us - whole * 1000] as string}`;
  }
  return Number.isFinite(us) ? String(us / 1000) : 'null';
}

type RequestEvent = 'request.completed' | 'request.failed';
const levelOf = (event: RequestEvent): number => levels.values[EVENTS[event]] as number;
const LEVEL: Record<RequestEvent, number> = { 'request.completed': levelOf('request.completed'), 'request.failed': levelOf('request.failed') };
/** What a line starts with, up to its timestamp. */
const LEVEL_PREFIX: Record<RequestEvent, string> = { 'request.completed': `{"level":${LEVEL['request.completed']}`, 'request.failed': `{"level":${LEVEL['request.failed']}` };

/**
 * The per-request events (`request.completed`, `request.failed`), written as the exact line pino would write for
 * `logEvent(log, event, fields)` (level, time, the logger's bindings, the fields in order, msg; the duration rounded to
 * the microsecond) straight to the logger's destination. At one line per request pino's generic path (walking the
 * object, checking each value's type, its serializer and redaction hooks) was about 2.5 µs of the gateway's ~50 µs per
 * request; these fields are fixed and carry no credentials (no headers, no query string), so they are serialised
 * directly, and what repeats (the line's start, which changes once a millisecond, quoted ids, the duration's digits) is
 * not made again for each line. test/unit/gateway/log-events.test.ts holds the two to the same output.
 */
export class RequestLog {
  readonly #log: PinoParts;
  readonly #stream: PinoParts[typeof symbols.streamSym];
  readonly #time: () => string;
  /** `,"time":…<bindings>,"reqId":`, and the time and bindings it was made with. */
  #head = '';
  #headTime = '';
  #headBindings = '';

  constructor(log: Logger) {
    this.#log = log as unknown as PinoParts;
    this.#stream = this.#log[symbols.streamSym];
    this.#time = this.#log[symbols.timeSym].bind(this.#log);
  }

  write(event: RequestEvent, f: RequestLineFields): void {
    const log = this.#log;
    if (LEVEL[event] < log.levelVal) return;
    const time = this.#time();
    const bindings = log[symbols.chindingsSym];
    if (time !== this.#headTime || bindings !== this.#headBindings) {
      this.#headTime = time;
      this.#headBindings = bindings;
      this.#head = `${time}${bindings},"reqId":`;
    }
    let line = `${LEVEL_PREFIX[event]}${this.#head}${str(f.reqId)},"routeId":${quoted(f.routeId)},"target":${quoted(f.target)},"decision":${quoted(f.decision)},"status":${f.status},"durationMs":${durationText(f.durationMs)}`;
    if (f.method !== undefined) line += `,"method":${quoted(f.method)}`;
    line += `,"path":${str(f.path)}`;
    if (f.fallback) line += `,"fallback":${quoted(f.fallback)}`;
    if (f.code !== undefined) line += `,"code":${quoted(f.code)}`;
    this.#stream.write(`${line},"msg":"${event}"}\n`);
  }
}
