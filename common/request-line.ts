/**
 * The text of the gateway's per-request log line (`request.completed`, `request.failed`): the exact line pino writes
 * for `logEvent(log, event, fields)` (level, time, the logger's bindings, the fields in order, msg; the duration
 * rounded to the microsecond). It lives here, not in gateway/observability, because two threads write it: the
 * gateway's RequestLog when its logger writes on the event loop, and the log thread (common/log-thread.ts) when the
 * request path only hands it the fields. test/unit/gateway/log-events.test.ts holds both to pino's output.
 */

/**
 * A log line's timestamp as the strangler loggers write it (`,"time":"<ISO 8601>"`), made once per millisecond: a
 * process logging per request writes many lines in the same millisecond, and the Date plus toISOString per line was
 * a tenth of the cost of an access-log line. createLogger's pino timestamp, and the log thread's for request lines.
 */
let lastMs = -1;
let lastTime = '';
export function timeField(ms: number): string {
  if (ms !== lastMs) {
    lastMs = ms;
    lastTime = `,"time":"${new Date(ms).toISOString()}"`;
  }
  return lastTime;
}

/** The per-request events in a fixed order: the log thread's records carry the index. */
export const REQUEST_EVENTS = ['request.completed', 'request.failed'] as const;
export type RequestEvent = (typeof REQUEST_EVENTS)[number];

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

/**
 * Request lines, with what repeats from line to line (the line's start, which changes once a millisecond, quoted ids,
 * the duration's digits) made once. One per thread that writes them.
 */
export class RequestLineFormat {
  /** `{"level":…,"time":…<bindings>,"reqId":`, and what it was made from. */
  #head = '';
  #headLevel = -1;
  #headTime = '';
  #headBindings = '';

  /** `time` is the timestamp as the logger writes it (`,"time":"…"`); `bindings` the logger's (`,"pid":…`). */
  line(event: RequestEvent, level: number, time: string, bindings: string, f: RequestLineFields): string {
    if (level !== this.#headLevel || time !== this.#headTime || bindings !== this.#headBindings) {
      this.#headLevel = level;
      this.#headTime = time;
      this.#headBindings = bindings;
      this.#head = `{"level":${level}${time}${bindings},"reqId":`;
    }
    let line = `${this.#head}${str(f.reqId)},"routeId":${quoted(f.routeId)},"target":${quoted(f.target)},"decision":${quoted(f.decision)},"status":${f.status},"durationMs":${durationText(f.durationMs)}`;
    if (f.method !== undefined) line += `,"method":${quoted(f.method)}`;
    line += `,"path":${str(f.path)}`;
    if (f.fallback) line += `,"fallback":${quoted(f.fallback)}`;
    if (f.code !== undefined) line += `,"code":${quoted(f.code)}`;
    return `${line},"msg":"${event}"}\n`;
  }
}
