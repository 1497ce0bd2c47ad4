import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { symbols } from 'pino';
import { LogThreadDestination } from '../../../common/log-destination.ts';
import { createLogger, flushLogger } from '../../../common/logger.ts';
import { logEvent, RequestLog } from '../../../gateway/observability/log-events.ts';
import { gatewayLogger } from '../../../gateway/server.ts';
import { testConfig } from '../../helpers/gateway.ts';
import { durationText, type RequestLineFields } from '../../../common/request-line.ts';

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
  // Latin-1 beyond ASCII (how node's parser hands over raw bytes of a request line)
  ['request.completed', { ...base, path: '/caf\u00e9/\u00ff\u0080' }],
];

function assertSameAsPino(ours: string, pinos: string, event: string, fields: RequestLineFields): void {
  assert.equal(untimed(ours), untimed(pinos), `${event} ${JSON.stringify(fields)}`);
  const parsed = JSON.parse(ours) as Record<string, unknown>;
  assert.equal(parsed.path, fields.path, 'the path survives the round trip');
  assert.equal(parsed.worker, 2);
  assert.match(String(parsed.time), /^\d{4}-\d\d-\d\dT/);
}

test('request lines are byte-for-byte the line pino writes for the same event, bindings included', () => {
  const { log, lines } = capture();
  const child = log.child({ worker: 2 });
  for (const [event, fields] of cases) {
    new RequestLog(child).write(event, fields);
    logEvent(child, event, viaPino(fields));
    const [ours, pinos] = lines.splice(0, 2) as [string, string];
    assertSameAsPino(ours, pinos, event, fields);
  }
});

test('through the log thread (the gateway\'s default destination), request lines are still the line pino writes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'strangler-reqlog-'));
  const path = join(dir, 'lines.log');
  const fd = openSync(path, 'w');
  try {
    const log = createLogger({ level: 'info', name: 'gateway', buffer: true, fd });
    const stream = (log as unknown as Record<symbol, unknown>)[symbols.streamSym];
    assert.ok(stream instanceof LogThreadDestination, 'a buffering logger writes through the log thread');
    const child = log.child({ worker: 2 });
    const requests = new RequestLog(child);
    for (const [event, fields] of cases) {
      requests.write(event, fields);
      logEvent(child, event, viaPino(fields));
    }
    await flushLogger(log);
    const lines = readFileSync(path, 'utf8').split('\n').filter(Boolean);
    assert.equal(lines.length, cases.length * 2);
    for (const [i, [event, fields]] of cases.entries()) assertSameAsPino(lines[2 * i] as string, lines[2 * i + 1] as string, event, fields);
    stream.end();
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a gateway process that proxies logs through the log thread (log.buffer, the default); a cluster primary and log.buffer false do not', () => {
  const streamOf = (log: ReturnType<typeof createLogger>) => (log as unknown as Record<symbol, unknown>)[symbols.streamSym];
  const config = (buffer?: boolean) => testConfig({ legacyUrl: 'http://127.0.0.1:1', serviceUrl: 'http://127.0.0.1:2', raw: buffer === undefined ? {} : { log: { buffer } } });
  const proxying = streamOf(gatewayLogger(config()));
  assert.ok(proxying instanceof LogThreadDestination);
  proxying.end();
  assert.ok(!(streamOf(gatewayLogger(config(), 'gateway', false)) instanceof LogThreadDestination), 'a cluster primary');
  assert.ok(!(streamOf(gatewayLogger(config(false))) instanceof LogThreadDestination), 'log.buffer false');
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
