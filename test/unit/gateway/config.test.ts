import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfigFile, parseConfigText, validateConfig } from '../../../gateway/config/load.ts';

const base = () => ({
  upstreams: [{ id: 'legacy', url: 'http://127.0.0.1:1' }, { id: 'svc', url: 'http://127.0.0.1:2' }],
  routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy', service: 'svc' }],
});

function problems(raw: unknown, env: NodeJS.ProcessEnv = {}): { path: string; expected: string; found: string; hint: string }[] {
  try {
    validateConfig(raw, 'strangler.yaml', env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    assert.equal(err.code, 'CONFIG_INVALID');
    assert.match(err.message, /^strangler\.yaml: \d+ problems?/);
    return [...err.problems];
  }
  assert.fail('expected a ConfigError');
}

test('a valid file gets every default and derived flag settings, and is frozen', () => {
  const c = validateConfig(base(), 'x.yaml');
  const route = c.routes[0];
  assert.ok(route);
  assert.deepEqual(route.flag, { name: 'strangler.orders', project: 'default', environment: 'development', stickiness: 'default', groupId: 'strangler.orders', initialPercent: 0 });
  assert.equal(route.breaker, 'default');
  assert.equal(c.policies.breakers.default?.volumeThreshold, 20);
  assert.equal(c.policies.fallbacks.default?.maxReplayBodyBytes, 1_048_576);
  assert.equal(c.admin.bind, '127.0.0.1');
  assert.equal(c.upstreams[0]?.timeoutMs, 15_000);
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.routes[0]));
});

test('every problem is reported at once, each with path, expected, found and hint', () => {
  const raw = base() as Record<string, unknown>;
  raw.routes = [
    { id: 'orders', match: { pathPrefix: 'api/orders' }, legacy: 'legacy', service: 'nope', breaker: 'missing', idempotent: 'yes' },
    { id: 'orders', match: {}, legacy: 'legacy', service: 'legacy', typo: 1 },
  ];
  raw.upstreams = [{ id: 'legacy', url: 'ftp://x' }, { id: 'svc', url: 'http://127.0.0.1:2', timeoutMs: -1 }];
  const list = problems(raw);
  const paths = list.map((p) => p.path);
  for (const expected of ['upstreams[0].url', 'upstreams[1].timeoutMs', 'routes[0].match.pathPrefix', 'routes[0].idempotent', 'routes[1]']) {
    assert.ok(paths.includes(expected), `${expected} is reported (got ${paths.join(', ')})`);
  }
  for (const p of list) {
    assert.ok(p.expected.length > 0 && p.found.length > 0 && p.hint.length > 0, JSON.stringify(p));
  }
  assert.ok(list.find((p) => p.path === 'routes[1]')?.found.includes('"typo"'), 'unknown fields are named');
});

test('a field of several shapes reports the problem of the closest shape, or the shapes it may take', () => {
  const wrongShape = problems({ ...base(), kafka: { brokers: ['k:9092'], ssl: 'yes' } });
  assert.deepEqual(wrongShape.map((p) => [p.path, p.expected, p.found]), [['kafka.ssl', 'one of: boolean, object', 'string "yes"']]);
  assert.match(wrongShape[0]?.hint ?? '', /config reference/);
  const inner = problems({ ...base(), kafka: { brokers: ['k:9092'], ssl: { caFile: 1 } } });
  assert.deepEqual(inner.map((p) => [p.path, p.expected, p.found]), [['kafka.ssl.caFile', 'string', 'number 1']]);
  const typo = problems({ ...base(), identity: { userKey: [{ heder: 'x-user-id' }] } });
  assert.deepEqual(typo.map((p) => p.path).sort(), ['identity.userKey[0]', 'identity.userKey[0].header']);
  assert.ok(typo.some((p) => p.found.includes('"heder"')), 'the misspelt field is named');
  const notObject = problems({ ...base(), identity: { userKey: ['x-user-id'] } });
  assert.deepEqual(notObject.map((p) => p.path), ['identity.userKey[0]']);
  assert.match(notObject[0]?.hint ?? '', /\{ header: x-user-id \}/);
});

test('a route flag in another Unleash environment than flags.environment is refused (the gateway never reads it)', () => {
  const raw = { ...base(), flags: { environment: 'production' }, routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy', service: 'svc', flag: { environment: 'staging' } }] };
  assert.deepEqual(problems(raw).map((p) => [p.path, p.expected, p.found]), [['routes[0].flag.environment', 'flags.environment ("production") or omitted', '"staging"']]);
  raw.routes[0]!.flag.environment = 'production';
  assert.equal(validateConfig(raw, 'x.yaml').routes[0]?.flag.environment, 'production');
});

test('cross-reference errors name what is known', () => {
  const raw = base();
  (raw.routes[0] as Record<string, unknown>).service = 'nope';
  (raw.routes[0] as Record<string, unknown>).breaker = 'missing';
  const list = problems(raw);
  assert.deepEqual(list.map((p) => p.path).sort(), ['routes[0].breaker', 'routes[0].service']);
  assert.match(list.find((p) => p.path === 'routes[0].service')?.hint ?? '', /known: legacy, svc/);
  assert.match(list.find((p) => p.path === 'routes[0].breaker')?.hint ?? '', /known: default/);
});

test('duplicate ids, same upstream on both sides, pattern and prefix together', () => {
  const raw = { ...base(), routes: [
    { id: 'a', match: { pathPrefix: '/a', pattern: '/a/:x' }, legacy: 'legacy', service: 'svc' },
    { id: 'a', match: { pattern: '/b/*/c' }, legacy: 'legacy', service: 'legacy' },
  ] };
  const list = problems(raw);
  const byPath = Object.fromEntries(list.map((p) => [p.path, p]));
  assert.equal(byPath['routes[0].match']?.found, 'both');
  assert.ok(byPath['routes[1].id']);
  assert.ok(byPath['routes[1].service']);
  assert.match(byPath['routes[1].match.pattern']?.hint ?? '', /last segment/);
  assert.match(byPath['routes[1].flag.name']?.hint ?? '', /route "a" already uses it/);
});

test('routes sharing a service upstream must share its breaker policy', () => {
  const raw = { ...base(), policies: { breakers: { default: {}, other: {} } }, routes: [
    { id: 'a', match: { pathPrefix: '/a' }, legacy: 'legacy', service: 'svc' },
    { id: 'b', match: { pathPrefix: '/b' }, legacy: 'legacy', service: 'svc', breaker: 'other' },
  ] };
  assert.match(problems(raw)[0]?.hint ?? '', /one breaker per service upstream/);
});

test('flags.appName cannot name a path outside backupPath (it is part of the backup file names)', () => {
  for (const appName of ['../../etc/x', 'a/b', 'a\\b', '..', '.', '']) assert.equal(problems({ ...base(), flags: { appName } })[0]?.path, 'flags.appName', appName);
  assert.equal(validateConfig({ ...base(), flags: { appName: 'orders gateway.v2' } }, 'x').flags.appName, 'orders gateway.v2');
});

test('a non-loopback admin bind needs a token', () => {
  const list = problems({ ...base(), admin: { bind: '0.0.0.0' } });
  assert.equal(list[0]?.path, 'admin.token');
  assert.doesNotThrow(() => validateConfig({ ...base(), admin: { bind: '0.0.0.0', token: 'x'.repeat(16) } }, 'x'));
  // A token of spaces passed the length check and then matched no Authorization header: an admin API nobody can use.
  for (const token of [' '.repeat(16), 'abcdefgh ijklmnopq', `${'x'.repeat(16)}\n`]) {
    const found = problems({ ...base(), admin: { bind: '0.0.0.0', token } });
    assert.equal(found[0]?.path, 'admin.token', JSON.stringify(token));
    assert.match(found[0]?.expected ?? '', /without spaces/);
  }
});

test('${ENV} interpolation, with defaults, null for optional secrets, and numbers for numeric fields', () => {
  const raw = { ...base(), admin: { port: '${ADMIN_PORT}', token: '${ADMIN_TOKEN:-null}' }, flags: { url: 'http://${UNLEASH_HOST:-127.0.0.1:4242}/api/' } };
  const c = validateConfig(raw, 'x', { ADMIN_PORT: '9911' });
  assert.equal(c.admin.port, 9911);
  assert.equal(c.admin.token, null);
  assert.equal(c.flags.url, 'http://127.0.0.1:4242/api/');
  const list = problems({ ...base(), flags: { token: '${MISSING_TOKEN}' } });
  assert.equal(list[0]?.path, 'flags.token');
  assert.match(list[0]?.expected ?? '', /MISSING_TOKEN/);
});

test('a config error never shows a secret: earlier session keys, all-digit tokens, URL passwords', () => {
  // The message is logged (config.reload_failed) and served by GET /admin/config; the old session key still signs.
  const old = 'OLD-session-key-still-valid-0123456789';
  const yaml = `upstreams: [{ id: l, url: "http://127.0.0.1:1" }]
routes: [{ id: r, match: { pathPrefix: / }, legacy: l }]
identity:
  sessionSecret: \${NEW_SECRET}
  previousSessionSecrets: \${OLD_SECRET}
admin: { token: 123456789012345678 }
flags: { url: "ftp://unleash:UNLEASH-URL-PW@unleash/api/", gateways: [{ url: "http://127.0.0.1:9", token: 4242 }] }
`;
  let err: unknown;
  try {
    parseConfigText(yaml, 'strangler.yaml', { NEW_SECRET: 'n'.repeat(32), OLD_SECRET: old });
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof ConfigError, String(err));
  const shown = `${err.message}\n${JSON.stringify(err.problems)}\n${JSON.stringify(err.toJSON())}`;
  for (const secret of [old, '12345678901234', 'UNLEASH-URL-PW', '4242']) assert.ok(!shown.includes(secret), `${secret} shown in: ${shown}`);
  const byPath = new Map(err.problems.map((p) => [p.path, p.found]));
  assert.equal(byPath.get('identity.previousSessionSecrets'), 'a string (not shown: a secret)');
  assert.equal(byPath.get('admin.token'), 'a number (not shown: a secret)');
  assert.equal(byPath.get('flags.gateways[0].token'), 'a number (not shown: a secret)');
  assert.equal(byPath.get('flags.url'), 'string "ftp://unleash:[redacted]@unleash/api/"');
  // An item of the list, too short: the key is still not shown.
  assert.deepEqual(problems({ ...base(), identity: { previousSessionSecrets: ['short-old-key'] } }).map((p) => [p.path, p.found]), [['identity.previousSessionSecrets[0]', 'a string (not shown: a secret)']]);
});

test('URLs strangler fetches refuse user:password@, naming the field and not the password', () => {
  // fetch refuses credentials in a URL and its error repeats the whole URL: the password went into flags.error and
  // flags.degraded log lines, GET /admin/routes (the dashboard) and the flags CLI's UNLEASH_UNREACHABLE message.
  const flags = { url: 'http://u:S3CRET-flagurl@unleash:4242/api/', adminUrl: 'https://u:S3CRET-adminurl@unleash', gateways: [{ url: 'http://gw:S3CRET-gwurl@10.0.0.5:9901' }] };
  const found = problems({ ...base(), flags });
  assert.deepEqual(found.map((p) => p.path).sort(), ['flags.adminUrl', 'flags.gateways[0].url', 'flags.url']);
  for (const p of found) assert.match(p.expected, /without user:password@/);
  assert.ok(!JSON.stringify(found).includes('S3CRET'), JSON.stringify(found));
  assert.equal(found.find((p) => p.path === 'flags.url')?.found, 'string "http://u:[redacted]@unleash:4242/api/"');
  // An upstream keeps its basic auth (http-proxy sends it); an "@" after the host is not userinfo.
  const valid = validateConfig({ ...base(), upstreams: [{ id: 'legacy', url: 'http://u:pw@127.0.0.1:1' }, { id: 'svc', url: 'http://127.0.0.1:2' }], flags: { url: 'http://unleash/api/?x=a@b' } }, 'strangler.yaml', {});
  assert.equal(valid.upstreams[0]?.url, 'http://u:pw@127.0.0.1:1');
});

test('unreadable and unparsable files say which file and where', () => {
  const dir = mkdtempSync(join(tmpdir(), 'strangler-config-'));
  assert.throws(() => loadConfigFile(join(dir, 'absent.yaml')), (err: ConfigError) => err.code === 'CONFIG_UNREADABLE' && err.message.includes('absent.yaml') && err.message.includes('ENOENT'));
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, 'upstreams:\n  - id: a\n    url: [unclosed\n');
  assert.throws(() => loadConfigFile(bad), (err: ConfigError) => err.code === 'CONFIG_UNREADABLE' && /line \d+/.test(err.message));
  assert.throws(() => parseConfigText('{"upstreams": [', 'c.json'), (err: ConfigError) => err.code === 'CONFIG_UNREADABLE' && err.message.startsWith('c.json'));
});

test('the example config in the repository is valid', () => {
  assert.doesNotThrow(() => loadConfigFile('strangler.example.yaml', { ...process.env, STRANGLER_ADMIN_TOKEN: 'x'.repeat(20) }));
});
