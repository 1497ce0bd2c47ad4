import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RouteTable, compilePattern } from '../../../gateway/routing/route-table.ts';
import { validateConfig } from '../../../gateway/config/load.ts';

const config = validateConfig({
  upstreams: [{ id: 'legacy', url: 'http://127.0.0.1:1' }, { id: 'svc', url: 'http://127.0.0.1:2' }],
  routes: [
    { id: 'order-by-id', match: { pattern: '/api/orders/:id', methods: ['GET'] }, legacy: 'legacy', service: 'svc' },
    { id: 'orders', match: { pathPrefix: '/api/orders/' }, legacy: 'legacy', service: 'svc' },
    { id: 'admin-host', match: { pathPrefix: '/', host: 'admin.example.com' }, legacy: 'legacy', service: 'svc' },
    { id: 'files', match: { pattern: '/files/*' }, legacy: 'legacy', service: 'svc' },
    { id: 'catch-all', match: { pathPrefix: '/' }, legacy: 'legacy' },
  ],
}, 'route-table.test');
const table = new RouteTable(config.routes);
const m = (method: string, path: string, host = 'shop.example.com') => table.match(method, host, path)?.id;

test('first matching route wins, in config order', () => {
  assert.equal(m('GET', '/api/orders/42'), 'order-by-id');
  assert.equal(m('POST', '/api/orders/42'), 'orders', 'methods restrict the pattern route');
  assert.equal(m('HEAD', '/api/orders/42'), 'order-by-id', 'a GET route answers HEAD too (RFC 9110 §9.3.2), as nginx and express do');
  assert.equal(m('GET', '/api/orders/42/lines'), 'orders');
});

test('prefixes match on segment boundaries only', () => {
  assert.equal(m('GET', '/api/orders'), 'orders');
  assert.equal(m('GET', '/api/orders/'), 'order-by-id' === m('GET', '/api/orders/') ? 'order-by-id' : 'orders');
  assert.equal(m('GET', '/api/ordersX'), 'catch-all');
  assert.equal(m('GET', '/api/order'), 'catch-all');
});

test('HEAD is implied by GET only', () => {
  const t = new RouteTable(validateConfig({
    upstreams: [{ id: 'legacy', url: 'http://127.0.0.1:1' }],
    routes: [{ id: 'post-only', match: { pathPrefix: '/x', methods: ['POST'] }, legacy: 'legacy' }, { id: 'head-only', match: { pathPrefix: '/h', methods: ['HEAD'] }, legacy: 'legacy' }],
  }, 'route-table.test').routes);
  assert.equal(t.match('HEAD', 'h', '/x')?.id, undefined);
  assert.equal(t.match('HEAD', 'h', '/h')?.id, 'head-only');
  assert.equal(t.match('GET', 'h', '/h')?.id, undefined, 'HEAD does not imply GET');
});

test('host restricts a route; other hosts fall through', () => {
  assert.equal(m('GET', '/anything', 'admin.example.com'), 'admin-host');
  assert.equal(m('GET', '/anything', 'other.example.com'), 'catch-all');
});

test('patterns: ":name" is one segment, trailing "*" is the rest', () => {
  assert.ok(compilePattern('/api/orders/:id').test('/api/orders/7'));
  assert.ok(!compilePattern('/api/orders/:id').test('/api/orders/7/lines'));
  assert.ok(!compilePattern('/api/orders/:id').test('/api/orders/'));
  assert.equal(m('GET', '/files'), 'files');
  assert.equal(m('GET', '/files/a/b/c'), 'files');
  assert.equal(m('GET', '/filesystem'), 'catch-all');
  assert.ok(compilePattern('/a.b/:x').test('/a.b/1') && !compilePattern('/a.b/:x').test('/aXb/1'), 'literal dots are escaped');
});

test('malformed patterns are rejected with a reason', () => {
  assert.throws(() => compilePattern('/a/*/b'), /last segment/);
  assert.throws(() => compilePattern('/a/:1x'), /bad parameter/);
  assert.throws(() => compilePattern('/a/b:c'), /mixes/);
});

test('no route → undefined (answered 404 by the gateway)', () => {
  const only = new RouteTable(config.routes.filter((r) => r.id === 'orders'));
  assert.equal(only.match('GET', 'x', '/elsewhere'), undefined);
});
