import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { clientResponseHeaders, rawHeader, requestIdOf, rewriteLocation, upstreamRequestHeaders, withoutCookie } from '../../../gateway/proxy/headers.ts';

const req = (headers: Record<string, string>) => ({ headers }) as unknown as IncomingMessage;
const info = { reqId: 'r1', clientIp: '10.1.1.1', proto: 'http' as const, host: 'shop.example', trustForwarded: false, drop: ['x-strangler-override'], dropCookie: 'strangler_override' };

test('request: hop-by-hop and Connection-named headers are dropped, forwarding headers set', () => {
  const out = upstreamRequestHeaders(req({ host: 'shop.example', connection: 'keep-alive, X-Private', 'x-private': '1', 'keep-alive': 'timeout=5', te: 'trailers', 'transfer-encoding': 'chunked', upgrade: 'h2c', 'proxy-authorization': 'x', 'x-strangler-override': 'service.1.x', accept: 'a', 'x-forwarded-for': '6.6.6.6' }), info);
  assert.deepEqual(Object.keys(out).sort(), ['accept', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-request-id']);
  assert.equal(out['x-forwarded-for'], '10.1.1.1');
});

test('request: trusted forwarding headers are extended, not replaced', () => {
  const out = upstreamRequestHeaders(req({ 'x-forwarded-for': '1.1.1.1', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'edge' }), { ...info, trustForwarded: true });
  assert.equal(out['x-forwarded-for'], '1.1.1.1, 10.1.1.1');
  assert.equal(out['x-forwarded-proto'], 'https');
  assert.equal(out['x-forwarded-host'], 'edge');
});

test('request: the tester override cookie never reaches an upstream; every other cookie passes byte for byte', () => {
  const cookie = (value: string, upgrade = false) => upstreamRequestHeaders(req({ cookie: value }), info, upgrade).cookie;
  assert.equal(cookie('a=1; strangler_override=service.1.sig; b="x y"'), 'a=1; b="x y"');
  assert.equal(cookie('strangler_override=service.1.sig; a=1;b=2'), 'a=1;b=2');
  assert.equal(cookie('a=1; strangler_override=service.1.sig'), 'a=1');
  assert.equal(cookie(' strangler_override = legacy.1.sig ;strangler_override=service.1.sig; z=9', true), 'z=9', 'every copy, also on an upgrade');
  assert.equal(cookie('strangler_override=service.1.sig'), undefined, 'no Cookie header when nothing is left');
  assert.equal('cookie' in upstreamRequestHeaders(req({ cookie: 'strangler_override=service.1.sig' }), info), false);
  // Only that exact name: other cookies that contain it, or mention it in a value, are left alone (same string).
  for (const other of ['strangler_override_x=1; a=2', 'Strangler_Override=1', 'a=strangler_override=1', 'strangler_override']) assert.equal(cookie(other), other);
  assert.equal(withoutCookie('a=1;  strangler_override=x;   b=2 ', 'strangler_override'), 'a=1;   b=2');
});

test('upgrade requests keep Connection and Upgrade', () => {
  const out = upstreamRequestHeaders(req({ connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'k' }), info, true);
  assert.equal(out.connection, 'Upgrade');
  assert.equal(out.upgrade, 'websocket');
});

test('response: hop-by-hop and Connection-named headers are dropped, duplicates kept', () => {
  const out = clientResponseHeaders(['Set-Cookie', 'a=1', 'Set-Cookie', 'b=2', 'Connection', 'x-internal', 'X-Internal', 'secret', 'Keep-Alive', 'timeout=5', 'Transfer-Encoding', 'chunked', 'Content-Type', 'text/plain'], 'x-internal');
  assert.deepEqual(out, ['Set-Cookie', 'a=1', 'Set-Cookie', 'b=2', 'Content-Type', 'text/plain']);
});

test('response: a header is read from the raw list in any case, repeats joined as node joins them', () => {
  const raw = ['Connection', 'X-Internal', 'content-type', 'text/plain', 'CONNECTION', 'close', 'X-Request-Id', 'up-1'];
  assert.equal(rawHeader(raw, 'connection'), 'X-Internal, close');
  assert.equal(rawHeader(raw, 'x-request-id'), 'up-1');
  assert.equal(rawHeader(raw, 'x-missing'), undefined);
  assert.deepEqual(clientResponseHeaders(raw, rawHeader(raw, 'connection')), ['content-type', 'text/plain', 'X-Request-Id', 'up-1']);
});

test('Location: a redirect to the upstream\'s own origin (and path prefix) becomes one to the client\'s origin; others are untouched', () => {
  const plain = { from: 'http://legacy.internal:8080', to: 'https://shop.example.com' };
  assert.equal(rewriteLocation('http://legacy.internal:8080/login?next=%2Fcart', plain), 'https://shop.example.com/login?next=%2Fcart');
  assert.equal(rewriteLocation('http://legacy.internal:8080', plain), 'https://shop.example.com/');
  assert.equal(rewriteLocation('http://legacy.internal:8080?a=1', plain), 'https://shop.example.com/?a=1');
  assert.equal(rewriteLocation('http://legacy.internal:80801/x', plain), 'http://legacy.internal:80801/x', 'another port is another origin');
  assert.equal(rewriteLocation('https://legacy.internal:8080/x', plain), 'https://legacy.internal:8080/x', 'another scheme is another origin');
  assert.equal(rewriteLocation('https://accounts.example.org/sso', plain), 'https://accounts.example.org/sso');
  assert.equal(rewriteLocation('/relative/path', plain), '/relative/path');
  // An upstream URL with a path prefix: the prefix is what the gateway adds, so it is taken off again.
  const prefixed = { from: 'http://legacy.internal:8080/app', to: 'http://shop.example.com' };
  assert.equal(rewriteLocation('http://legacy.internal:8080/app/api/orders/2', prefixed), 'http://shop.example.com/api/orders/2');
  assert.equal(rewriteLocation('http://legacy.internal:8080/application', prefixed), 'http://legacy.internal:8080/application', 'a longer segment is not under the prefix');
  // Only the Location header, in any case, and only when a rewrite is given.
  const raw = ['LOCATION', 'http://legacy.internal:8080/a', 'Content-Location', 'http://legacy.internal:8080/b'];
  assert.deepEqual(clientResponseHeaders(raw, undefined, plain), ['LOCATION', 'https://shop.example.com/a', 'Content-Location', 'http://legacy.internal:8080/b']);
  assert.deepEqual(clientResponseHeaders(raw, undefined), raw);
});

test('request ids: well-formed ones pass, others are replaced', () => {
  assert.equal(requestIdOf({ 'x-request-id': 'abc-123.4:5_6' }), 'abc-123.4:5_6');
  assert.match(requestIdOf({ 'x-request-id': 'has space' }), /^[0-9a-f-]{36}$/);
  assert.match(requestIdOf({ 'x-request-id': 'x'.repeat(200) }), /^[0-9a-f-]{36}$/);
  assert.match(requestIdOf({}), /^[0-9a-f-]{36}$/);
});
