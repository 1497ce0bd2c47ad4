import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatTitle, note, parseTitle } from '../../../flags/annotation.ts';
import { parsePercent } from '../../../flags/traffic.ts';
import { StranglerError } from '../../../common/errors.ts';

test('the intent title round-trips and ignores titles strangler did not write', () => {
  const title = formatTitle({ rollout: 25, enabled: false }, note('rollback', 'cli:bob', 'p99   doubled\nat 10:00'));
  assert.equal(title, 'strangler rollout=25 enabled=false · rollback by cli:bob: p99 doubled at 10:00');
  assert.deepEqual(parseTitle(title), { rollout: 25, enabled: false, note: 'rollback by cli:bob: p99 doubled at 10:00' });
  assert.deepEqual(parseTitle('strangler rollout=0 enabled=true'), { rollout: 0, enabled: true, note: null });
  for (const other of [null, undefined, '', 'orders migration', 'strangler rollout=101 enabled=true', 'strangler rollout=5 enabled=maybe']) {
    assert.equal(parseTitle(other), undefined, String(other));
  }
  assert.ok(formatTitle({ rollout: 1, enabled: true }, 'x'.repeat(500)).length < 220, 'long reasons are cut');
});

test('parsePercent accepts integers 0..100 only', () => {
  assert.deepEqual([0, 100, '7', ' 42 '].map(parsePercent), [0, 100, 7, 42]);
  for (const bad of [-1, 101, 1.5, Number.NaN, '1e1', '0x10', '', '5%', null, undefined, {}]) {
    assert.throws(() => parsePercent(bad), (err: unknown) => err instanceof StranglerError && err.code === 'PERCENT_INVALID', String(bad));
  }
});
