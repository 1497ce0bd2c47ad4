/**
 * https:// upstreams: the gateway verifies them against upstreams[].tls.caFile (or the system CAs), presents a
 * client certificate when one is configured, keeps TLS connections alive, routes WebSocket upgrades over TLS, and
 * treats a failed certificate check as "never connected" (so even a POST may fall back to legacy). Real TLS
 * servers with the test-only certificates of test/fixtures/kafka-tls.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { isStranglerError } from '../../../common/errors.ts';
import { ConfigError } from '../../../gateway/config/load.ts';
import type { RunningGateway } from '../../../gateway/server.ts';
import { fakeUpstream, type FakeUpstream } from '../../helpers/upstream.ts';
import { featuresFile, startTestGateway, testConfig } from '../../helpers/gateway.ts';
import { firstWebSocketMessage, greetWebSockets } from '../../helpers/websocket.ts';

const TLS_DIR = resolve(import.meta.dirname, '../../fixtures/kafka-tls');
const pem = (name: string) => join(TLS_DIR, name);
/** The server certificate (CN=localhost, SAN IP:127.0.0.1), self-signed: it is its own CA. */
const SERVER_CA = pem('broker.crt');
const FLAG = 'strangler.orders';

interface TlsUpstream {
  url: string;
  server: Server;
  /** TLS handshakes completed, and the client certificate CN of each (null without one). */
  handshakes: (string | null)[];
}

/** The CN of the client certificate a TLS connection presented, null without one. */
function clientCn(socket: TLSSocket): string | null {
  const cn = socket.getPeerCertificate().subject?.CN;
  return typeof cn === 'string' ? cn : null;
}

const servers: Server[] = [];
after(() => {
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
});

/** An https server answering {from, cn}; with `clientCa` it requires a client certificate signed by it. */
async function tlsUpstream(name: string, clientCa?: string): Promise<TlsUpstream> {
  const handshakes: (string | null)[] = [];
  const server = createServer({
    cert: readFileSync(pem('broker.crt')),
    key: readFileSync(pem('broker.key')),
    ...(clientCa ? { ca: readFileSync(clientCa), requestCert: true, rejectUnauthorized: true } : {}),
    keepAliveTimeout: 60_000,
  }, (req, res) => {
    req.resume();
    const cn = clientCn(req.socket as TLSSocket);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ from: name, cn, url: req.url, host: req.headers.host }));
  });
  server.on('secureConnection', (socket: TLSSocket) => handshakes.push(clientCn(socket)));
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, server, handshakes };
}

async function body(res: Response): Promise<Record<string, unknown>> {
  return (await res.json()) as Record<string, unknown>;
}

describe('https upstreams', () => {
  let legacy: TlsUpstream;
  let svc: TlsUpstream;
  let plainLegacy: FakeUpstream;
  const gateways: RunningGateway[] = [];
  before(async () => {
    legacy = await tlsUpstream('legacy');
    svc = await tlsUpstream('svc', pem('client-ca.crt'));
    plainLegacy = await fakeUpstream('plain-legacy');
  });
  after(async () => {
    for (const g of gateways) await g.close();
    await plainLegacy.stop();
  });

  const start = async (percent: number, upstreams: Record<string, unknown>[]) => {
    const gw = await startTestGateway(testConfig({ legacyUrl: '', serviceUrl: '', raw: { upstreams }, flags: { bootstrapFile: featuresFile({ [FLAG]: { percent } }) } }));
    gateways.push(gw);
    return gw;
  };

  test('legacy verified against tls.caFile and a service that requires our client certificate (mutual TLS), over kept-alive connections', async () => {
    const gw = await start(50, [
      { id: 'legacy', url: legacy.url, tls: { caFile: SERVER_CA } },
      { id: 'svc', url: svc.url, tls: { caFile: SERVER_CA, certFile: pem('client.crt'), keyFile: pem('client.key') } },
    ]);
    const legacyBefore = legacy.handshakes.length;
    const svcBefore = svc.handshakes.length;
    const seen = new Set<string>();
    for (let i = 0; i < 40; i++) {
      const res = await fetch(`${gw.proxyUrl}/api/orders/${i}?q=1`, { headers: { 'x-user-id': `user-${i}` } });
      const b = await body(res);
      assert.equal(res.status, 200);
      assert.equal(b.from, res.headers.get('x-strangler-target') === 'service' ? 'svc' : 'legacy');
      assert.equal(b.url, `/api/orders/${i}?q=1`);
      assert.equal(b.host, new URL(b.from === 'svc' ? svc.url : legacy.url).host, 'Host is the upstream\'s own authority');
      if (b.from === 'svc') assert.equal(b.cn, 'strangler-sync', 'the service saw our client certificate');
      seen.add(String(b.from));
    }
    assert.deepEqual([...seen].sort(), ['legacy', 'svc'], '40 users at 50 % reach both');
    // Sequential requests reuse one kept-alive TLS connection per upstream instead of a handshake each.
    assert.equal(legacy.handshakes.length - legacyBefore, 1);
    assert.deepEqual(svc.handshakes.slice(svcBefore), ['strangler-sync']);

    const ups = await fetch(`${gw.adminUrl}/admin/upstreams`, { headers: { authorization: `Bearer ${gw.adminToken}` } });
    const health = Object.fromEntries(((await body(ups)).upstreams as { id: string; health: { status: number | null; error: string | null } }[]).map((u) => [u.id, u.health]));
    assert.equal(health.legacy?.status, 200, `admin probe over TLS with the upstream's CA: ${JSON.stringify(health.legacy)}`);
    assert.equal(health.svc?.status, 200, `admin probe with the client certificate: ${JSON.stringify(health.svc)}`);
  });

  test('preserveHost on a TLS upstream: the client\'s Host goes through, the certificate is still checked against the upstream\'s own address', async () => {
    const gw = await start(0, [
      { id: 'legacy', url: legacy.url, preserveHost: true, tls: { caFile: SERVER_CA } },
      { id: 'svc', url: svc.url },
    ]);
    const res = await new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
      httpRequest(`${gw.proxyUrl}/api/orders/1`, { headers: { host: 'tenant-a.shop.example.com', 'x-user-id': 'u1' } }, (r) => {
        let text = '';
        r.on('data', (c: Buffer) => (text += c.toString()));
        r.on('end', () => resolve({ status: r.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> }));
      }).on('error', reject).end();
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.from, 'legacy');
    assert.equal(res.body.host, 'tenant-a.shop.example.com');
  });

  test('WebSocket upgrades reach a TLS service with its CA and client certificate, with its own Host or (preserveHost) the client\'s', async () => {
    const stop = greetWebSockets(svc.server, (req, socket) => `hello ${clientCn(socket as TLSSocket)} at ${req.headers.host}`);
    try {
      for (const preserveHost of [false, true]) {
        const gw = await start(100, [
          { id: 'legacy', url: legacy.url, tls: { caFile: SERVER_CA } },
          { id: 'svc', url: svc.url, preserveHost, tls: { caFile: SERVER_CA, certFile: pem('client.crt'), keyFile: pem('client.key') } },
        ]);
        const message = await firstWebSocketMessage(`${gw.proxyUrl}/api/orders/live`, { 'x-user-id': 'ws-user', host: 'tenant-b.shop.example.com' });
        // With the client's Host passed through, the certificate is still checked against the upstream's address.
        assert.equal(message, `hello strangler-sync at ${preserveHost ? 'tenant-b.shop.example.com' : new URL(svc.url).host}`);
      }
    } finally {
      stop();
    }
  });

  test('a service whose certificate fails the check counts as never connected: GET and even POST fall back to legacy', async () => {
    const gw = await start(100, [
      { id: 'legacy', url: plainLegacy.url },
      { id: 'svc', url: svc.url, tls: { caFile: pem('other-ca.crt'), certFile: pem('client.crt'), keyFile: pem('client.key') } },
    ]);
    for (const method of ['GET', 'POST']) {
      const res = await fetch(`${gw.proxyUrl}/api/orders/1`, { method, headers: { 'x-user-id': 'u1' }, ...(method === 'POST' ? { body: '{"a":1}' } : {}) });
      const b = await body(res);
      assert.equal(res.status, 200, `${method}: ${JSON.stringify(b)}`);
      assert.equal(b.from, 'plain-legacy');
      assert.equal(res.headers.get('x-strangler-fallback'), 'service-connect', method);
    }
  });

  test('a legacy upstream whose certificate is not trusted (system CAs, no caFile): 502 naming the TLS error', async () => {
    const gw = await start(0, [
      { id: 'legacy', url: legacy.url },
      { id: 'svc', url: svc.url },
    ]);
    const res = await fetch(`${gw.proxyUrl}/api/orders/1`, { headers: { 'x-user-id': 'u1' } });
    const b = (await body(res)) as { error: { code: string; message: string } };
    assert.equal(res.status, 502);
    assert.equal(b.error.code, 'UPSTREAM_CONNECT_FAILED');
    assert.match(b.error.message, /DEPTH_ZERO_SELF_SIGNED_CERT/);
  });

  test('config: tls on an http:// upstream, unreadable PEM files and a key that is not the certificate\'s are reported by field', async () => {
    assert.throws(() => testConfig({ legacyUrl: plainLegacy.url, serviceUrl: svc.url, raw: { upstreams: [{ id: 'legacy', url: plainLegacy.url, tls: { caFile: SERVER_CA } }, { id: 'svc', url: svc.url }] } }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems.map((p) => p.path), ['upstreams[0].tls']);
      return true;
    });
    const missing = join(mkdtempSync(join(tmpdir(), 'strangler-tls-')), 'nope.pem');
    await assert.rejects(start(0, [
      { id: 'legacy', url: legacy.url, tls: { caFile: missing } },
      { id: 'svc', url: svc.url, tls: { certFile: pem('client.crt'), keyFile: pem('untrusted-client.key') } },
    ]), (err: unknown) => {
      assert.ok(err instanceof ConfigError && isStranglerError(err));
      assert.equal(err.code, 'CONFIG_INVALID');
      assert.deepEqual(err.problems.map((p) => p.path), ['upstreams[0].tls.caFile', 'upstreams[1].tls.keyFile'], 'both listed at once');
      assert.match(err.problems[0]?.found ?? '', /ENOENT/);
      assert.match(err.problems[1]?.found ?? '', /KEY_VALUES_MISMATCH/);
      return true;
    });
  });

  test('a reload whose PEM file is unreadable keeps the last good config; a fixed file is picked up', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'strangler-tls-reload-'));
    const ca = join(dir, 'ca.pem');
    writeFileSync(ca, readFileSync(SERVER_CA));
    const file = join(dir, 'strangler.json');
    const write = (caFile: string) => writeFileSync(file, JSON.stringify({
      upstreams: [{ id: 'legacy', url: legacy.url, tls: { caFile } }, { id: 'svc', url: svc.url }],
      routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy' }],
      flags: { url: null, backupPath: null },
      proxy: { port: 0, bind: '127.0.0.1' },
      admin: { port: 0, token: 'test-admin-token-0123456789' },
      identity: { sessionSecret: 'test-session-secret-0123456789' },
    }));
    write(ca);
    const { loadConfigFile } = await import('../../../gateway/config/load.ts');
    const gw = await startTestGateway(loadConfigFile(file));
    gateways.push(gw);
    assert.equal((await fetch(`${gw.proxyUrl}/api/orders/1`)).status, 200);

    write(join(dir, 'missing.pem'));
    assert.equal(gw.runtime.reloadFromFile(), false);
    assert.match(gw.runtime.reload.lastError?.message ?? '', /upstreams\[0\]\.tls\.caFile/);
    assert.equal((await fetch(`${gw.proxyUrl}/api/orders/2`)).status, 200, 'still served with the last good TLS settings');

    writeFileSync(ca, readFileSync(pem('other-ca.crt')));
    write(ca);
    assert.equal(gw.runtime.reloadFromFile(), true);
    assert.equal((await fetch(`${gw.proxyUrl}/api/orders/3`)).status, 502, 'the changed CA file took effect (a new agent, not the old connections)');
  });
});
