/**
 * WebSocket upgrades through the gateway against real upstreams: the service's breaker and the legacy fallback,
 * stats, headers both ways, upgrades refused before routing, and clients that send early or reset.
 */
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { fakeUpstream, type FakeUpstream } from '../../helpers/upstream.ts';
import { featuresFile, startTestGateway, testConfig } from '../../helpers/gateway.ts';
import type { RunningGateway } from '../../../gateway/server.ts';
import { greetWebSockets, webSocketHandshake } from '../../helpers/websocket.ts';
import { waitFor } from '../../helpers/wait.ts';
import { raw } from '../../helpers/raw-http.ts';
import { signOverride } from '../../../flags/context.ts';

const HANDSHAKE = 'connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n';

describe('WebSocket upgrades', () => {
  let legacy: FakeUpstream;
  let svc: FakeUpstream;
  let gw: RunningGateway;
  let stopLegacy: () => void;
  const upgrades: IncomingMessage[] = [];

  before(async () => {
    legacy = await fakeUpstream('legacy');
    svc = await fakeUpstream('svc');
    // The fake service has no upgrade handler: node answers its upgrades as plain requests (200, 500, stall…).
    stopLegacy = greetWebSockets(legacy.server, (req) => {
      upgrades.push(req);
      return 'hello from legacy';
    });
    gw = await startTestGateway(testConfig({
      legacyUrl: legacy.url,
      serviceUrl: svc.url,
      flags: { bootstrapFile: featuresFile({ 'strangler.orders': { percent: 100 } }) },
      raw: { policies: { breakers: { default: { volumeThreshold: 2, errorThresholdPercentage: 50, timeoutMs: 300, resetTimeoutMs: 60_000 } } } },
    }));
  });
  after(async () => {
    stopLegacy();
    await gw.close();
    await legacy.stop();
    await svc.stop();
  });
  beforeEach(() => {
    svc.mode = 'ok';
    upgrades.length = 0;
  });

  test('a service that refuses (5xx), stalls or is down falls back to legacy; its breaker counts it and, open, short-circuits to legacy', async () => {
    const breaker = gw.runtime.snapshot.breakers.get('svc');
    assert.ok(breaker);
    const url = `${gw.proxyUrl}/api/orders/live`;
    const opened = once(breaker.events, 'open');
    svc.mode = 'status500';
    const refused = await webSocketHandshake(url, { headers: { 'x-user-id': 'u' } });
    assert.equal(refused.message, 'hello from legacy');
    assert.equal(refused.headers['x-strangler-target'], 'legacy');
    assert.equal(refused.headers['x-strangler-fallback'], 'service-500');
    svc.mode = 'stall';
    const stalled = await webSocketHandshake(url, { headers: { 'x-user-id': 'u' } });
    assert.equal(stalled.message, 'hello from legacy');
    assert.equal(stalled.headers['x-strangler-fallback'], 'service-timeout');
    await opened;
    svc.mode = 'ok';
    const before = svc.received.length;
    const shorted = await webSocketHandshake(url, { headers: { 'x-user-id': 'u' } });
    assert.equal(shorted.message, 'hello from legacy');
    assert.equal(shorted.headers['x-strangler-fallback'], 'service-breaker-open');
    assert.equal(svc.received.length, before, 'an open breaker does not call the service');
    assert.deepEqual([breaker.view().stats.failures, breaker.view().stats.rejects], [2, 1]);
    const stats = gw.runtime.stats('orders');
    assert.equal(stats.totals('legacy').requests, 3, 'upgrades are counted like requests');
    assert.equal(stats.totals('legacy').errors, 0);
  });

  test('upgrades refused before routing get the same status and JSON error as requests, then the connection closes', async () => {
    const cases: [string, string, number, string][] = [
      ['GET /nowhere HTTP/1.1\r\nhost: x\r\n', '', 404, 'ROUTE_NOT_FOUND'],
      ['GET /api/orders/../admin HTTP/1.1\r\nhost: x\r\n', '', 400, 'BAD_REQUEST'],
      ['GET /api/orders/live HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n', '', 501, 'UNSUPPORTED_TRANSFER_ENCODING'],
    ];
    for (const [line, extra, status, code] of cases) {
      const res = await raw(gw.proxyUrl, `${line}${HANDSHAKE}x-request-id: ws-reject-1\r\n${extra}\r\n`);
      const [head, body] = res.split('\r\n\r\n') as [string, string];
      assert.match(head, new RegExp(`^HTTP/1\\.1 ${status} `), res);
      assert.match(head, /\r\ncontent-type: application\/json/i);
      assert.match(head, /\r\nx-request-id: ws-reject-1/i);
      const parsed = JSON.parse(body) as { error: { code: string }; requestId: string };
      assert.equal(parsed.error.code, code);
      assert.equal(parsed.requestId, 'ws-reject-1');
    }
    assert.equal(upgrades.length, 0, 'nothing was forwarded');
  });

  test('headers: Sec-WebSocket-*, Origin and the upgrade pass intact, other hop-by-hop headers do not; the 101 carries the gateway\'s headers', async () => {
    const res = await webSocketHandshake(`${gw.proxyUrl}/api/orders/live?x=1`, {
      headers: { 'x-strangler-override': signOverride('test-override-secret-0123456789', 'legacy'), 'x-request-id': 'ws-req-1', 'x-forwarded-for': '6.6.6.6', 'proxy-authorization': 'Basic Zm9vOmJhcg==' },
      protocols: ['chat.v2'],
      origin: 'https://shop.example',
    });
    assert.equal(res.message, 'hello from legacy');
    const [got] = upgrades;
    assert.ok(got);
    assert.equal(got.url, '/api/orders/live?x=1');
    assert.equal(got.headers.origin, 'https://shop.example');
    assert.equal(got.headers['sec-websocket-protocol'], 'chat.v2');
    assert.ok(got.headers['sec-websocket-key']);
    assert.equal(got.headers['sec-websocket-version'], '13');
    assert.match(got.headers['sec-websocket-extensions'] ?? '', /permessage-deflate/);
    assert.equal(got.headers.upgrade, 'websocket');
    assert.equal(got.headers.connection, 'Upgrade');
    assert.equal(got.headers['proxy-authorization'], undefined);
    assert.equal(got.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(got.headers['x-request-id'], 'ws-req-1');
    assert.equal(res.headers['sec-websocket-protocol'], 'chat.v2');
    assert.ok(res.headers['sec-websocket-accept']);
    assert.equal(res.headers['x-request-id'], 'ws-req-1');
    assert.equal(res.headers['x-strangler-route'], 'orders');
    assert.equal(res.headers['x-strangler-target'], 'legacy');
    assert.equal(got.headers['x-strangler-override'], undefined, 'the override is not forwarded');
  });

  test('a 4xx refusal from the service is relayed (as for requests) and does not trip its breaker', async () => {
    const breaker = gw.runtime.snapshot.breakers.get('svc');
    const failures = breaker?.view().stats.failures;
    const { createServer } = await import('node:http');
    const svc4xx = createServer((_req, res) => res.end());
    svc4xx.on('upgrade', (_req: IncomingMessage, socket: Duplex) => socket.end('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 6\r\n\r\nno way'));
    await new Promise<void>((r) => svc4xx.listen(0, '127.0.0.1', () => r()));
    const port = (svc4xx.address() as { port: number }).port;
    const gw2 = await startTestGateway(testConfig({ legacyUrl: legacy.url, serviceUrl: `http://127.0.0.1:${port}`, flags: { bootstrapFile: featuresFile({ 'strangler.orders': { percent: 100 } }) } }));
    try {
      const res = await raw(gw2.proxyUrl, `GET /api/orders/live HTTP/1.1\r\nhost: x\r\n${HANDSHAKE}\r\n`);
      assert.match(res, /^HTTP\/1\.1 403 Forbidden\r\n/);
      assert.match(res, /\r\nx-strangler-target: service\r\n/);
      assert.match(res, /\r\n\r\nno way$/);
      assert.equal(gw2.runtime.snapshot.breakers.get('svc')?.view().stats.failures, 0);
      assert.equal(gw2.runtime.stats('orders').totals('service').requests, 1);
    } finally {
      await gw2.close();
      await new Promise<void>((r) => svc4xx.close(() => r()));
    }
    assert.equal(breaker?.view().stats.failures, failures);
  });

  test('bytes a client sends right behind its handshake reach the upstream once the tunnel is open', async () => {
    const { createServer } = await import('node:http');
    const received: Buffer[] = [];
    const sockets: Socket[] = [];
    const echo = createServer((_req, res) => res.end());
    echo.on('upgrade', (_req: IncomingMessage, socket: Socket, head: Buffer) => {
      sockets.push(socket);
      received.push(head);
      socket.on('data', (c: Buffer) => received.push(c));
      socket.write('HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n');
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    const port = (echo.address() as { port: number }).port;
    const gw2 = await startTestGateway(testConfig({ legacyUrl: `http://127.0.0.1:${port}`, serviceUrl: svc.url, route: { service: undefined } }));
    const client = connect(Number(new URL(gw2.proxyUrl).port), '127.0.0.1');
    try {
      await once(client, 'connect');
      client.write(`GET /api/orders/live HTTP/1.1\r\nhost: x\r\n${HANDSHAKE}\r\nearly-bytes`);
      await waitFor('the early bytes upstream', () => Buffer.concat(received).toString() === 'early-bytes', 5_000);
    } finally {
      client.destroy();
      for (const s of sockets) s.destroy(); // upgraded sockets are no longer the server's to close
      await gw2.close();
      await new Promise<void>((r) => echo.close(() => r()));
    }
  });

  test('a client that resets before the upstream answers does not take the gateway down', async () => {
    const { createServer } = await import('node:http');
    const stalling = createServer((_req, res) => res.end());
    const sockets: Socket[] = [];
    const arrived = new Promise<Socket>((resolve) => stalling.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
      sockets.push(socket);
      resolve(socket);
    }));
    await new Promise<void>((r) => stalling.listen(0, '127.0.0.1', () => r()));
    const port = (stalling.address() as { port: number }).port;
    const gw2 = await startTestGateway(testConfig({ legacyUrl: `http://127.0.0.1:${port}`, serviceUrl: svc.url, route: { service: undefined } }));
    try {
      const client = connect(Number(new URL(gw2.proxyUrl).port), '127.0.0.1');
      await once(client, 'connect');
      client.write(`GET /api/orders/live HTTP/1.1\r\nhost: x\r\n${HANDSHAKE}\r\n`);
      const upstream = await arrived;
      const upstreamEnded = once(upstream.resume(), 'end');
      client.resetAndDestroy();
      await upstreamEnded; // the gateway let the upstream go with its client (or after the upstream timeout)
      const res = await fetch(`${gw2.proxyUrl}/nowhere`);
      assert.equal(res.status, 404, 'the gateway still answers');
    } finally {
      for (const s of sockets) s.destroy();
      await gw2.close();
      await new Promise<void>((r) => stalling.close(() => r()));
    }
  });
});
