/**
 * Data plane against real sockets: fake upstreams that answer 500, stall, reset or are down; the gateway on port 0.
 */
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { gzipSync } from 'node:zlib';
import { request } from 'node:http';
import { fakeUpstream, type FakeUpstream } from '../../helpers/upstream.ts';
import { featuresFile, startTestGateway, testConfig } from '../../helpers/gateway.ts';
import { signOverride } from '../../../flags/context.ts';
import type { RunningGateway } from '../../../gateway/server.ts';
import { firstWebSocketMessage, greetWebSockets } from '../../helpers/websocket.ts';
import { WebSocket } from 'ws';
import { waitFor } from '../../helpers/wait.ts';
import { raw } from '../../helpers/raw-http.ts';

const OVERRIDE_SECRET = 'test-override-secret-0123456789';
const toService = { 'x-strangler-override': signOverride(OVERRIDE_SECRET, 'service') };

describe('gateway data plane', () => {
  let legacy: FakeUpstream;
  let svc: FakeUpstream;
  let gw: RunningGateway;

  before(async () => {
    legacy = await fakeUpstream('legacy');
    svc = await fakeUpstream('svc');
    gw = await startTestGateway(testConfig({
      legacyUrl: legacy.url,
      serviceUrl: svc.url,
      flags: { bootstrapFile: featuresFile({ 'strangler.orders': { percent: 30 }, 'strangler.idem': { percent: 0 } }) },
      raw: {
        routes: [
          { id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy', service: 'svc', breaker: 'tight' },
          { id: 'idem', match: { pattern: '/api/payments/:id/*' }, legacy: 'legacy', service: 'svc', idempotent: true, fallback: 'small', breaker: 'tight' },
          { id: 'rest', match: { pathPrefix: '/' }, legacy: 'legacy' },
        ],
        policies: {
          breakers: { tight: { volumeThreshold: 1000, timeoutMs: 300, resetTimeoutMs: 50 } },
          fallbacks: { default: {}, small: { maxReplayBodyBytes: 16, onBodyTooLarge: 'reject' } },
        },
      },
    }));
  });
  after(async () => {
    await gw.close();
    await legacy.stop();
    await svc.stop();
  });
  beforeEach(() => {
    legacy.mode = 'ok';
    svc.mode = 'ok';
    legacy.received.length = 0;
    svc.received.length = 0;
  });

  test('splits by flag percentage and keeps every user on one side', async () => {
    const seen = new Map<string, string>();
    let service = 0;
    for (let i = 0; i < 600; i++) {
      const res = await fetch(`${gw.proxyUrl}/api/orders/${i}`, { headers: { 'x-user-id': `user-${i}` } });
      await res.text();
      const target = res.headers.get('x-strangler-target') ?? '';
      seen.set(`user-${i}`, target);
      if (target === 'service') service++;
    }
    const share = service / 600;
    assert.ok(Math.abs(share - 0.3) < 0.06, `share ${share} should be near 0.30`);
    for (const i of [1, 7, 42, 99, 500]) {
      const res = await fetch(`${gw.proxyUrl}/api/orders/x`, { headers: { 'x-user-id': `user-${i}` } });
      await res.text();
      assert.equal(res.headers.get('x-strangler-target'), seen.get(`user-${i}`), `user-${i} stays on its side`);
    }
  });

  test('anonymous clients get a signed session cookie and stay on one side with it', async () => {
    const first = await fetch(`${gw.proxyUrl}/api/orders/1`);
    await first.text();
    const cookie = first.headers.get('set-cookie') ?? '';
    assert.match(cookie, /^strangler_sid=[^;]+; Path=\/; Max-Age=\d+; HttpOnly; SameSite=Lax$/);
    const value = cookie.split(';')[0] as string;
    const target = first.headers.get('x-strangler-target');
    for (let i = 0; i < 10; i++) {
      const res = await fetch(`${gw.proxyUrl}/api/orders/1`, { headers: { cookie: value } });
      await res.text();
      assert.equal(res.headers.get('set-cookie'), null, 'a valid session is not re-minted');
      assert.equal(res.headers.get('x-strangler-target'), target);
    }
    const forged = await fetch(`${gw.proxyUrl}/api/orders/1`, { headers: { cookie: 'strangler_sid=abc.forged' } });
    await forged.text();
    assert.ok(forged.headers.get('set-cookie'), 'a forged session cookie is replaced');
  });

  test('signed overrides force a side; unsigned ones are ignored', async () => {
    const forced = await fetch(`${gw.proxyUrl}/api/orders/1`, { headers: { ...toService, 'x-user-id': 'anyone' } });
    await forced.text();
    assert.equal(forced.headers.get('x-strangler-target'), 'service');
    assert.equal(svc.received[0]?.headers['x-strangler-override'], undefined, 'the override header is not forwarded');
    const legacyForced = await fetch(`${gw.proxyUrl}/api/orders/1`, { headers: { 'x-strangler-override': signOverride(OVERRIDE_SECRET, 'legacy') } });
    await legacyForced.text();
    assert.equal(legacyForced.headers.get('x-strangler-target'), 'legacy');
    // bucket for this user is > 30, so without a valid override it is legacy
    const user = [...Array(200).keys()].map((i) => `u${i}`).find((u) => u) as string;
    const unsigned = await fetch(`${gw.proxyUrl}/api/payments/1/x`, { headers: { 'x-strangler-override': 'service.9999999999.bad', 'x-user-id': user } });
    await unsigned.text();
    assert.equal(unsigned.headers.get('x-strangler-target'), 'legacy', 'percent is 0 for this route; a bad signature is ignored');
  });

  test('the override cookie forces a side but never reaches an upstream, over HTTP or a WebSocket upgrade; other cookies pass as sent', async () => {
    const cookie = `theme=dark; strangler_override=${signOverride(OVERRIDE_SECRET, 'service')}; cart="a b"`;
    const res = await fetch(`${gw.proxyUrl}/api/orders/1`, { headers: { cookie } });
    await res.text();
    assert.equal(res.headers.get('x-strangler-target'), 'service', 'the cookie still forces the side');
    assert.equal(svc.received[0]?.headers.cookie, 'theme=dark; cart="a b"');
    const only = await fetch(`${gw.proxyUrl}/api/orders/1`, { headers: { cookie: `strangler_override=${signOverride(OVERRIDE_SECRET, 'legacy')}` } });
    await only.text();
    assert.equal(only.headers.get('x-strangler-target'), 'legacy');
    assert.equal('cookie' in (legacy.received[0]?.headers ?? {}), false, 'no Cookie header when nothing else was sent');
    const stop = greetWebSockets(svc.server, (req) => req.headers.cookie ?? '(none)');
    try {
      assert.equal(await firstWebSocketMessage(`${gw.proxyUrl}/api/orders/live`, { cookie }), 'theme=dark; cart="a b"');
    } finally {
      stop();
    }
  });

  test('GET falls back to legacy when the service answers 500', async () => {
    svc.mode = 'status500';
    const res = await fetch(`${gw.proxyUrl}/api/orders/1`, { headers: toService });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-strangler-target'), 'legacy');
    assert.equal(res.headers.get('x-strangler-fallback'), 'service-500');
    assert.equal(((await res.json()) as { from: string }).from, 'legacy');
    assert.equal(svc.received.length, 1);
  });

  test('GET falls back when the service stalls past its timeout, resets, or is down', async () => {
    svc.mode = 'stall';
    const stalled = await fetch(`${gw.proxyUrl}/api/orders/1`, { headers: toService });
    await stalled.text();
    assert.equal(stalled.headers.get('x-strangler-fallback'), 'service-timeout');
    svc.mode = 'reset';
    const reset = await fetch(`${gw.proxyUrl}/api/orders/1`, { headers: toService });
    await reset.text();
    assert.equal(reset.headers.get('x-strangler-fallback'), 'service-reset');
    await svc.stop();
    try {
      const down = await fetch(`${gw.proxyUrl}/api/orders/1`, { headers: toService });
      await down.text();
      assert.equal(down.status, 200);
      assert.equal(down.headers.get('x-strangler-fallback'), 'service-connect');
    } finally {
      await svc.start();
    }
  });

  test('a non-idempotent POST is never sent to two upstreams', async () => {
    svc.mode = 'status500';
    const failed = await fetch(`${gw.proxyUrl}/api/orders`, { method: 'POST', body: '{"n":1}', headers: { ...toService, 'content-type': 'application/json' } });
    assert.equal(failed.status, 500, 'the service answer passes through');
    assert.equal(((await failed.json()) as { from: string }).from, 'svc');
    svc.mode = 'reset';
    const reset = await fetch(`${gw.proxyUrl}/api/orders`, { method: 'POST', body: '{"n":2}', headers: { ...toService, 'content-type': 'application/json' } });
    assert.equal(reset.status, 502);
    assert.equal(((await reset.json()) as { error: { code: string } }).error.code, 'UPSTREAM_BAD_RESPONSE');
    svc.mode = 'stall';
    const stalled = await fetch(`${gw.proxyUrl}/api/orders`, { method: 'POST', body: '{"n":3}', headers: { ...toService, 'content-type': 'application/json' } });
    assert.equal(stalled.status, 504);
    assert.equal(((await stalled.json()) as { error: { code: string } }).error.code, 'UPSTREAM_TIMEOUT');
    assert.equal(legacy.received.length, 0, 'legacy never saw the writes');
    assert.equal(svc.received.length, 3);
  });

  test('a POST the service never received (connection refused) goes to legacy once', async () => {
    await svc.stop();
    try {
      const res = await fetch(`${gw.proxyUrl}/api/orders`, { method: 'POST', body: '{"n":4}', headers: { ...toService, 'content-type': 'application/json' } });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('x-strangler-fallback'), 'service-connect');
      assert.deepEqual(legacy.received.map((r) => r.body), ['{"n":4}']);
    } finally {
      await svc.start();
    }
  });

  test('a route that declares writes idempotent replays the POST body on legacy', async () => {
    svc.mode = 'status500';
    const res = await fetch(`${gw.proxyUrl}/api/payments/7/capture`, { method: 'POST', body: '{"amt":5}', headers: toService });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-strangler-fallback'), 'service-500');
    assert.equal(legacy.received[0]?.body, '{"amt":5}');
  });

  test('413 when a body is too large to replay on a route whose policy demands replay', async () => {
    const res = await fetch(`${gw.proxyUrl}/api/payments/7/capture`, { method: 'POST', body: 'x'.repeat(100), headers: toService });
    assert.equal(res.status, 413);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'BODY_TOO_LARGE_TO_REPLAY');
    assert.equal(svc.received.length + legacy.received.length, 0);
  });

  test('503 with a stable code when both sides are down', async () => {
    svc.mode = 'status500';
    legacy.mode = 'reset';
    const res = await fetch(`${gw.proxyUrl}/api/orders/1`, { headers: toService });
    assert.equal(res.status, 503);
    const body = (await res.json()) as { error: { code: string }; requestId: string };
    assert.equal(body.error.code, 'ALL_UPSTREAMS_DOWN');
    assert.equal(body.requestId, res.headers.get('x-request-id'));
  });

  test('paths with dot segments are refused, never forwarded', async () => {
    for (const path of ['/api/orders/../secret', '/api/orders/%2e%2e/secret', '/api/orders/%2E./x', '/api/orders/.\\x', '/api/orders/..;/..;/admin', '/api/orders/..%2f..%2fadmin', '/api/orders/x%5C%2e%2e%5Cadmin', '/api/orders/.;/x']) {
      const res = await raw(gw.proxyUrl, `GET ${path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`);
      assert.match(res, /^HTTP\/1\.1 400/, path);
      assert.match(res, /"code":"BAD_REQUEST"/);
    }
    assert.equal(svc.received.length + legacy.received.length, 0);
  });

  test('repeated slashes are merged before the route is matched, as they are in the path the upstream gets', async () => {
    for (const path of ['//api/orders/7', '/api//orders/7', '/api/orders//7']) {
      const res = await fetch(`${gw.proxyUrl}${path}?q=a//b`, { headers: toService });
      await res.text();
      assert.equal(res.headers.get('x-strangler-route'), 'orders', `${path} is the orders route, not the catch-all`);
      assert.equal(res.headers.get('x-strangler-target'), 'service');
    }
    assert.deepEqual(svc.received.map((r) => r.url), ['/api/orders/7?q=a//b', '/api/orders/7?q=a//b', '/api/orders/7?q=a//b']);
    assert.equal(legacy.received.length, 0);
  });

  test('no open proxy: absolute-form URIs and foreign Host headers only reach configured upstreams', async () => {
    const attacker = await fakeUpstream('attacker');
    try {
      const a = await raw(gw.proxyUrl, `GET ${attacker.url}/api/orders/1 HTTP/1.1\r\nhost: ${new URL(attacker.url).host}\r\nconnection: close\r\n\r\n`);
      assert.match(a, /^HTTP\/1\.1 200/);
      const b = await raw(gw.proxyUrl, `GET /api/orders/1 HTTP/1.1\r\nhost: ${new URL(attacker.url).host}\r\nconnection: close\r\n\r\n`);
      assert.match(b, /^HTTP\/1\.1 200/);
      const c = await raw(gw.proxyUrl, `CONNECT ${new URL(attacker.url).host} HTTP/1.1\r\nhost: ${new URL(attacker.url).host}\r\n\r\n`);
      assert.doesNotMatch(c, /^HTTP\/1\.1 200/);
      assert.equal(attacker.received.length, 0, 'the attacker host never got a request');
      assert.equal(legacy.received.length + svc.received.length, 2);
    } finally {
      await attacker.stop();
    }
  });

  test('request smuggling (Content-Length with Transfer-Encoding) and oversized headers are refused', async () => {
    const smuggle = await raw(gw.proxyUrl, 'POST /api/orders HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /api/orders/smuggled HTTP/1.1\r\nhost: x\r\n\r\n');
    assert.match(smuggle, /^HTTP\/1\.1 400/);
    const big = await raw(gw.proxyUrl, `GET /api/orders/1 HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`);
    assert.match(big, /^HTTP\/1\.1 431/);
    assert.equal(svc.received.length + legacy.received.length, 0);
  });

  test('hop-by-hop headers are stripped both ways; forwarding headers, request id and traceparent are set', async () => {
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const response = await raw(gw.proxyUrl, [
      'GET /api/orders/1 HTTP/1.1', 'host: shop.example', 'connection: close, x-secret', 'x-secret: s', 'proxy-authorization: Basic x', 'te: trailers',
      'x-forwarded-for: 6.6.6.6', 'forwarded: for=6.6.6.6;proto=https;host=evil.example', 'x-real-ip: 6.6.6.6', 'x-request-id: req-123', `traceparent: ${traceparent}`, 'x-user-id: u', '', '',
    ].join('\r\n'));
    const got = legacy.received[0] ?? svc.received[0];
    assert.ok(got);
    for (const h of ['x-secret', 'proxy-authorization', 'te']) assert.equal(got.headers[h], undefined, `${h} is not forwarded`);
    // Untrusted client-hop claims other than X-Forwarded-* (replaced below) would let a client spoof its address or host.
    for (const h of ['forwarded', 'x-real-ip']) assert.equal(got.headers[h], undefined, `an untrusted ${h} is not forwarded`);
    assert.notEqual(got.headers.connection, 'close, x-secret', 'the client connection header is not forwarded');
    assert.equal(got.headers['x-forwarded-for'], '127.0.0.1', 'an untrusted X-Forwarded-For is replaced');
    assert.equal(got.headers['x-forwarded-proto'], 'http');
    assert.equal(got.headers['x-forwarded-host'], 'shop.example');
    assert.equal(got.headers['x-request-id'], 'req-123');
    assert.equal(got.headers.traceparent, traceparent);
    const head = response.split('\r\n\r\n')[0]?.toLowerCase() ?? '';
    assert.doesNotMatch(head, /\nkeep-alive:/, 'the upstream keep-alive header is not passed back');
    assert.match(head, /\nx-request-id: req-123/);
    const minted = await fetch(`${gw.proxyUrl}/api/orders/1`, { headers: { 'x-request-id': 'bad id with spaces' } });
    await minted.text();
    assert.match(minted.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
  });

  test('WebSocket upgrades are routed by the same decision', async () => {
    const stop = greetWebSockets(svc.server, () => 'hello from svc');
    try {
      assert.equal(await firstWebSocketMessage(`${gw.proxyUrl}/api/orders/live`, toService), 'hello from svc');
    } finally {
      stop();
    }
  });

  test('an Upgrade offer other than WebSocket (curl --http2: h2c) is ignored: the request is served as HTTP/1.1', async () => {
    const h2c = 'connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA';
    const res = await raw(gw.proxyUrl, [
      `GET /api/orders/1?q=a HTTP/1.1\r\nhost: x\r\n${h2c}\r\n\r\n`,
      `POST /api/orders HTTP/1.1\r\nhost: x\r\n${h2c}\r\ncontent-length: 7\r\n\r\n{"n":1}`,
      `POST /api/orders HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\ntransfer-encoding: chunked\r\n\r\n7\r\n{"n":2}\r\n0\r\n\r\n`,
      'GET /api/orders/2 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n',
    ].join(''));
    assert.equal(res.match(/^HTTP\/1\.1 200 /gm)?.length, 4, res);
    // Pipelined requests are forwarded concurrently: compare them in a fixed order.
    const received = [...legacy.received, ...svc.received];
    assert.deepEqual(received.map((r) => `${r.method} ${r.url} ${r.body}`).sort(), ['GET /api/orders/1?q=a ', 'GET /api/orders/2 ', 'POST /api/orders {"n":1}', 'POST /api/orders {"n":2}']);
    for (const r of received) for (const h of ['upgrade', 'http2-settings']) assert.equal(r.headers[h], undefined, `${h} is not forwarded`);
  });

  test('a WebSocket upgrade no upstream can take gets an HTTP answer: a refusal intact, a stalled service falls back, 504/502 from legacy, 503 when both are down', async () => {
    const upgrade = 'GET /api/orders/live HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n';
    const override = `x-strangler-override: ${toService['x-strangler-override']}\r\n`;
    const toLegacy = `x-strangler-override: ${signOverride(OVERRIDE_SECRET, 'legacy')}\r\n`;
    // The fake upstreams have no upgrade handler, so node answers the upgrade as a plain request (chunked JSON).
    const refused = await raw(gw.proxyUrl, `${upgrade}${override}\r\n`);
    const [head, body] = refused.split('\r\n\r\n') as [string, string];
    assert.match(head, /^HTTP\/1\.1 200 /);
    assert.match(head, /\r\nx-strangler-target: service/);
    assert.doesNotMatch(head, /transfer-encoding/i, 'the body relayed is not chunked any more');
    assert.equal((JSON.parse(body) as { from: string }).from, 'svc');
    svc.mode = 'stall';
    const fellBack = await raw(gw.proxyUrl, `${upgrade}${override}\r\n`);
    assert.match(fellBack, /\r\nx-strangler-fallback: service-timeout\r\n[^]*"from":"legacy"/);
    legacy.mode = 'stall';
    const started = Date.now();
    const stalled = await raw(gw.proxyUrl, `${upgrade}${toLegacy}\r\n`);
    assert.match(stalled, /^HTTP\/1\.1 504 [^]*"code":"UPSTREAM_TIMEOUT"/);
    assert.ok(Date.now() - started >= 1900, 'after the upstream timeout (2 s)');
    await legacy.stop();
    try {
      const down = await raw(gw.proxyUrl, `${upgrade}${toLegacy}\r\n`);
      assert.match(down, /^HTTP\/1\.1 502 [^]*"code":"UPSTREAM_CONNECT_FAILED"/);
      await svc.stop();
      try {
        const both = await raw(gw.proxyUrl, `${upgrade}${override}\r\n`);
        assert.match(both, /^HTTP\/1\.1 503 [^]*"code":"ALL_UPSTREAMS_DOWN"/);
      } finally {
        await svc.start();
      }
    } finally {
      await legacy.start();
    }
  });

  test('a WebSocket client that leaves before a stalled upstream answers does not leave the upstream connection open', async () => {
    svc.mode = 'stall';
    let open = 0;
    const onConnection = (s: Socket) => {
      open++;
      s.on('close', () => open--);
    };
    svc.server.on('connection', onConnection);
    try {
      const received = svc.nextRequest();
      const { port } = new URL(gw.proxyUrl);
      const client = connect(Number(port), '127.0.0.1');
      await once(client, 'connect');
      client.write(`GET /api/orders/live HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nx-strangler-override: ${toService['x-strangler-override']}\r\n\r\n`);
      await received;
      assert.equal(open, 1);
      client.destroy();
      const deadline = Date.now() + 5000;
      while (open > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.equal(open, 0, 'the upstream connection is closed (bounded by the upstream timeout)');
    } finally {
      svc.server.off('connection', onConnection);
    }
  });
});

describe('streamed request bodies and the upstream timeout', () => {
  test('a slow upload to a healthy upstream is not cut with 504; the timeout starts once the body is sent', async () => {
    const legacy = await fakeUpstream('legacy');
    const svc = await fakeUpstream('svc');
    const gw = await startTestGateway(testConfig({
      legacyUrl: legacy.url,
      serviceUrl: svc.url,
      raw: { upstreams: [{ id: 'legacy', url: legacy.url, timeoutMs: 300 }, { id: 'svc', url: svc.url, timeoutMs: 300 }] },
    }));
    const upload = (headers: Record<string, string>) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request(`${gw.proxyUrl}/api/orders/upload`, { method: 'POST', headers }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        let sent = 0;
        const tick = setInterval(() => {
          req.write('x');
          if (++sent === 8) {
            clearInterval(tick);
            req.end();
          }
        }, 100); // 800 ms in all: longer than the 300 ms timeout
      });
    try {
      for (const headers of [{ 'content-length': '8' }, {}] as Record<string, string>[]) {
        const res = await upload(headers);
        assert.equal(res.status, 200, res.body);
        assert.equal((JSON.parse(res.body) as { body: string }).body, 'xxxxxxxx');
      }
      legacy.mode = 'stall';
      const stalled = await upload({});
      assert.equal(stalled.status, 504, 'an upstream that does not answer after the body still times out');
    } finally {
      await gw.close();
      await legacy.stop();
      await svc.stop();
    }
  });
});

describe('an upstream that answers early during an upload', () => {
  // As nginx and most apps do: answer 413 after the first chunk, then close with the rest of the body unread (the
  // kernel resets the connection, so the gateway's next write of the body fails with EPIPE or ECONNRESET).
  test('its answer is relayed, not a 502, on the legacy path and on the service path with a streamed body; the breaker and error counts do not count it', async () => {
    const { createServer } = await import('node:http');
    let received = 0;
    const upstream = createServer((req, res) => {
      req.once('data', () => {
        received++;
        res.writeHead(413, { 'content-type': 'text/plain', connection: 'close' });
        res.end('too large for us');
        res.on('finish', () => req.socket.destroy());
      });
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    const url = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    const gw = await startTestGateway(testConfig({ legacyUrl: url, serviceUrl: url, flags: { bootstrapFile: featuresFile({ 'strangler.orders': { percent: 0 } }) } }));
    const size = 4 * 1024 * 1024; // over maxReplayBodyBytes (1 MiB): the service path streams it too
    const upload = (headers: Record<string, string>) =>
      new Promise<{ status: number; body: string; target: string | undefined; fallback: string | undefined }>((resolve, reject) => {
        const req = request(`${gw.proxyUrl}/api/orders/upload`, { method: 'POST', headers }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body, target: res.headers['x-strangler-target'] as string | undefined, fallback: res.headers['x-strangler-fallback'] as string | undefined }));
        });
        req.on('error', reject);
        const chunk = Buffer.alloc(64 * 1024, 'x');
        let sent = 0;
        const pump = (): void => {
          while (sent < size) {
            sent += chunk.length;
            if (!req.write(chunk)) return void req.once('drain', pump);
          }
          req.end();
        };
        pump();
      });
    try {
      for (const [target, headers] of [['legacy', {}], ['service', toService]] as [string, Record<string, string>][]) {
        for (const framing of [{ 'content-length': String(size) }, {}] as Record<string, string>[]) {
          const res = await upload({ ...headers, ...framing });
          assert.deepEqual(res, { status: 413, body: 'too large for us', target, fallback: undefined }, `${target}, ${'content-length' in framing ? 'content-length' : 'chunked'}`);
        }
      }
      assert.equal(received, 4, 'each upload reached one upstream once');
      const breaker = gw.runtime.snapshot.breakers.get('svc')?.view();
      assert.deepEqual([breaker?.stats.failures, breaker?.stats.successes], [0, 2], 'an answer is not a breaker failure');
      const stats = gw.runtime.stats('orders');
      assert.deepEqual([stats.totals('legacy').errors, stats.totals('service').errors, stats.totals('legacy').requests + stats.totals('service').requests], [0, 0, 4]);
    } finally {
      await gw.close();
      upstream.closeAllConnections();
      await new Promise<void>((r) => upstream.close(() => r()));
    }
  });
});

describe('transfer codings and Expect: 100-continue', () => {
  let legacy: FakeUpstream;
  let svc: FakeUpstream;
  let gw: RunningGateway;
  let coded: NetServer;
  let codedHits = 0;
  const zipped = gzipSync('{"from":"coded"}');

  before(async () => {
    legacy = await fakeUpstream('legacy');
    svc = await fakeUpstream('svc');
    // An upstream that answers with Transfer-Encoding: gzip, chunked (node's parser takes the chunked framing).
    coded = createNetServer((socket) => socket.once('data', () => {
      codedHits++;
      socket.end(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: gzip, chunked\r\n\r\n${zipped.length.toString(16)}\r\n`), zipped, Buffer.from('\r\n0\r\n\r\n')]));
    }));
    await new Promise<void>((r) => coded.listen(0, '127.0.0.1', () => r()));
    const codedUrl = `http://127.0.0.1:${(coded.address() as AddressInfo).port}`;
    gw = await startTestGateway(testConfig({
      legacyUrl: legacy.url,
      serviceUrl: svc.url,
      flags: { bootstrapFile: featuresFile({ 'strangler.coded-service': { percent: 0 }, 'strangler.idem': { percent: 0 } }) },
      raw: {
        upstreams: [
          { id: 'legacy', url: legacy.url, timeoutMs: 2000, connectTimeoutMs: 500 },
          { id: 'svc', url: svc.url, timeoutMs: 2000, connectTimeoutMs: 500 },
          { id: 'coded', url: codedUrl, timeoutMs: 2000, connectTimeoutMs: 500 },
        ],
        routes: [
          { id: 'coded-legacy', match: { pathPrefix: '/coded' }, legacy: 'coded' },
          { id: 'coded-service', match: { pathPrefix: '/api/coded' }, legacy: 'legacy', service: 'coded' },
          { id: 'idem', match: { pathPrefix: '/api/payments' }, legacy: 'legacy', service: 'svc', idempotent: true, fallback: 'small' },
          { id: 'rest', match: { pathPrefix: '/' }, legacy: 'legacy' },
        ],
        policies: { fallbacks: { default: {}, small: { maxReplayBodyBytes: 16, onBodyTooLarge: 'reject' } } },
      },
    }));
  });
  after(async () => {
    await gw.close();
    await legacy.stop();
    await svc.stop();
    await new Promise<void>((r) => coded.close(() => r()));
  });
  beforeEach(() => {
    legacy.received.length = 0;
    svc.received.length = 0;
    codedHits = 0;
  });

  /** One request with `Expect: 100-continue` whose body is sent only after 100 Continue; resolves with the answer. */
  const expectContinue = (path: string, body: string, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; body: string; continued: boolean }>((resolve, reject) => {
      let continued = false;
      const req = request(`${gw.proxyUrl}${path}`, { method: 'POST', headers: { ...headers, expect: '100-continue', 'content-length': String(Buffer.byteLength(body)) } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, continued }));
      });
      req.on('continue', () => {
        continued = true;
        req.end(body);
      });
      req.on('error', reject);
    });

  test('regression: a request Transfer-Encoding other than chunked (gzip, chunked) gets 501, never a still-gzipped body upstream', async () => {
    const body = gzipSync('{"amount":5}');
    for (const coding of ['gzip, chunked', 'deflate, chunked']) {
      const res = await raw(gw.proxyUrl, Buffer.concat([Buffer.from(`POST /anything HTTP/1.1\r\nhost: x\r\ntransfer-encoding: ${coding}\r\n\r\n${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]));
      assert.match(res, /^HTTP\/1\.1 501 /, coding);
      assert.match(res, /"code":"UNSUPPORTED_TRANSFER_ENCODING"/);
      assert.match(res.toLowerCase(), /\r\nconnection: close\r\n/, 'the connection ends with the refusal');
    }
    assert.equal(legacy.received.length + svc.received.length, 0, 'nothing was forwarded');
    const chunked = await raw(gw.proxyUrl, 'POST /anything HTTP/1.1\r\nhost: x\r\ntransfer-encoding: Chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n');
    assert.match(chunked, /^HTTP\/1\.1 200 /, 'plain chunked, in any case, is proxied');
    assert.equal(legacy.received[0]?.body, 'abc');
  });

  test('regression: an upstream answer with Transfer-Encoding gzip, chunked is a 502, or falls back, never an undecodable body', async () => {
    const direct = await fetch(`${gw.proxyUrl}/coded/1`);
    assert.equal(direct.status, 502);
    assert.equal(((await direct.json()) as { error: { code: string } }).error.code, 'UPSTREAM_BAD_RESPONSE');
    const fallback = await fetch(`${gw.proxyUrl}/api/coded/1`, { headers: toService });
    assert.equal(fallback.status, 200);
    assert.equal(fallback.headers.get('x-strangler-fallback'), 'service-reset');
    assert.equal(((await fallback.json()) as { from: string }).from, 'legacy');
    assert.equal(codedHits, 2);
  });

  test('regression: Expect: 100-continue with a declared length over a replay limit the route must meet is refused with 413 before 100 Continue', async () => {
    const res = await raw(gw.proxyUrl, `POST /api/payments/1 HTTP/1.1\r\nhost: x\r\nx-strangler-override: ${toService['x-strangler-override']}\r\ncontent-length: 1000\r\nexpect: 100-continue\r\n\r\n`);
    assert.match(res, /^HTTP\/1\.1 413 /, 'no 100 Continue first: the client never uploads the body');
    assert.match(res, /"code":"BODY_TOO_LARGE_TO_REPLAY"/);
    assert.match(res.toLowerCase(), /\r\nconnection: close\r\n/, 'the connection is not kept for a body that will not come');
    assert.equal(legacy.received.length + svc.received.length, 0);
    const noRoute = await raw(gw.proxyUrl, 'POST /coded/1 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\nexpect: 100-continue\r\n\r\n');
    assert.match(noRoute, /^HTTP\/1\.1 501 /, 'a request refused before routing gets no 100 Continue either');
  });

  test('Expect: 100-continue on a proxied request gets 100 Continue, and the body reaches the upstream without Expect', { timeout: 10_000 }, async () => {
    for (const [path, headers, upstream] of [['/anything', {}, () => legacy], ['/api/payments/1', toService, () => svc]] as const) {
      const res = await expectContinue(path, '{"n":1}', headers);
      assert.deepEqual([res.status, res.continued], [200, true], path);
      const got = upstream().received[0];
      assert.equal(got?.body, '{"n":1}', path);
      assert.equal(got?.headers.expect, undefined, 'the gateway answered the expectation itself (as Envoy)');
    }
  });
});

/** Two fake upstreams and a gateway sending every user of the orders route to the service, with `breaker` as its default breaker policy. */
async function breakerGateway(breaker: Record<string, unknown>): Promise<{ legacy: FakeUpstream; svc: FakeUpstream; gw: RunningGateway; stop: () => Promise<void> }> {
  const legacy = await fakeUpstream('legacy');
  const svc = await fakeUpstream('svc');
  const gw = await startTestGateway(testConfig({
    legacyUrl: legacy.url,
    serviceUrl: svc.url,
    flags: { bootstrapFile: featuresFile({ 'strangler.orders': { percent: 100 } }) },
    raw: { policies: { breakers: { default: breaker } } },
  }));
  return { legacy, svc, gw, stop: async () => { await gw.close(); await legacy.stop(); await svc.stop(); } };
}

describe('breaker', () => {
  test('opens after the volume threshold, short-circuits to legacy, and closes after a half-open success', async () => {
    const { svc, gw, stop } = await breakerGateway({ volumeThreshold: 4, errorThresholdPercentage: 50, resetTimeoutMs: 100 });
    try {
      const breaker = gw.runtime.snapshot.breakers.get('svc');
      assert.ok(breaker);
      svc.mode = 'status500';
      const opened = once(breaker.events, 'open');
      for (let i = 0; i < 4; i++) {
        const res = await fetch(`${gw.proxyUrl}/api/orders/${i}`, { headers: { 'x-user-id': 'u' } });
        await res.text();
        assert.equal(res.headers.get('x-strangler-fallback'), 'service-500');
      }
      await opened;
      assert.equal(breaker.state, 'open');
      const before = svc.received.length;
      const shorted = await fetch(`${gw.proxyUrl}/api/orders/x`, { headers: { 'x-user-id': 'u' } });
      await shorted.text();
      assert.equal(shorted.headers.get('x-strangler-fallback'), 'service-breaker-open');
      assert.equal(svc.received.length, before, 'an open breaker does not call the service');
      // 4xx from the service never trips it: checked after it closes again
      svc.mode = 'ok';
      await once(breaker.events, 'halfOpen');
      const trial = await fetch(`${gw.proxyUrl}/api/orders/y`, { headers: { 'x-user-id': 'u' } });
      await trial.text();
      assert.equal(trial.headers.get('x-strangler-target'), 'service');
      assert.equal(breaker.state, 'closed');
      const status = await fetch(`${gw.adminUrl}/admin/breakers`, { headers: { authorization: `Bearer ${gw.adminToken}` } });
      const body = (await status.json()) as { breakers: { upstream: string; state: string; opens: number }[] };
      assert.deepEqual(body.breakers.map((b) => [b.upstream, b.state, b.opens]), [['svc', 'closed', 1]]);
    } finally {
      await stop();
    }
  });

  test('breaker_opens_total survives reloads that rebuild the breaker or route away from its upstream and back', async () => {
    const legacy = await fakeUpstream('legacy');
    const svc = await fakeUpstream('svc');
    const config = (breaker: Record<string, unknown>, serviceRoute = true) => testConfig({
      legacyUrl: legacy.url,
      serviceUrl: svc.url,
      flags: { bootstrapFile: featuresFile({ 'strangler.orders': { percent: 100 } }) },
      route: serviceRoute ? {} : { service: undefined },
      raw: { policies: { breakers: { default: { volumeThreshold: 2, errorThresholdPercentage: 50, ...breaker } } } },
    });
    const gw = await startTestGateway(config({ resetTimeoutMs: 60_000 }));
    const opensTotal = async () => {
      const res = await fetch(`${gw.adminUrl}/metrics`, { headers: { authorization: `Bearer ${gw.adminToken}` } });
      return /^strangler_breaker_opens_total\{route="orders",upstream="svc"\} (\d+)$/m.exec(await res.text())?.[1];
    };
    const trip = async () => {
      const breaker = gw.runtime.snapshot.breakers.get('svc');
      assert.ok(breaker);
      const opened = once(breaker.events, 'open');
      svc.mode = 'status500';
      for (let i = 0; i < 2; i++) await (await fetch(`${gw.proxyUrl}/api/orders/${i}`, { headers: { 'x-user-id': 'u' } })).text();
      await opened;
      svc.mode = 'ok';
    };
    try {
      await trip();
      assert.equal(await opensTotal(), '1');
      gw.runtime.apply(config({ resetTimeoutMs: 30_000 })); // another policy: a new breaker
      assert.equal(gw.runtime.snapshot.breakers.get('svc')?.state, 'closed', 'the rebuilt breaker starts closed');
      assert.equal(await opensTotal(), '1', 'the count goes on');
      await trip();
      assert.equal(await opensTotal(), '2');
      gw.runtime.apply(config({ resetTimeoutMs: 30_000 }, false)); // no route to svc: its breaker is retired
      assert.equal(gw.runtime.snapshot.breakers.has('svc'), false);
      gw.runtime.apply(config({ resetTimeoutMs: 30_000 }));
      assert.equal(await opensTotal(), '2', 'nor when the upstream is routed to again');
    } finally {
      await gw.close();
      await legacy.stop();
      await svc.stop();
    }
  });

  test('clients that hang up before a hung service times out still open its breaker, and do not close it on a half-open trial', async () => {
    const { svc, gw, stop } = await breakerGateway({ volumeThreshold: 2, errorThresholdPercentage: 50, timeoutMs: 200, resetTimeoutMs: 100 });
    /** A client that gives up once the service has the request (before the service's 200 ms timeout). */
    const impatient = async (i: number) => {
      const req = request(`${gw.proxyUrl}/api/orders/${i}`, { headers: { 'x-user-id': 'u' } });
      req.on('error', () => {});
      req.end();
      await svc.nextRequest();
      req.destroy();
    };
    const within = <T>(p: Promise<T>, what: string) => Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} within 3 s`)), 3000))]);
    try {
      const breaker = gw.runtime.snapshot.breakers.get('svc');
      assert.ok(breaker);
      svc.mode = 'stall';
      const opened = once(breaker.events, 'open');
      await impatient(1);
      await impatient(2);
      await within(opened, 'the breaker of a hung service opens, though every client left first,');
      await within(once(breaker.events, 'halfOpen'), 'half-open');
      const closed = once(breaker.events, 'close').then(() => 'closed');
      const reopened = once(breaker.events, 'open').then(() => 'open');
      await impatient(3); // the trial
      assert.equal(await within(Promise.race([closed, reopened]), 'a verdict on the trial'), 'open', 'a trial whose client left is judged by the service');
      const stats = breaker.view().stats;
      assert.deepEqual([stats.successes, stats.failures], [0, 3]);
      const service = gw.runtime.stats('orders').totals('service');
      assert.deepEqual([service.requests, service.errors], [3, 0], "the clients' hang-ups are counted, not as the service's errors");
    } finally {
      await stop();
    }
  });

  test('4xx answers never trip the breaker', async () => {
    const legacy = await fakeUpstream('legacy');
    const { createServer } = await import('node:http');
    const svc = createServer((_req, res) => {
      res.writeHead(404);
      res.end();
    });
    await new Promise<void>((r) => svc.listen(0, '127.0.0.1', () => r()));
    const port = (svc.address() as AddressInfo).port;
    const gw = await startTestGateway(testConfig({
      legacyUrl: legacy.url,
      serviceUrl: `http://127.0.0.1:${port}`,
      flags: { bootstrapFile: featuresFile({ 'strangler.orders': { percent: 100 } }) },
      raw: { policies: { breakers: { default: { volumeThreshold: 2, errorThresholdPercentage: 1 } } } },
    }));
    try {
      for (let i = 0; i < 10; i++) {
        const res = await fetch(`${gw.proxyUrl}/api/orders/${i}`, { headers: { 'x-user-id': 'u' } });
        await res.text();
        assert.equal(res.status, 404);
        assert.equal(res.headers.get('x-strangler-target'), 'service');
      }
      assert.equal(gw.runtime.snapshot.breakers.get('svc')?.state, 'closed');
      const unknown = await fetch(`${gw.proxyUrl}/not-routed`);
      assert.equal(unknown.status, 404);
      assert.equal(((await unknown.json()) as { error: { code: string } }).error.code, 'ROUTE_NOT_FOUND');
    } finally {
      await gw.close();
      await legacy.stop();
      await new Promise<void>((r) => svc.close(() => r()));
    }
  });
});

describe('graceful shutdown', () => {
  test('close() lets an in-flight request finish and refuses new connections', async () => {
    const legacy = await fakeUpstream('legacy');
    const svc = await fakeUpstream('svc');
    const gw = await startTestGateway(testConfig({ legacyUrl: legacy.url, serviceUrl: svc.url }));
    try {
      legacy.mode = 'hold';
      const received = legacy.nextRequest();
      const inflight = fetch(`${gw.proxyUrl}/api/orders/slow`);
      await received;
      const closing = gw.close();
      const refused = await fetch(`${gw.proxyUrl}/api/orders/new`).then(() => 'answered', () => 'refused');
      assert.equal(refused, 'refused');
      legacy.release();
      const res = await inflight;
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { url: string }).url, '/api/orders/slow');
      await closing;
    } finally {
      await legacy.stop();
      await svc.stop();
    }
  });

  test('open WebSockets: close() gives them drainTimeoutMs, then cuts them and their upstream connections; one that ends itself ends the drain early', { timeout: 30_000 }, async () => {
    const legacy = await fakeUpstream('legacy');
    const svc = await fakeUpstream('svc');
    const stop = greetWebSockets(legacy.server, () => 'hi');
    const upstreamSockets: Socket[] = [];
    legacy.server.on('upgrade', (_req, socket: Socket) => upstreamSockets.push(socket));
    const open = async (gw: RunningGateway): Promise<WebSocket> => {
      const ws = new WebSocket(`${gw.proxyUrl.replace(/^http/, 'ws')}/api/orders/live`);
      await once(ws, 'message');
      return ws;
    };
    try {
      // Left open by its client: cut when drainTimeoutMs (300 ms) is up, upstream side included; close() resolves.
      let gw = await startTestGateway(testConfig({ legacyUrl: legacy.url, serviceUrl: svc.url, raw: { proxy: { port: 0, bind: '127.0.0.1', drainTimeoutMs: 300 } } }));
      const ws = await open(gw);
      const closed = once(ws, 'close');
      let closing = gw.close();
      const early = await Promise.race([closed.then(() => 'closed'), new Promise((r) => setTimeout(() => r('open'), 150))]);
      assert.equal(early, 'open', 'the WebSocket is not cut before the drain time is up');
      await closing;
      let cut = false;
      void closed.then(() => { cut = true; });
      await waitFor('the WebSocket to be cut once the drain time is up', () => cut, 5_000);
      assert.equal(upstreamSockets.length, 1);
      await waitFor('the upstream side of the tunnel to close too', () => upstreamSockets[0]?.destroyed === true, 5_000);
      // Closed by its client during the drain: close() does not wait out the rest of drainTimeoutMs (10 s here).
      gw = await startTestGateway(testConfig({ legacyUrl: legacy.url, serviceUrl: svc.url, raw: { proxy: { port: 0, bind: '127.0.0.1', drainTimeoutMs: 10_000 } } }));
      const ws2 = await open(gw);
      closing = gw.close();
      const started = Date.now();
      ws2.close();
      await closing;
      assert.ok(Date.now() - started < 5_000, `close() took ${Date.now() - started} ms after the last WebSocket closed`);
    } finally {
      stop();
      await legacy.stop();
      await svc.stop();
    }
  });
});

