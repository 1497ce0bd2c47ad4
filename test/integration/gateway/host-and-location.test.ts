/**
 * What an upstream sees as Host, and what the client sees as Location. By default an upstream gets its own host
 * (the client's is in X-Forwarded-Host); upstreams[].preserveHost passes the client's Host through, for applications
 * that route or build URLs by Host. A redirect to the upstream's own origin, which clients cannot reach, is
 * rewritten to the origin the client used (as nginx's proxy_redirect default does).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RunningGateway } from '../../../gateway/server.ts';
import { featuresFile, startTestGateway, testConfig } from '../../helpers/gateway.ts';
import { firstWebSocketMessage, greetWebSockets } from '../../helpers/websocket.ts';

/** An upstream that echoes the Host it got and redirects to its own absolute URLs. */
async function upstream(): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    const own = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const path = req.url ?? '/';
    if (path.endsWith('/redirect')) res.writeHead(302, { location: `${own}${path.replace(/redirect$/, 'after')}?from=legacy` });
    else if (path.endsWith('/created')) res.writeHead(201, { location: `${own}/app/api/orders/77` });
    else if (path.endsWith('/elsewhere')) res.writeHead(302, { location: 'https://sso.example.org/login' });
    else res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ host: req.headers.host, forwardedHost: req.headers['x-forwarded-host'], path }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

function get(base: string, path: string, headers: Record<string, string>): Promise<{ status: number; headers: IncomingHttpHeaders; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    request(`${base}${path}`, { headers }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} }));
    }).on('error', reject).end();
  });
}

describe('Host and Location', () => {
  let up: { url: string; server: Server };
  const gateways: RunningGateway[] = [];
  before(async () => {
    up = await upstream();
  });
  after(async () => {
    for (const g of gateways) await g.close();
    up.server.closeAllConnections();
    up.server.close();
  });

  const start = async (legacy: Record<string, unknown>, proxy: Record<string, unknown> = {}) => {
    const gw = await startTestGateway(testConfig({
      legacyUrl: up.url,
      serviceUrl: up.url,
      raw: {
        upstreams: [{ id: 'legacy', ...legacy }],
        routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy' }],
        proxy: { port: 0, bind: '127.0.0.1', ...proxy },
      },
    }));
    gateways.push(gw);
    return gw;
  };

  test('by default the upstream gets its own Host and a redirect to itself is rewritten to the client\'s origin', async () => {
    const gw = await start({ url: up.url });
    const echo = await get(gw.proxyUrl, '/api/orders/1', { host: 'shop.example.com' });
    assert.equal(echo.body.host, new URL(up.url).host);
    assert.equal(echo.body.forwardedHost, 'shop.example.com');
    const redirect = await get(gw.proxyUrl, '/api/orders/redirect', { host: 'shop.example.com' });
    assert.equal(redirect.status, 302);
    assert.equal(redirect.headers.location, 'http://shop.example.com/api/orders/after?from=legacy');
    const elsewhere = await get(gw.proxyUrl, '/api/orders/elsewhere', { host: 'shop.example.com' });
    assert.equal(elsewhere.headers.location, 'https://sso.example.org/login', 'a redirect to another site is left alone');
  });

  test('behind a TLS terminator whose X-Forwarded-* are trusted, the rewritten Location keeps https and the public host', async () => {
    const gw = await start({ url: up.url }, { trustForwardedHeaders: true });
    const redirect = await get(gw.proxyUrl, '/api/orders/redirect', { host: 'internal-lb:8080', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'shop.example.com' });
    assert.equal(redirect.headers.location, 'https://shop.example.com/api/orders/after?from=legacy');
  });

  test('behind a trusted TLS terminator, a newly minted session cookie is Secure; over plain HTTP it is not', async () => {
    const config = (trust: boolean) => testConfig({
      legacyUrl: up.url,
      serviceUrl: up.url,
      flags: { bootstrapFile: featuresFile({ 'strangler.orders': { percent: 50 } }) },
      raw: { proxy: { port: 0, bind: '127.0.0.1', trustForwardedHeaders: trust } },
    });
    for (const trust of [true, false]) {
      const gw = await startTestGateway(config(trust));
      gateways.push(gw);
      const res = await get(gw.proxyUrl, '/api/orders/1', { 'x-forwarded-proto': 'https' });
      const cookie = String(res.headers['set-cookie']?.[0] ?? '');
      assert.match(cookie, /^strangler_sid=/);
      assert.equal(cookie.endsWith('; Secure'), trust, cookie);
    }
  });

  test('an upstream URL with a path prefix: the prefix comes off a rewritten Location (201 Created included)', async () => {
    const gw = await start({ url: `${up.url}/app` });
    const echo = await get(gw.proxyUrl, '/api/orders/1', { host: 'shop.example.com' });
    assert.equal(echo.body.path, '/app/api/orders/1');
    const created = await get(gw.proxyUrl, '/api/orders/created', { host: 'shop.example.com' });
    assert.equal(created.status, 201);
    assert.equal(created.headers.location, 'http://shop.example.com/api/orders/77');
  });

  test('preserveHost: the upstream gets the client\'s Host, for requests and WebSocket upgrades', async () => {
    const gw = await start({ url: up.url, preserveHost: true });
    const echo = await get(gw.proxyUrl, '/api/orders/1', { host: 'tenant-a.shop.example.com' });
    assert.equal(echo.body.host, 'tenant-a.shop.example.com');
    assert.equal(echo.body.forwardedHost, 'tenant-a.shop.example.com');

    const stop = greetWebSockets(up.server, (req) => `host ${req.headers.host}`);
    try {
      assert.equal(await firstWebSocketMessage(`${gw.proxyUrl}/api/orders/live`, { host: 'tenant-b.shop.example.com' }), 'host tenant-b.shop.example.com');
    } finally {
      stop();
    }
  });
});
