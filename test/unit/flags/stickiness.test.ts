/**
 * flag.stickiness vs the gateway's context (flags/context.ts): the context carries userId (identified) or sessionId
 * (anonymous), so only Unleash's "default" stickiness buckets every request. Any other value is refused at load.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FlagClient } from '../../../flags/client.ts';
import { Identifier } from '../../../flags/context.ts';
import { ConfigError, validateConfig } from '../../../gateway/config/load.ts';
import { featuresFile } from '../../helpers/gateway.ts';
import { silentLogger } from '../../../common/logger.ts';

const raw = (flag?: Record<string, unknown>) => ({
  upstreams: [{ id: 'legacy', url: 'http://127.0.0.1:1' }, { id: 'svc', url: 'http://127.0.0.1:2' }],
  routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy', service: 'svc', ...(flag ? { flag } : {}) }],
  identity: { sessionSecret: 's'.repeat(32), userKey: [{ header: 'x-user-id' }] },
});

test('a stickiness the gateway context does not honour is refused at load, with the path, the allowed value and why', () => {
  for (const stickiness of ['userId', 'sessionId', 'tenantId', 'random', 'Default']) {
    let err: unknown;
    try {
      validateConfig(raw({ stickiness }), 'strangler.yaml');
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof ConfigError, `${stickiness} is refused`);
    assert.equal(err.code, 'CONFIG_INVALID');
    assert.deepEqual(err.problems.map((p) => [p.path, p.expected, p.found]), [['routes[0].flag.stickiness', 'one of "default"', `string "${stickiness}"`]], stickiness);
    assert.match(err.problems[0]!.hint, /only "default" \(userId, else sessionId\) puts both in the rollout.*"random" would move a user between legacy and the service/);
  }
  assert.equal(validateConfig(raw(), 'strangler.yaml').routes[0]!.flag.stickiness, 'default');
  assert.equal(validateConfig(raw({ stickiness: 'default' }), 'strangler.yaml').routes[0]!.flag.stickiness, 'default');
});

test('with "default" stickiness identified and anonymous requests are both in the rollout, each stable per key', async () => {
  const config = validateConfig(raw(), 'strangler.yaml');
  const flag = 'strangler.orders';
  const client = new FlagClient({ ...config.flags, bootstrapFile: featuresFile({ [flag]: { percent: 50 } }), url: null, backupPath: null }, silentLogger);
  await client.start();
  try {
    const identifier = new Identifier(config.identity);
    const share = (contexts: { userId?: string; sessionId?: string }[]) => contexts.filter((c) => client.isEnabled(flag, c)).length / contexts.length;
    const users = Array.from({ length: 1000 }, (_, i) => identifier.identify({ 'x-user-id': `user-${i}` }));
    const anonymous = Array.from({ length: 1000 }, () => identifier.identify({}));
    assert.ok(users.every((u) => u.source === 'user') && anonymous.every((a) => a.source === 'new-session'));
    for (const [who, ids] of [['identified', users], ['anonymous', anonymous]] as const) {
      const s = share(ids.map((i) => i.context));
      assert.ok(Math.abs(s - 0.5) < 0.06, `${who}: ${s} on the service at 50 %`);
      assert.deepEqual(ids.map((i) => client.isEnabled(flag, i.context)), ids.map((i) => client.isEnabled(flag, i.context)), `${who}: the same decision for the same key`);
    }
  } finally {
    client.close();
  }
});
