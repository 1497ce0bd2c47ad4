import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { createLogger } from '../../../common/logger.ts';
import { durationText, logEvent, RequestLog, type RequestLineFields } from '../../../gateway/observability/log-events.ts';

/** A logger as the gateway makes it (createLogger's options), writing into an array of lines. */
function capture(level = 'info'): { log: ReturnType<typeof createLogger>; lines: string[] } {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  return { log: createLogger({ level, name: 'gateway', destination }), lines };
}

/** What the forwarder logged through pino before RequestLog: the same fields (the duration rounded to the microsecond), fallback and code only when set. */
function viaPino(fields: RequestLineFields): Record<string, unknown> {
  const { reqId, routeId, target, decision, status, method, path, fallback, code } = fields;
  const durationMs = Math.round(fields.durationMs * 1000) / 1000;
  return { reqId, routeId, target, decision, status, durationMs, ...(method !== undefined ? { method } : {}), path, ...(fallback ? { fallback } : {}), ...(code !== undefined ? { code } : {}) };
}

/** The line without its timestamp (the two writes can fall in different milliseconds). */
const untimed = (line: string) => line.replace(/,"time":"[^"]*"/, '');

const base: RequestLineFields = { reqId: 'a1b2', routeId: 'orders', target: 'service', decision: 'flag-on', status: 200, durationMs: 1.234, method: 'GET', path: '/api/orders/42', fallback: null, code: undefined };

test('request lines are byte-for-byte the line pino writes for the same event, bindings included', () => {
  const { log, lines } = capture();
  const child = log.child({ worker: 2 });
  const cases: [('request.completed' | 'request.failed'), RequestLineFields][] = [
    ['request.completed', base],
    ['request.completed', { ...base, target: 'legacy', decision: 'flag-off', fallback: 'service-timeout', durationMs: 0 }],
    ['request.failed', { ...base, status: 503, code: 'ALL_UPSTREAMS_DOWN', fallback: 'service-connect' }],
    ['request.failed', { ...base, status: 499, method: undefined }],
    // durations: below a microsecond, rounding up into the next millisecond, long, not finite
    ['request.completed', { ...base, durationMs: 0.0004 }],
    ['request.completed', { ...base, durationMs: 41.9996 }],
    ['request.completed', { ...base, durationMs: 123456.789012 }],
    ['request.failed', { ...base, durationMs: Number.NaN }],
    // every printable ASCII character JSON leaves as it is, the edges of the unescaped fast path included
    ['request.completed', { ...base, path: `/${Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).filter((c) => c !== '"' && c !== '\\').join('')}\u007f` }],
    // everything JSON must escape: quotes, backslashes, control characters, non-ASCII, a lone surrogate
    ['request.completed', { ...base, reqId: 'id"\\', path: '/api/orders/"x"\\y\n\t\u0001é€😀\ud800', routeId: 'r"1' }],
  ];
  for (const [event, fields] of cases) {
    new RequestLog(child).write(event, fields);
    logEvent(child, event, viaPino(fields));
    const [ours, pinos] = lines.splice(0, 2) as [string, string];
    assert.equal(untimed(ours), untimed(pinos), `${event} ${JSON.stringify(fields)}`);
    const parsed = JSON.parse(ours) as Record<string, unknown>;
    assert.equal(parsed.path, fields.path, 'the path survives the round trip');
    assert.equal(parsed.worker, 2);
    assert.match(String(parsed.time), /^\d{4}-\d\d-\d\dT/);
  }
});

test('request lines respect the logger level: completed is info, failed is warn', () => {
  const { log, lines } = capture('warn');
  const requests = new RequestLog(log);
  requests.write('request.completed', base);
  requests.write('request.failed', { ...base, status: 502, code: 'UPSTREAM_CONNECT_FAILED' });
  assert.equal(lines.length, 1);
  assert.deepEqual(JSON.parse(lines[0] as string).msg, 'request.failed');
  log.level = 'error';
  requests.write('request.failed', { ...base, status: 502 });
  assert.equal(lines.length, 1, 'a level raised at run time silences warn lines');
});

test('durations are written as JSON writes the duration rounded to the microsecond', () => {
  const cases = [0, -0, 0.0004, 0.0005, 0.001, 0.01, 0.1, 0.12, 1, 1.2345, 9.9995, 59_999.9999, 1e9 - 0.0001, 1e9, 1e12 + 0.5, -1.5, Number.NaN, Number.POSITIVE_INFINITY];
  for (let i = 0; i < 20_000; i++) cases.push(Math.random() * 10 ** Math.floor(Math.random() * 7));
  for (const ms of cases) {
    const rounded = Math.round(ms * 1000) / 1000;
    assert.equal(durationText(ms), JSON.stringify(Number.isFinite(rounded) ? rounded : null), `duration ${ms}`);
  }
});
