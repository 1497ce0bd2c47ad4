/**
 * The keep-alive race: an upstream closes an idle connection (its idle timeout is shorter than the gateway's and it
 * does not announce it) just as the gateway reuses it. A replayable request is sent again on another connection
 * instead of failing with 502; a write that may have been read is not. The race is made deterministic by an
 * upstream that answers the first request of each connection and drops the connection when a second one arrives.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { createLogger } from '../../../common/logger.ts';
import type { RunningGateway } from '../../../gateway/server.ts';
import { startTestGateway, testConfig } from '../../helpers/gateway.ts';
import { fakeUpstream } from '../../helpers/upstream.ts';

interface DroppingUpstream {
  url: string;
  server: Server;
  /** 'second': answer the first request of a connection, drop it at the second; 'all': drop at every request. */
  mode: 'second' | 'all';
  connections: number;
  /** Request lines received, in order. */
  requests: string[];
}

async function droppingUpstream(): Promise<DroppingUpstream> {
  const up: DroppingUpstream = { url: '', server: createServer(), mode: 'second', connections: 0, requests: [] };
  up.server.on('connection', (socket: Socket) => {
    up.connections++;
    let served = 0;
    let buffered = '';
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      const end = buffered.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = buffered.slice(0, end);
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (buffered.length < end + 4 + length) return;
      buffered = buffered.slice(end + 4 + length);
      up.requests.push(head.split('\r\n')[0] ?? '');
      if (up.mode === 'all' || served++ > 0) return void socket.destroy();
      // Keep-alive without a Keep-Alive: timeout hint, as many servers answer.
      socket.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok');
    });
  });
  await new Promise<void>((r) => up.server.listen(0, '127.0.0.1', () => r()));
  up.url = `http://127.0.0.1:${(up.server.address() as AddressInfo).port}`;
  return up;
}

describe('stale pooled connections', () => {
  let up: DroppingUpstream;
  let gw: RunningGateway;
  const lines: Record<string, unknown>[] = [];
  before(async () => {
    up = await droppingUpstream();
    const destination = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    });
    gw = await startTestGateway(testConfig({
      legacyUrl: up.url,
      serviceUrl: up.url,
      raw: {
        upstreams: [{ id: 'legacy', url: up.url }],
        routes: [
          { id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy' },
          { id: 'payments', match: { pathPrefix: '/api/payments' }, legacy: 'legacy', idempotent: true },
        ],
      },
    }), { log: createLogger({ level: 'info', destination }) });
  });
  after(async () => {
    await gw.close();
    up.server.close();
  });

  /** Opens a pooled connection with a first request it answers, then sends `method path` on it. */
  async function onStaleConnection(method: string, path: string, body: string | null = method === 'GET' ? null : '{"amount":5}'): Promise<{ status: number; body: string; sent: number }> {
    up.mode = 'second';
    const warm = await fetch(`${gw.proxyUrl}/api/orders/warm`);
    assert.equal(warm.status, 200);
    await warm.text();
    const before = up.requests.length;
    const res = await fetch(`${gw.proxyUrl}${path}`, { method, ...(body === null ? {} : { body }) });
    return { status: res.status, body: await res.text(), sent: up.requests.slice(before).filter((r) => r.startsWith(`${method} ${path}`)).length };
  }

  test('a GET on a connection the upstream dropped is sent again on a new connection: 200, and the retry is logged', async () => {
    const connections = up.connections;
    const r = await onStaleConnection('GET', '/api/orders/1');
    assert.equal(r.status, 200, r.body);
    assert.equal(r.body, 'ok');
    assert.equal(r.sent, 2, 'sent on the stale connection, then on a fresh one');
    assert.ok(up.connections > connections);
    const logged = lines.find((l) => l.msg === 'upstream.stale_connection');
    assert.ok(logged, 'upstream.stale_connection logged');
    assert.equal(logged.upstream, 'legacy');
    assert.equal(logged.code, 'ECONNRESET');
    assert.match(String(logged.hint), /keepAliveMs/);
  });

  test('a POST on a stale connection is not sent twice: 502', async () => {
    const r = await onStaleConnection('POST', '/api/orders/1');
    assert.equal(r.status, 502, r.body);
    assert.equal((JSON.parse(r.body) as { error: { code: string } }).error.code, 'UPSTREAM_BAD_RESPONSE');
    assert.equal(r.sent, 1);
  });

  test('a bodiless write on a route declared idempotent is sent again; a body streamed to legacy cannot be', async () => {
    const r = await onStaleConnection('DELETE', '/api/payments/7', null);
    assert.equal(r.status, 200, r.body);
    assert.equal(r.sent, 2);
    // Legacy requests stream their body (nothing is buffered for them), so there is nothing to send again.
    const streamed = await onStaleConnection('PUT', '/api/payments/7');
    assert.equal(streamed.status, 502, streamed.body);
    assert.equal(streamed.sent, 1);
  });

  test('a reset on a new connection is not a stale connection: no retry, 502', async () => {
    up.mode = 'all';
    // New connections only: the pool's idle ones are gone once the upstream drops each at its next request.
    const before = up.requests.length;
    const res = await fetch(`${gw.proxyUrl}/api/orders/fresh`, { headers: { connection: 'close' } });
    const body = await res.text();
    const sent = up.requests.slice(before).filter((r) => r.startsWith('GET /api/orders/fresh')).length;
    // At most MAX_STALE_RETRIES pooled connections may be tried first; the last send is on a new connection, once.
    assert.equal(res.status, 502, body);
    assert.ok(sent >= 1 && sent <= 4, `sent ${sent} times`);
    const again = up.requests.length;
    const res2 = await fetch(`${gw.proxyUrl}/api/orders/fresh2`);
    await res2.text();
    assert.equal(res2.status, 502);
    assert.equal(up.requests.slice(again).length, 1, 'with no pooled connection left, one send and no retry');
  });
});

test('a GET that times out on a reused connection is answered 504 and not sent again (destroying it is not a stale connection)', async () => {
  const legacy = await fakeUpstream('legacy');
  const gw = await startTestGateway(testConfig({
    legacyUrl: legacy.url,
    serviceUrl: legacy.url,
    raw: { upstreams: [{ id: 'legacy', url: legacy.url, timeoutMs: 300 }], routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy' }] },
  }));
  try {
    await (await fetch(`${gw.proxyUrl}/api/orders/warm`)).text(); // leaves a pooled connection
    legacy.mode = 'stall';
    const before = legacy.received.length;
    const res = await fetch(`${gw.proxyUrl}/api/orders/slow`);
    await res.text();
    assert.equal(res.status, 504);
    // A second send would arrive right after the timeout; the next request shows the gateway has moved on.
    legacy.mode = 'ok';
    await (await fetch(`${gw.proxyUrl}/api/orders/after`)).text();
    assert.deepEqual(legacy.received.slice(before).map((r) => r.url), ['/api/orders/slow', '/api/orders/after']);
  } finally {
    await gw.close();
    await legacy.stop();
  }
});
