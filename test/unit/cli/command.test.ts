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
