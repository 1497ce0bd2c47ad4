import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { clientResponseHeaders, rawHeader, requestIdOf, upstreamRequestHeaders } from '../../../gateway/proxy/headers.ts';

const req = (headers: Record<string, string>) => ({ headers }) as unknown as IncomingMessage;
const info = { reqId: 'r1', clientIp: '10.1.1.1', proto: 'http' as const, host: 'shop.example', trustForwarded: false, drop: ['x-strangler-override'] };

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

test('request ids: well-formed ones pass, others are replaced', () => {
  assert.equal(requestIdOf({ 'x-request-id': 'abc-123.4:5_6' }), 'abc-123.4:5_6');
  assert.match(requestIdOf({ 'x-request-id': 'has space' }), /^[0-9a-f-]{36}$/);
  assert.match(requestIdOf({ 'x-request-id': 'x'.repeat(200) }), /^[0-9a-f-]{36}$/);
  assert.match(requestIdOf({}), /^[0-9a-f-]{36}$/);
});
