/**
 * The per-request log line of a real gateway: its fields, what it must never carry, fallbacks and errors, sampling.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, get, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { fakeUpstream, type FakeUpstream } from '../../helpers/upstream.ts';
import { featuresFile, startTestGateway, testConfig } from '../../helpers/gateway.ts';
import { waitFor } from '../../helpers/wait.ts';
import { createLogger } from '../../../common/logger.ts';
import type { RunningGateway } from '../../../gateway/server.ts';

type Line = Record<string, unknown>;

/** A gateway logging at info into memory; `lines(msg)` returns the parsed lines with that message. */
async function loggingGateway(legacy: { url: string }, svc: { url: string }, proxy: Record<string, unknown> = {}, svcUpstream: Record<string, unknown> = {}): Promise<{ gw: RunningGateway; lines: (msg: string) => Line[]; text: () => string }> {
  const chunks: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  const log = createLogger({ level: 'info', name: 'gateway', destination });
  const config = testConfig({
    legacyUrl: legacy.url,
    serviceUrl: svc.url,
    flags: { bootstrapFile: featuresFile({ 'strangler.orders': { percent: 100 } }) },
    raw: {
      proxy: { port: 0, bind: '127.0.0.1', drainTimeoutMs: 2000, ...proxy },
      upstreams: [
        { id: 'legacy', url: legacy.url, timeoutMs: 2000, connectTimeoutMs: 500 },
        { id: 'svc', url: svc.url, timeoutMs: 2000, connectTimeoutMs: 500, ...svcUpstream },
      ],
    },
  });
  const gw = await startTestGateway(config, { log });
  const text = () => chunks.join('');
  const lines = (msg: string) => text().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Line).filter((l) => l.msg === msg);
  return { gw, lines, text };
}

describe('per-request log line', () => {
  let legacy: FakeUpstream;
  let svc: FakeUpstream;
  before(async () => {
    legacy = await fakeUpstream('legacy');
    svc = await fakeUpstream('svc');
  });
  after(async () => {
    await legacy.stop();
    await svc.stop();
  });

  test('one line per request with request id, route, target, decision, status and duration; no query string or credentials', async () => {
    const { gw, lines, text } = await loggingGateway(legacy, svc);
    try {
      const res = await fetch(`${gw.proxyUrl}/api/orders/7?access_token=query-secret-123`, {
        headers: { 'x-user-id': 'u-1', 'x-request-id': 'req-abc', authorization: 'Bearer header-secret-456', cookie: 'sid=cookie-secret-789' },
      });
      assert.equal(res.status, 200);
      await res.text();
      const [line, ...more] = lines('request.completed');
      assert.equal(more.length, 0);
      assert.ok(line);
      assert.equal(line.level, 30);
      assert.equal(line.reqId, 'req-abc');
      assert.equal(line.routeId, 'orders');
      assert.equal(line.target, 'service');
      assert.equal(line.decision, 'flag-on');
      assert.equal(line.status, 200);
      assert.equal(line.method, 'GET');
      assert.equal(line.path, '/api/orders/7');
      assert.equal(typeof line.durationMs, 'number');
      assert.ok((line.durationMs as number) >= 0 && (line.durationMs as number) < 2000);
      for (const secret of ['query-secret-123', 'header-secret-456', 'cookie-secret-789']) assert.ok(!text().includes(secret), `${secret} must not reach the log`);
    } finally {
      await gw.close();
    }
  });

  test('a fallback is a completed line naming the reason; an answer the gateway could not get is a failed line with its code', async () => {
    const { gw, lines } = await loggingGateway(legacy, svc);
    try {
      svc.mode = 'status500';
      const fell = await fetch(`${gw.proxyUrl}/api/orders/8`, { headers: { 'x-user-id': 'u-2' } });
      assert.equal(fell.status, 200);
      await fell.text();
      const completed = lines('request.completed').at(-1);
      assert.equal(completed?.target, 'legacy');
      assert.equal(completed?.fallback, 'service-500');
      assert.equal(completed?.decision, 'flag-on');

      legacy.mode = 'status500';
      const failed = await fetch(`${gw.proxyUrl}/api/orders/9`, { headers: { 'x-user-id': 'u-3' } });
      assert.equal(failed.status, 503);
      await failed.text();
      const line = lines('request.failed').at(-1);
      assert.equal(line?.level, 40);
      assert.equal(line?.status, 503);
      assert.equal(line?.code, 'ALL_UPSTREAMS_DOWN');
      assert.equal(line?.fallback, 'service-500');
    } finally {
      svc.mode = 'ok';
      legacy.mode = 'ok';
      await gw.close();
    }
  });

  test('proxy.logSampleRate 0 drops successful lines but keeps failures', async () => {
    const { gw, lines } = await loggingGateway(legacy, svc, { logSampleRate: 0 });
    try {
      for (let i = 0; i < 20; i++) await (await fetch(`${gw.proxyUrl}/api/orders/${i}`, { headers: { 'x-user-id': `u-${i}` } })).text();
      assert.equal(lines('request.completed').length, 0);
      svc.mode = 'status500';
      legacy.mode = 'status500';
      const res = await fetch(`${gw.proxyUrl}/api/orders/1`, { headers: { 'x-user-id': 'u-1' } });
      await res.text();
      assert.equal(lines('request.failed').length, 1);
    } finally {
      svc.mode = 'ok';
      legacy.mode = 'ok';
      await gw.close();
    }
  });

  test('a client that hangs up mid-body is logged as 499 and the upstream answer is abandoned', async () => {
    let upstreamClosed!: Promise<unknown>;
    const slow = createServer((req, res) => {
      upstreamClosed = once(req.socket, 'close');
      res.writeHead(200, { 'content-length': '100000' });
      res.write('x'.repeat(10)); // and never the rest
    });
    slow.listen(0, '127.0.0.1');
    await once(slow, 'listening');
    const { gw, lines } = await loggingGateway(legacy, { url: `http://127.0.0.1:${(slow.address() as AddressInfo).port}` });
    try {
      const req = get(`${gw.proxyUrl}/api/orders/5`, { headers: { 'x-user-id': 'u-5' } });
      const [res] = (await once(req, 'response')) as [IncomingMessage];
      assert.equal(res.statusCode, 200);
      await once(res, 'data');
      req.destroy();
      await upstreamClosed; // the half-sent upstream answer is dropped, its connection not reused
      for (const deadline = Date.now() + 5000; lines('request.failed').length === 0 && Date.now() < deadline; ) await new Promise((resolve) => setTimeout(resolve, 5));
      const line = lines('request.failed')[0];
      assert.equal(line?.status, 499);
      assert.equal(line?.target, 'service');
      assert.equal(lines('request.completed').length, 0);
      const service = gw.runtime.stats('orders').totals('service');
      assert.deepEqual([service.requests, service.errors], [1, 0], "a client's hang-up is counted, but not as the service's error");
    } finally {
      await gw.close();
      slow.closeAllConnections();
      slow.close();
    }
  });

  test('a client that hangs up before the answer is logged as 499: the error counts do not blame the service, and the breaker counts nothing yet (it waits for the service\'s own outcome)', async () => {
    svc.mode = 'stall';
    const { gw, lines } = await loggingGateway(legacy, svc);
    try {
      const req = get(`${gw.proxyUrl}/api/orders/6`, { headers: { 'x-user-id': 'u-6' } });
      req.on('error', () => {}); // the socket is destroyed on purpose
      await svc.nextRequest();
      req.destroy();
      for (const deadline = Date.now() + 5000; lines('request.failed').length === 0 && Date.now() < deadline; ) await new Promise((resolve) => setTimeout(resolve, 5));
      assert.equal(lines('request.failed')[0]?.status, 499);
      const service = gw.runtime.stats('orders').totals('service');
      assert.deepEqual([service.requests, service.errors], [1, 0]);
      assert.equal(gw.runtime.snapshot.breakers.get('svc')?.view().stats.failures, 0);
    } finally {
      svc.mode = 'ok';
      await gw.close();
    }
  });

  test('an upstream that stops sending mid-body is cut after bodyIdleTimeoutMs (logged as UPSTREAM_TIMEOUT); a client that reads slowly is not', async () => {
    const big = Buffer.alloc(8 * 1024 * 1024, 'y');
    const upstream = createServer((req, res) => {
      if (req.url?.endsWith('/stall')) {
        res.writeHead(200, { 'content-length': '100000' });
        res.write('x'.repeat(10)); // and nothing more, connection kept open
      } else {
        res.writeHead(200, { 'content-length': String(big.length) });
        res.end(big);
      }
    });
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    const { gw, lines } = await loggingGateway(legacy, { url: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` }, {}, { bodyIdleTimeoutMs: 300 });
    try {
      const stalled = get(`${gw.proxyUrl}/api/orders/stall`, { headers: { 'x-user-id': 'u-7' } });
      stalled.on('error', () => {});
      const res = await new Promise<IncomingMessage>((resolve) => stalled.on('response', (r: IncomingMessage) => resolve(r.on('error', () => {}))));
      assert.equal(res.statusCode, 200);
      await new Promise((resolve) => res.resume().on('close', resolve)); // cut, instead of waiting for ever
      await waitFor('the cut answer to be logged', () => lines('request.failed').length > 0, 5_000);
      assert.deepEqual([lines('request.failed')[0]?.status, lines('request.failed')[0]?.code], [200, 'UPSTREAM_TIMEOUT']);

      // A client that stops reading for longer than bodyIdleTimeoutMs holds the upstream answer back (backpressure):
      // that is not the upstream stalling, and the whole body arrives once the client reads again.
      const slow = get(`${gw.proxyUrl}/api/orders/big`, { headers: { 'x-user-id': 'u-8' } });
      const slowRes = await new Promise<IncomingMessage>((resolve) => slow.on('response', (r: IncomingMessage) => resolve(r.pause())));
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      let received = 0;
      slowRes.on('data', (c: Buffer) => (received += c.length));
      slowRes.resume();
      await once(slowRes, 'end');
      assert.equal(received, big.length);
      assert.equal(lines('request.failed').length, 1, 'the slow reader was not cut');
    } finally {
      await gw.close();
      upstream.closeAllConnections();
      upstream.close();
    }
  });

  test("an upstream that breaks off mid-body is the upstream's failure: logged with the status sent and a code, counted as the service's error", async () => {
    const broken = createServer((req, res) => {
      res.writeHead(200, { 'content-length': '100000' });
      res.write('x'.repeat(10), () => setImmediate(() => req.socket.destroy()));
    });
    broken.listen(0, '127.0.0.1');
    await once(broken, 'listening');
    const { gw, lines } = await loggingGateway(legacy, { url: `http://127.0.0.1:${(broken.address() as AddressInfo).port}` });
    try {
      const req = get(`${gw.proxyUrl}/api/orders/5`, { headers: { 'x-user-id': 'u-5' } });
      req.on('error', () => {}); // the cut answer surfaces as 'aborted' / ECONNRESET
      const res = await new Promise<IncomingMessage>((resolve) => req.on('response', (r: IncomingMessage) => resolve(r.on('error', () => {}))));
      assert.equal(res.statusCode, 200);
      await new Promise((resolve) => res.resume().on('close', resolve)); // the gateway cuts the client's response short
      for (const deadline = Date.now() + 5000; lines('request.failed').length === 0 && Date.now() < deadline; ) await new Promise((resolve) => setTimeout(resolve, 5));
      const line = lines('request.failed')[0];
      assert.equal(line?.status, 200);
      assert.equal(line?.code, 'UPSTREAM_BAD_RESPONSE');
      const service = gw.runtime.stats('orders').totals('service');
      assert.deepEqual([service.requests, service.errors], [1, 1]);
    } finally {
      await gw.close();
      broken.closeAllConnections();
      broken.close();
    }
  });
});
