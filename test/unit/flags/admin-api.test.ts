import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { StranglerError } from '../../../common/errors.ts';
import { UnleashAdminApi } from '../../../flags/admin-api.ts';

// Answers that a healthy Unleash never gives, to check the error mapping; the real-server cases are in
// test/integration/flags/admin-api.test.ts.
let server: Server;
let base: string;
const seenAuth: (string | undefined)[] = [];
before(async () => {
  server = createServer((req, res) => {
    seenAuth.push(req.headers.authorization);
    if (req.url?.endsWith('/boom')) res.writeHead(503, { 'content-type': 'text/plain' }).end('upstream sad');
    else if (req.url?.endsWith('/notjson')) res.writeHead(200, { 'content-type': 'text/html' }).end('<html>login</html>');
    else if (req.url?.endsWith('/stall')) return; // never answers
    else res.writeHead(200).end('');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
after(() => {
  server.closeAllConnections();
  server.close();
});

async function code(promise: Promise<unknown>): Promise<StranglerError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof StranglerError);
    return err;
  }
  assert.fail('expected a StranglerError');
}

test('5xx, non-JSON bodies and timeouts map to stable codes that name the call; the token is sent but never echoed', async () => {
  const api = new UnleashAdminApi({ baseUrl: `${base}/api/`, token: '*:*.secret-token', timeoutMs: 300 });
  const boom = await code(api.getFeature('default', 'boom'));
  assert.equal(boom.code, 'UNLEASH_BAD_RESPONSE');
  assert.match(boom.message, /^Unleash GET \/api\/admin\/projects\/default\/features\/boom: HTTP 503 upstream sad$/);
  const html = await code(api.getFeature('default', 'notjson'));
  assert.equal(html.code, 'UNLEASH_BAD_RESPONSE');
  assert.match(html.message, /body that is not JSON/);
  const stall = await code(api.getFeature('default', 'stall'));
  assert.equal(stall.code, 'UNLEASH_UNREACHABLE');
  assert.match(stall.message, /no answer within 300 ms/);
  for (const err of [boom, html, stall]) assert.ok(!err.message.includes('secret-token'));
  assert.ok(seenAuth.every((h) => h === '*:*.secret-token'), 'Authorization carries the token without "Bearer"');
  assert.equal(await api.setEnvironmentEnabled('default', 'ok', 'development', false), undefined, 'an empty 200 body is fine');
});
