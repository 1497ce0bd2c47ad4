/**
 * `strangler flags override`: a tester mints a signed override with the CLI and a real gateway honours it, by header
 * and by cookie; without a secret, or with a bad target or TTL, the command says what to fix.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fakeUpstream, type FakeUpstream } from '../../helpers/upstream.ts';
import { featuresFile, startTestGateway, testConfig } from '../../helpers/gateway.ts';
import type { RunningGateway } from '../../../gateway/server.ts';
import { strangler } from './fixtures.ts';

/** The override secret of testConfig's gateways, given to the CLI through the environment as in production. */
const SECRET = 'test-override-secret-0123456789';

describe('strangler flags override (CLI) against a running gateway', () => {
  let dir: string;
  let file: string;
  let noSecret: string;
  let legacy: FakeUpstream;
  let svc: FakeUpstream;
  /** Two gateways: the route's flag at 0 % (all legacy) and at 100 % (all service). */
  let none: RunningGateway;
  let all: RunningGateway;

  before(async () => {
    legacy = await fakeUpstream('legacy');
    svc = await fakeUpstream('svc');
    none = await startTestGateway(testConfig({ legacyUrl: legacy.url, serviceUrl: svc.url, flags: { bootstrapFile: featuresFile({ 'strangler.orders': { percent: 0 } }) } }));
    all = await startTestGateway(testConfig({ legacyUrl: legacy.url, serviceUrl: svc.url, flags: { bootstrapFile: featuresFile({ 'strangler.orders': { percent: 100 } }) } }));
    dir = mkdtempSync(join(tmpdir(), 'strangler-override-cli-'));
    const yaml = (identity: string) => `upstreams:
  - { id: legacy, url: ${legacy.url} }
  - { id: svc, url: ${svc.url} }
routes:
  - { id: orders, match: { pathPrefix: /api/orders }, legacy: legacy, service: svc }
flags: { url: null, backupPath: null }
${identity}`;
    file = join(dir, 'strangler.yaml');
    writeFileSync(file, yaml('identity:\n  override:\n    secret: ${OVERRIDE_SECRET}\n'));
    noSecret = join(dir, 'no-secret.yaml');
    writeFileSync(noSecret, yaml(''));
  });
  after(async () => {
    await Promise.all([none.close(), all.close()]);
    await Promise.all([legacy.stop(), svc.stop()]);
    rmSync(dir, { recursive: true, force: true });
  });

  const target = async (gw: RunningGateway, headers: Record<string, string> = {}) => {
    const res = await fetch(`${gw.proxyUrl}/api/orders/1`, { headers });
    await res.arrayBuffer();
    return res.headers.get('x-strangler-target');
  };

  test('a minted override forces its side by header and by cookie, on a route the flag sends the other way', async () => {
    const minted = await strangler(['flags', 'override', 'service', '--ttl', '600', '--json', '--config', file], { OVERRIDE_SECRET: SECRET });
    assert.equal(minted.code, 0, minted.stderr);
    const out = JSON.parse(minted.stdout) as { target: string; expiresAt: string; header: { name: string; value: string }; cookie: { name: string; value: string } };
    assert.equal(out.target, 'service');
    const ttlMs = Date.parse(out.expiresAt) - Date.now();
    assert.ok(ttlMs > 590_000 && ttlMs <= 600_000, `expires in ${ttlMs} ms, expected about 600 s`);
    assert.equal(out.header.name, 'x-strangler-override');
    assert.equal(out.cookie.name, 'strangler_override');
    assert.equal(await target(none), 'legacy', 'precondition: the flag sends everyone to legacy');
    assert.equal(await target(none, { [out.header.name]: out.header.value }), 'service');
    assert.equal(await target(none, { cookie: `theme=dark; ${out.cookie.name}=${out.cookie.value}` }), 'service');
    // What the upstream got carries no override (a credential until it expires).
    const seen = svc.received.at(-1);
    assert.equal(seen?.headers['x-strangler-override'], undefined);
    assert.equal(seen?.headers.cookie, 'theme=dark');

    // The text form prints the header line and a cookie a browser takes, for the other side.
    const text = await strangler(['flags', 'override', 'legacy', '--config', file], { OVERRIDE_SECRET: SECRET });
    assert.equal(text.code, 0, text.stderr);
    const header = /^ {2}header {2}x-strangler-override: (\S+)$/m.exec(text.stdout)?.[1];
    assert.ok(header, text.stdout);
    assert.match(text.stdout, new RegExp(`^  cookie  strangler_override=${header.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}; Path=/; Max-Age=3600$`, 'm'));
    assert.equal(await target(all), 'service', 'precondition: the flag sends everyone to the service');
    assert.equal(await target(all, { 'x-strangler-override': header }), 'legacy');

    // Minted with another secret, the same command's output is ignored by the gateway.
    const other = await strangler(['flags', 'override', 'service', '--json', '--config', file], { OVERRIDE_SECRET: 'another-secret-0123456789' });
    assert.equal(other.code, 0, other.stderr);
    assert.equal(await target(none, { 'x-strangler-override': (JSON.parse(other.stdout) as { header: { value: string } }).header.value }), 'legacy');
  });

  test('no secret, a bad target, a TTL out of range, --ttl on another subcommand: clear errors, nothing printed', async () => {
    const unset = await strangler(['flags', 'override', 'service', '--config', noSecret]);
    assert.equal(unset.code, 1);
    assert.equal(unset.stdout, '');
    assert.match(unset.stderr, /no-secret\.yaml: 1 problem\n {2}- identity\.override\.secret: expected a string of at least 16 characters.*found null \(overrides are disabled.*Hint: set it/);
    for (const [args, message] of [
      [['flags', 'override', 'everyone'], /usage: flags override legacy\|service \[--ttl SECONDS\]/],
      [['flags', 'override'], /usage: flags override legacy\|service/],
      [['flags', 'override', 'service', '--ttl', '0'], /--ttl expects an integer from 1 to 604800, got "0"/],
      [['flags', 'override', 'service', '--ttl', '604801'], /--ttl expects an integer from 1 to 604800, got "604801"/],
      [['flags', 'override', 'service', '--ttl', '1h'], /--ttl expects an integer from 1 to 604800, got "1h"/],
      [['flags', 'status', '--ttl', '60'], /--ttl applies to `flags override` only/],
    ] as const) {
      const r = await strangler([...args, '--config', file], { OVERRIDE_SECRET: SECRET });
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, message);
    }
  });
});
