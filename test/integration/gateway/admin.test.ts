/**
 * Control plane with supertest: every /admin endpoint and /metrics needs the bearer token; shapes as documented
 * in gateway/admin/types.ts and the README; GET never changes state; pushes act at once.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { createAdminApp } from '../../../gateway/admin/app.ts';
import { localControlPlane } from '../../../gateway/server.ts';
import { Runtime } from '../../../gateway/runtime.ts';
import { featuresFile, testConfig } from '../../helpers/gateway.ts';
import { silentLogger } from '../../../common/logger.ts';
import { fakeUpstream, type FakeUpstream } from '../../helpers/upstream.ts';
import type { RoutesResponse } from '../../../gateway/admin/types.ts';

const TOKEN = 'test-admin-token-0123456789';
const auth = { authorization: `Bearer ${TOKEN}` };

describe('admin API', () => {
  let runtime: Runtime;
  let app: ReturnType<typeof createAdminApp>;
  let legacy: FakeUpstream;

  before(async () => {
    legacy = await fakeUpstream('legacy');
    const config = testConfig({
      legacyUrl: legacy.url,
      serviceUrl: 'http://127.0.0.1:9',
      flags: { bootstrapFile: featuresFile({ 'strangler.orders': { percent: 40 } }), token: 'backend-secret-token', adminToken: 'admin-secret-token' },
      raw: { kafka: { brokers: ['127.0.0.1:9'], ssl: { caFile: 'ca.pem' }, sasl: { mechanism: 'scram-sha-512', username: 'strangler', password: 'kafka-sasl-secret' } } },
    });
    runtime = new Runtime(config, silentLogger);
    await runtime.flags.start();
    app = createAdminApp(localControlPlane(runtime), { token: TOKEN, log: silentLogger });
  });
  after(async () => {
    runtime.close();
    await legacy.stop();
  });

  test('401 without or with a wrong token, on every protected endpoint', async () => {
    const endpoints: [string, string][] = [['get', '/admin/routes'], ['get', '/admin/routes/orders'], ['get', '/admin/upstreams'], ['get', '/admin/breakers'], ['get', '/admin/config'], ['get', '/metrics'], ['post', '/admin/flags/refresh'], ['post', '/admin/routes/orders/shift'], ['post', '/admin/routes/orders/rollback'], ['post', '/admin/routes/orders/resume']];
    for (const [method, path] of endpoints) {
      const none = await (method === 'get' ? request(app).get(path) : request(app).post(path));
      assert.equal(none.status, 401, `${method} ${path} without token`);
      assert.equal(none.body.error.code, 'ADMIN_UNAUTHORIZED');
      const wrong = await (method === 'get' ? request(app).get(path) : request(app).post(path)).set('authorization', 'Bearer nope');
      assert.equal(wrong.status, 401, `${method} ${path} with a wrong token`);
    }
  });

  test('health and readiness are open and say why a gateway is degraded', async () => {
    assert.deepEqual((await request(app).get('/healthz').expect(200)).body, { status: 'ok' });
    const ready = await request(app).get('/readyz').expect(200);
    assert.deepEqual(ready.body, { status: 'ready', degraded: null, flagsSynchronized: false });
  });

  test('GET /admin/routes has the documented shape', async () => {
    const res = await request(app).get('/admin/routes').set(auth).expect(200);
    const body = res.body as RoutesResponse;
    assert.deepEqual(Object.keys(body).sort(), ['gateway', 'routes']);
    assert.deepEqual(Object.keys(body.gateway).sort(), ['degraded', 'flagsError', 'flagsSynchronized', 'instanceId', 'ready', 'workers']);
    const route = body.routes[0];
    assert.ok(route);
    assert.deepEqual(Object.keys(route).sort(), ['breaker', 'flag', 'flagState', 'guard', 'id', 'legacy', 'match', 'plan', 'service', 'stats', 'totals', 'windowMs']);
    assert.deepEqual(route.flagState, { known: true, enabled: true, rolloutPercent: 40, localOverride: null });
    assert.deepEqual(route.flag, { name: 'strangler.orders', project: 'default', environment: 'development' });
    assert.deepEqual(Object.keys(route.stats.service).sort(), ['errorRate', 'errors', 'fallbacks', 'histogram', 'p50Ms', 'p99Ms', 'requests', 'share']);
    assert.equal(route.stats.service.histogram.counts.length, route.stats.service.histogram.boundsMs.length);
    await request(app).get('/admin/routes/orders').set(auth).expect(200);
    const missing = await request(app).get('/admin/routes/nope').set(auth).expect(404);
    assert.equal(missing.body.error.code, 'ADMIN_NOT_FOUND');
    assert.match(missing.body.error.message, /known: orders/);
  });

  test('GET /admin/config redacts secrets; GET /admin/upstreams probes health', async () => {
    const res = await request(app).get('/admin/config').set(auth).expect(200);
    const text = JSON.stringify(res.body);
    for (const secret of ['backend-secret-token', 'admin-secret-token', 'test-session-secret', 'test-override-secret', 'kafka-sasl-secret', TOKEN]) assert.ok(!text.includes(secret), `${secret} is not shown`);
    assert.equal(res.body.config.flags.token, '[redacted]');
    assert.deepEqual(res.body.config.kafka.sasl, { mechanism: 'scram-sha-512', username: 'strangler', password: '[redacted]' });
    assert.deepEqual(res.body.reload, { lastReloadAt: null, lastError: null, restartRequired: [] });
    const ups = await request(app).get('/admin/upstreams').set(auth).expect(200);
    const byId = Object.fromEntries((ups.body.upstreams as { id: string; health: { healthy: boolean } }[]).map((u) => [u.id, u.health.healthy]));
    assert.deepEqual(byId, { legacy: true, svc: false });
  });

  test('/metrics is Prometheus text with per route × target series', async () => {
    const res = await request(app).get('/metrics').set(auth).expect(200);
    assert.match(res.headers['content-type'] ?? '', /text\/plain/);
    for (const line of ['strangler_requests_total{route="orders",target="legacy"} 0', 'strangler_flag_rollout_percent{route="orders",flag="strangler.orders"} 40', 'strangler_breaker_state{route="orders",upstream="svc"} 0', 'strangler_flags_ready 1', 'strangler_request_duration_seconds_bucket{route="orders",target="service",le="+Inf"} 0']) {
      assert.ok(res.text.includes(line), `metrics include ${line}`);
    }
  });

  test('a rollback push (ours, or an Unleash webhook event) sends the route to legacy at once; resume clears it', async () => {
    await request(app).post('/admin/flags/refresh').set(auth).send({ flag: 'strangler.orders', action: 'rollback' }).expect(200);
    assert.equal(runtime.flags.state('strangler.orders').localOverride, 'legacy');
    assert.equal(runtime.flags.isEnabled('strangler.orders', { userId: 'anyone' }), false);
    await request(app).post('/admin/flags/refresh').set(auth).send({ type: 'feature-environment-enabled', featureName: 'strangler.orders', environment: 'development' }).expect(200);
    assert.equal(runtime.flags.state('strangler.orders').localOverride, null);
    await request(app).post('/admin/flags/refresh').set(auth).send({ type: 'feature-environment-disabled', featureName: 'strangler.orders' }).expect(200);
    assert.equal(runtime.flags.state('strangler.orders').localOverride, 'legacy');
    await request(app).post('/admin/flags/refresh').set(auth).send({ flag: 'strangler.orders', action: 'resume' }).expect(200);
  });

  test('traffic endpoints explain what is missing, and bad bodies get clear errors', async () => {
    const noFlags = await request(app).post('/admin/routes/orders/shift').set(auth).send({ percent: 10 }).expect(400);
    assert.match(noFlags.body.error.message, /flags.adminToken/);
    const badJson = await request(app).post('/admin/flags/refresh').set(auth).set('content-type', 'application/json').send('{nope').expect(400);
    assert.equal(badJson.body.error.code, 'ADMIN_BAD_REQUEST');
    const unknown = await request(app).get('/admin/nothing').set(auth).expect(404);
    assert.equal(unknown.body.error.code, 'ADMIN_NOT_FOUND');
  });

  test('GET requests change nothing', async () => {
    const before = JSON.stringify(runtime.flags.state('strangler.orders'));
    for (const path of ['/admin/routes', '/admin/breakers', '/admin/config', '/metrics']) await request(app).get(path).set(auth).expect(200);
    assert.equal(JSON.stringify(runtime.flags.state('strangler.orders')), before);
  });
});
