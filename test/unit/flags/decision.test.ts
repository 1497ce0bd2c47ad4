/**
 * Decision and stickiness: request → identity (flags/context.ts) → unleash-client isEnabled through FlagClient.
 * Golden buckets (groupId strangler.orders) from the Unleash reference: alice → 67, bob → 3, "42" → 15.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizedStrategyValue } from 'unleash-client/lib/strategy/util.js';
import { FlagClient } from '../../../flags/client.ts';
import { Identifier, readCookie, readJwtClaim, signOverride } from '../../../flags/context.ts';
import { validateConfig } from '../../../gateway/config/load.ts';
import { featuresFile } from '../../helpers/gateway.ts';
import { createLogger, silentLogger } from '../../../common/logger.ts';

const FLAG = 'strangler.orders';
const config = validateConfig({ upstreams: [{ id: 'l', url: 'http://127.0.0.1:1' }], identity: { sessionSecret: 's'.repeat(32), override: { secret: 'o'.repeat(32) }, userKey: [{ header: 'x-user-id' }, { jwtClaim: 'sub' }, { cookie: 'uid' }] } }, 'decision.test');

async function clientAt(percent: number, enabled = true): Promise<FlagClient> {
  const client = new FlagClient({ ...config.flags, bootstrapFile: featuresFile({ [FLAG]: { percent, enabled } }), url: null, backupPath: null }, silentLogger);
  await client.start();
  return client;
}

async function decide(percent: number, headers: Record<string, string>): Promise<boolean> {
  const client = await clientAt(percent);
  try {
    return client.isEnabled(FLAG, new Identifier(config.identity).identify(headers).context);
  } finally {
    client.close();
  }
}

test('golden buckets: our context keys bucket exactly as Unleash does', async () => {
  for (const [user, bucket] of [['alice', 67], ['bob', 3], ['42', 15]] as const) {
    assert.equal(normalizedStrategyValue(user, FLAG), bucket, `unleash-client's bucket for ${user}`);
    assert.equal(await decide(bucket - 1, { 'x-user-id': user }), false, `${user} is legacy at ${bucket - 1}%`);
    assert.equal(await decide(bucket, { 'x-user-id': user }), true, `${user} is service at ${bucket}%`);
  }
});

test('boundary pair: a user at bucket 10 is legacy at 9% and service at 10%', async () => {
  let user = '';
  for (let i = 0; !user; i++) if (normalizedStrategyValue(`user-${i}`, FLAG) === 10) user = `user-${i}`;
  assert.equal(await decide(9, { 'x-user-id': user }), false);
  assert.equal(await decide(10, { 'x-user-id': user }), true);
});

test('raising the percentage never moves an enabled user back to legacy', async () => {
  const users = Array.from({ length: 500 }, (_, i) => `u-${i}`);
  const identifier = new Identifier(config.identity);
  let previous = new Set<string>();
  for (const percent of [0, 1, 5, 10, 25, 50, 75, 100]) {
    const client = await clientAt(percent);
    const on = new Set(users.filter((u) => client.isEnabled(FLAG, identifier.identify({ 'x-user-id': u }).context)));
    client.close();
    for (const u of previous) assert.ok(on.has(u), `${u} stays on the service when going to ${percent}%`);
    assert.ok(Math.abs(on.size / users.length - percent / 100) < 0.07, `${percent}%: ${on.size}/500`);
    previous = on;
  }
  assert.equal(previous.size, 500);
});

test('a disabled flag, an unknown flag, and a client with no data all mean legacy', async () => {
  const off = await clientAt(100, false);
  assert.equal(off.isEnabled(FLAG, { userId: 'bob' }), false);
  assert.equal(off.isEnabled('strangler.unknown', { userId: 'bob' }), false);
  off.close();
  const empty = new FlagClient({ ...config.flags, url: null, backupPath: null, bootstrapFile: null }, silentLogger);
  await empty.start();
  assert.equal(empty.status.ready, false);
  assert.equal(empty.isEnabled(FLAG, { userId: 'bob' }), false);
  empty.close();
});

test('identity order: header → JWT claim → cookie → signed session → new session', () => {
  const id = new Identifier(config.identity);
  const jwt = `Bearer ${Buffer.from('{}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: 'jwt-user' })).toString('base64url')}.sig`;
  assert.deepEqual(id.identify({ 'x-user-id': 'h', authorization: jwt, cookie: 'uid=c' }).context, { userId: 'h' });
  assert.deepEqual(id.identify({ authorization: jwt, cookie: 'uid=c' }).context, { userId: 'jwt-user' });
  assert.deepEqual(id.identify({ cookie: 'a=1; uid=c; b=2' }).context, { userId: 'c' });
  const fresh = id.identify({});
  assert.equal(fresh.source, 'new-session');
  assert.ok(fresh.setCookie);
  const cookie = fresh.setCookie.split(';')[0] as string;
  const again = id.identify({ cookie });
  assert.equal(again.source, 'session');
  assert.equal(again.key, fresh.key, 'the same session key on every request');
  assert.equal(new Identifier(config.identity).identify({ cookie }).key, fresh.key, 'another gateway with the same secret agrees');
  assert.equal(id.identify({ cookie: `${cookie}x` }).source, 'new-session', 'a tampered cookie is not trusted');
  assert.equal(id.identify({ 'x-user-id': '' }).source, 'new-session', 'an empty user id is not a key');
});

test('a minted session cookie is Secure only when a trusted X-Forwarded-Proto says the client used https', () => {
  const id = new Identifier(config.identity);
  const secure = (headers: Record<string, string>, trust: boolean) => /; Secure$/.test(id.identify(headers, undefined, trust).setCookie ?? '');
  assert.equal(secure({ 'x-forwarded-proto': 'https' }, true), true);
  assert.equal(secure({ 'x-forwarded-proto': 'HTTPS, http' }, true), true, 'the first hop is the client\'s');
  assert.equal(secure({ 'x-forwarded-proto': 'http' }, true), false);
  assert.equal(secure({}, true), false);
  assert.equal(secure({ 'x-forwarded-proto': 'https' }, false), false, 'an untrusted header changes nothing');
});

test('tester overrides need a valid, unexpired signature', () => {
  const now = Date.now();
  const id = new Identifier(config.identity, { now: () => now });
  const secret = 'o'.repeat(32);
  assert.deepEqual(id.override({ 'x-strangler-override': signOverride(secret, 'service', 60, now) }), { target: 'service' });
  assert.deepEqual(id.override({ cookie: `strangler_override=${signOverride(secret, 'legacy', 60, now)}` }), { target: 'legacy' });
  assert.ok('rejected' in (id.override({ 'x-strangler-override': signOverride('w'.repeat(32), 'service', 60, now) }) ?? {}), 'wrong key');
  assert.ok('rejected' in (id.override({ 'x-strangler-override': signOverride(secret, 'service', -10, now) }) ?? {}), 'expired');
  assert.ok('rejected' in (id.override({ 'x-strangler-override': 'service' }) ?? {}), 'unsigned');
  assert.equal(id.override({}), null);
  assert.deepEqual(id.override({ 'x-strangler-override': '', cookie: `strangler_override=${signOverride(secret, 'service', 60, now)}` }), { target: 'service' }, 'an empty header does not hide the cookie');
  const noSecret = new Identifier({ ...config.identity, override: { ...config.identity.override, secret: null } });
  assert.match(String((noSecret.override({ 'x-strangler-override': signOverride(secret, 'service', 60, now) }) as { rejected: string }).rejected), /disabled/);
});

test('cookie and JWT readers tolerate junk', () => {
  assert.equal(readCookie('a=1;b="two" ; c=3', 'b'), 'two');
  assert.equal(readCookie('ab=1', 'a'), undefined);
  assert.equal(readCookie(undefined, 'a'), undefined);
  assert.equal(readJwtClaim('Bearer not.a.jwt!', 'sub'), undefined);
  assert.equal(readJwtClaim('Bearer a.b', 'sub'), undefined);
  const payload = Buffer.from(JSON.stringify({ sub: 'jwt-user' })).toString('base64url');
  assert.equal(readJwtClaim(`Bearer e30.${payload}.sig`, 'sub'), 'jwt-user');
  assert.equal(readJwtClaim(`e30.${payload}.sig`, 'sub'), 'jwt-user', 'without the Bearer prefix');
  for (const junk of [`e30.${payload}.sig.more`, `e30..sig`, `.${payload}`, '.'.repeat(16_000), `e30.${Buffer.from('null').toString('base64url')}.s`, `e30.${Buffer.from('[1]').toString('base64url')}.s`, `e30.${Buffer.from('{"sub":{"a":1}}').toString('base64url')}.s`]) {
    assert.equal(readJwtClaim(`Bearer ${junk}`, 'sub'), undefined, junk.slice(0, 40));
  }
});

test('issue: rotating identity.sessionSecret gave every anonymous user a new session (and bucket); previous keys keep it', () => {
  const old = new Identifier(config.identity);
  const minted = old.identify({});
  const cookie = minted.setCookie?.split(';')[0] as string;
  const rotated = new Identifier({ ...config.identity, sessionSecret: 'n'.repeat(32), previousSessionSecrets: [config.identity.sessionSecret as string] });
  const seen = rotated.identify({ cookie });
  assert.deepEqual([seen.source, seen.key], ['session', minted.key], 'the same session id, so the same bucket');
  const resigned = seen.setCookie?.split(';')[0] as string;
  assert.ok(resigned && resigned !== cookie, 'the cookie is re-signed with the new key');
  assert.match(seen.setCookie ?? '', /; Path=\/; Max-Age=\d+; HttpOnly; SameSite=Lax$/);
  assert.deepEqual([rotated.identify({ cookie: resigned }).source, rotated.identify({ cookie: resigned }).setCookie], ['session', null], 'the re-signed cookie needs nothing more');
  const dropped = new Identifier({ ...config.identity, sessionSecret: 'n'.repeat(32) });
  assert.equal(dropped.identify({ cookie }).source, 'new-session', 'a key no longer listed is not trusted');
  assert.equal(dropped.identify({ cookie: resigned }).key, minted.key);
});

test('issue: a non-ASCII user id from a header or cookie was bucketed as its UTF-8 bytes read as latin1, unlike Unleash and the JWT claim', async () => {
  // Through a real server: node's HTTP parser hands header values over as latin1, one char per byte on the wire.
  const identifier = new Identifier(config.identity);
  const server = createServer((req, res) => res.end(JSON.stringify(identifier.identify(req.headers).context)));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  // fetch sends a header value as latin1 too: pass the UTF-8 bytes, as a browser or another client puts them on the wire.
  const wire = (text: string) => Buffer.from(text, 'utf8').toString('latin1');
  const ask = async (headers: Record<string, string>) => (await (await fetch(url, { headers })).json()) as { userId?: string };
  try {
    for (const user of ['José', 'Zoë', 'müller', 'Łukasz', 'Ωmega', '李雷', 'plain-ascii']) {
      const jwt = `Bearer e30.${Buffer.from(JSON.stringify({ sub: user })).toString('base64url')}.sig`;
      assert.equal((await ask({ authorization: jwt })).userId, user);
      assert.equal((await ask({ 'x-user-id': wire(user) })).userId, user, `header: ${user}, the userId Unleash (its playground, any SDK) buckets`);
      assert.equal((await ask({ cookie: `uid=${wire(user)}` })).userId, user, `cookie: ${user}`);
    }
    // Bytes that are not UTF-8 (a latin1 client) stay as they came, so such a user keeps one stable key.
    assert.equal((await ask({ 'x-user-id': 'Zo\u00eb' })).userId, 'Zo\u00eb');
  } finally {
    server.close();
  }
});

test('issue: a stale cookie of the same name sent before the valid one made every request a new session', () => {
  const id = new Identifier(config.identity);
  const minted = id.identify({});
  const cookie = minted.setCookie?.split(';')[0] as string;
  const seen = id.identify({ cookie: `strangler_sid=old.c2lnbmF0dXJl; other=1; ${cookie}` });
  assert.deepEqual([seen.source, seen.key, seen.setCookie], ['session', minted.key, null]);
});

test('issue: a Cookie header of thousands of pairs cost a request tens of milliseconds of CPU (rescanned per same-name cookie, an HMAC each): at most 8 same-name session cookies are tried', () => {
  const id = new Identifier(config.identity);
  const minted = id.identify({}).setCookie?.split(';')[0] as string;
  // The bound (the cost itself is for a benchmark, not a timed test): a valid session behind 7 stale ones is found,
  // behind 8 it is not tried, so a forged header of thousands costs at most 8 HMACs.
  const stale = (n: number) => Array.from({ length: n }, (_, i) => `strangler_sid=old${i}.c2ln`).join('; ');
  assert.equal(id.identify({ cookie: `${stale(7)}; ${minted}` }).source, 'session');
  assert.notEqual(id.identify({ cookie: `${stale(8)}; ${minted}` }).source, 'session');
  // A 64 KB header of pairs without "=" (read in one pass) still yields the user-key cookie at its end.
  assert.equal(id.identify({ cookie: `${'a;'.repeat(30_000)}uid=u` }).key, 'u');
  assert.equal(readCookie('a=1; sid=sid=x; sid=2', 'sid', 1), '2', 'a value that looks like a pair is not one');
});

test('issue: without identity.sessionSecret, a config reload (new Identifier) invalidated every session of the process', () => {
  const ephemeral = { ...config.identity, sessionSecret: null };
  const before = new Identifier(ephemeral);
  assert.equal(before.ephemeralSessions, true);
  const minted = before.identify({});
  const after = new Identifier({ ...ephemeral, userKey: [{ header: 'x-other' }] });
  assert.deepEqual([after.identify({ cookie: minted.setCookie?.split(';')[0] }).source, after.identify({ cookie: minted.setCookie?.split(';')[0] }).key], ['session', minted.key]);
});

test('issue: a rollback push waited for the refetch, so an Unleash that hangs held the kill switch for requestTimeoutMs', async () => {
  // A stand-in for an Unleash that answers the first poll and then hangs (accepts, never answers).
  const features = JSON.parse(readFileSync(featuresFile({ [FLAG]: { percent: 100 } }), 'utf8')) as unknown;
  let polls = 0;
  const hanging = createServer((_req, res) => {
    if (++polls === 1) res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(features));
  });
  await new Promise<void>((resolve) => hanging.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(hanging.address() as AddressInfo).port}/api/`;
  const client = new FlagClient({ ...config.flags, url, backupPath: null, bootstrapFile: null, refreshIntervalMs: 0, requestTimeoutMs: 600_000, disableMetrics: true }, silentLogger);
  try {
    await client.start();
    const user = { userId: 'alice' };
    assert.equal(client.isEnabled(FLAG, user), true);
    const refetched = new Promise((resolve) => hanging.once('request', () => setImmediate(resolve, 'refetch unanswered, push still waiting')));
    const pushed = client.push({ flag: FLAG, action: 'rollback' }).then(() => 'pushed');
    // The push answers without waiting for the refetch it starts (else it would wait out the 10-minute timeout).
    assert.equal(await Promise.race([pushed, refetched]), 'pushed');
    await refetched;
    assert.equal(polls, 2, 'the rollback still refetches');
    assert.equal(client.isEnabled(FLAG, user), false, 'the override routes to legacy at once');
  } finally {
    client.close();
    hanging.closeAllConnections();
    await new Promise((resolve) => hanging.close(resolve));
  }
});

test('issue: a restarted gateway forgot a rollback that only it knew of (Unleash down or refusing the token) and went back to the service', async () => {
  const backupPath = mkdtempSync(join(tmpdir(), 'strangler-overrides-'));
  const flags = { ...config.flags, bootstrapFile: featuresFile({ [FLAG]: { percent: 100 } }), url: null, backupPath };
  const user = { userId: 'alice' };
  const started = async () => {
    const client = new FlagClient(flags, silentLogger);
    await client.start();
    return client;
  };
  try {
    const first = await started();
    assert.equal(first.isEnabled(FLAG, user), true);
    await first.push({ flag: FLAG, action: 'rollback' });
    first.close();

    const restarted = await started();
    assert.equal(restarted.isEnabled(FLAG, user), false, 'the rollback survives the restart');
    assert.equal(restarted.state(FLAG).localOverride, 'legacy');
    await restarted.push({ flag: FLAG, action: 'resume' });
    assert.equal(restarted.isEnabled(FLAG, user), true);
    restarted.close();

    const again = await started();
    assert.equal(again.isEnabled(FLAG, user), true, 'a resume is remembered too');
    again.close();
  } finally {
    rmSync(backupPath, { recursive: true, force: true });
  }
});

test('issue: flag files were written through a predictable temporary name (a planted symlink was followed) and left it behind on error', async () => {
  const backupPath = mkdtempSync(join(tmpdir(), 'strangler-overrides-'));
  const victim = join(mkdtempSync(join(tmpdir(), 'strangler-victim-')), 'victim.txt');
  writeFileSync(victim, 'not yours\n');
  const flags = { ...config.flags, bootstrapFile: featuresFile({ [FLAG]: { percent: 100 } }), url: null, backupPath };
  const overrides = join(backupPath, `rollback-overrides-${flags.appName}.json`);
  try {
    // Someone who can write to the folder plants the temporary name, pointing at a file of the gateway's user.
    symlinkSync(victim, `${overrides}.${process.pid}.tmp`);
    const client = new FlagClient(flags, silentLogger);
    await client.start();
    await client.push({ flag: FLAG, action: 'rollback' });
    client.close();
    assert.equal(readFileSync(victim, 'utf8'), 'not yours\n', 'the symlink target was not written');
    assert.match(readFileSync(overrides, 'utf8'), /"overrides"/, 'the override was saved all the same');

    // A write that fails (the file's name taken by a folder) leaves no temporary file behind.
    rmSync(overrides);
    rmSync(`${overrides}.${process.pid}.tmp`, { force: true });
    mkdirSync(overrides);
    const failing = new FlagClient(flags, silentLogger);
    await failing.start();
    await failing.push({ flag: FLAG, action: 'rollback' });
    failing.close();
    assert.deepEqual(readdirSync(backupPath).filter((f) => f.endsWith('.tmp')), []);
  } finally {
    rmSync(backupPath, { recursive: true, force: true });
    rmSync(dirname(victim), { recursive: true, force: true });
  }
});

test('issue: the SDK\'s warnings (its registration refused with 401, so Unleash shows no usage) were logged at debug only; now at warn, each once', async () => {
  const features = JSON.parse(readFileSync(featuresFile({ [FLAG]: { percent: 100 } }), 'utf8')) as unknown;
  const registered: string[] = [];
  const unleash = createServer((req, res) => {
    if (req.method === 'POST') {
      registered.push(req.url ?? '');
      req.resume();
      return void res.writeHead(401, { 'content-type': 'application/json' }).end('{"message":"token not allowed"}');
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(features));
  });
  await new Promise<void>((resolve) => unleash.listen(0, '127.0.0.1', resolve));
  const lines: { level: number; msg: string }[] = [];
  const destination = new Writable({ write(chunk: Buffer, _enc, done) { for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as { level: number; msg: string }); done(); } });
  const url = `http://127.0.0.1:${(unleash.address() as AddressInfo).port}/api/`;
  const client = new FlagClient({ ...config.flags, url, token: 'backend-token-not-for-logs', backupPath: null, bootstrapFile: null, refreshIntervalMs: 0, disableMetrics: false }, createLogger({ destination }));
  try {
    await client.start();
    const deadline = Date.now() + 10_000;
    while (!lines.some((l) => l.msg === 'flags.warn') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const warns = lines.filter((l) => l.msg === 'flags.warn');
    assert.ok(registered.some((u) => u.endsWith('/client/register')), `the SDK registered: ${registered.join(', ')}`);
    assert.equal(warns.length, 1, JSON.stringify(lines));
    assert.equal(warns[0]?.level, 40, 'logged at warn');
    assert.match(JSON.stringify(warns[0]), /client\/register returning 401/);
    assert.doesNotMatch(JSON.stringify(lines), /backend-token-not-for-logs/);
  } finally {
    client.close();
    unleash.closeAllConnections();
    await new Promise((resolve) => unleash.close(resolve));
  }
});
