import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { intOption } from '../../../cli/command.ts';
import { StranglerError } from '../../../common/errors.ts';

test('intOption: absent is undefined; integers within range pass; anything else is a usage error naming the flag', () => {
  assert.equal(intOption('sync', '--rate', undefined), undefined);
  assert.equal(intOption('sync', '--rate', ''), undefined);
  assert.equal(intOption('sync', '--rate', '4000', { min: 1 }), 4000);
  assert.equal(intOption('gateway', '--port', '0', { max: 65_535 }), 0);
  for (const [value, range, message] of [
    ['fast', { min: 1 }, /sync: --rate expects an integer ≥ 1, got "fast"/],
    ['1.5', {}, /--rate expects an integer ≥ 0, got "1\.5"/],
    ['-3', {}, /got "-3"/],
    ['0', { min: 1 }, /≥ 1, got "0"/],
    ['70000', { max: 65_535 }, /from 0 to 65535, got "70000"/],
  ] as const) {
    assert.throws(() => intOption('sync', '--rate', value, range), (err: unknown) => err instanceof StranglerError && err.code === 'CLI_USAGE' && message.test(err.message));
  }
});

test('a mistyped subcommand of flags or sync is named as such, before any config is looked for', async () => {
  const { flagsCommand } = await import('../../../flags/command.ts');
  const { syncCommand } = await import('../../../migration-scripts/command.ts');
  // No --config: flags used to report a missing strangler.yaml, sync a missing --config, instead of the typo.
  await assert.rejects(flagsCommand.run(['stauts']), (err: unknown) => err instanceof StranglerError && err.code === 'CLI_USAGE' && /flags: unknown subcommand "stauts" \(sync, status,/.test(err.message));
  await assert.rejects(syncCommand.run(['verfy']), (err: unknown) => err instanceof StranglerError && err.code === 'CLI_USAGE' && /sync: unknown subcommand "verfy" \(capture, relay,/.test(err.message));
});

test('flags --prune outside `flags webhooks` is a usage error, not silently ignored', async () => {
  const { flagsCommand } = await import('../../../flags/command.ts');
  await assert.rejects(flagsCommand.run(['sync', '--prune']), (err: unknown) => err instanceof StranglerError && err.code === 'CLI_USAGE' && /--prune applies to `flags webhooks` only/.test(err.message));
});

test('strangler start --log-level: a value pino does not know is a usage error naming the flag (was a pino stack trace)', async () => {
  const { demoCommand } = await import('../../../devstack/demo/command.ts');
  await assert.rejects(demoCommand.run(['--log-level', 'loud']), (err: unknown) => err instanceof StranglerError && err.code === 'CLI_USAGE' && /start: --log-level expects one of fatal, error, warn, info, debug, trace, silent, got "loud"/.test(err.message));
});

test('a system or driver error ends the CLI with its code and message, not a stack trace; usage errors exit 2', () => {
  const dir = mkdtempSync(join(tmpdir(), 'strangler-cli-'));
  try {
    const file = join(dir, 'sync.yaml');
    // Nothing listens on port 9 (discard): the first connection is refused.
    writeFileSync(file, 'sync:\n  databases:\n    legacy: { url: "postgres://u:secret-pw@127.0.0.1:9/a" }\n    service: { url: "postgres://u:secret-pw@127.0.0.1:9/b" }\n  tables:\n    - { name: t, legacy: { table: t, key: [id] }, service: { table: t, key: [id] }, columns: [{ legacy: id, service: id }] }\n');
    const refused = spawnSync(process.execPath, ['bin/strangler.js', 'sync', 'status', '--config', file], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(refused.status, 1);
    // One line naming each database that refused (sync commands name the side: the driver's error does not).
    assert.match(refused.stderr, /^strangler: SYNC_DATABASE_UNAVAILABLE: cannot use sync\.databases\.legacy\.url \(postgres:\/\/u:\[redacted\]@127\.0\.0\.1:9\/a\): ECONNREFUSED: connect ECONNREFUSED 127\.0\.0\.1:9; sync\.databases\.service\.url \(postgres:\/\/u:\[redacted\]@127\.0\.0\.1:9\/b\): ECONNREFUSED[^\n]*\n$/);
    assert.doesNotMatch(refused.stderr, /secret-pw|\n\s+at /);
    const usage = spawnSync(process.execPath, ['bin/strangler.js', 'sync', 'status'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(usage.status, 2);
    assert.match(usage.stderr, /CLI_USAGE/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
