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

test('strangler start --log-level: a value pino does not know is a usage error naming the flag (was a pino stack trace)', async () => {
  const { demoCommand } = await import('../../../devstack/demo/command.ts');
  await assert.rejects(demoCommand.run(['--log-level', 'loud']), (err: unknown) => err instanceof StranglerError && err.code === 'CLI_USAGE' && /start: --log-level expects one of fatal, error, warn, info, debug, trace, silent, got "loud"/.test(err.message));
});
