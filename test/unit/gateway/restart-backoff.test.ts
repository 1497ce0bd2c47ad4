/**
 * The back-off of cluster mode's worker replacements (gateway/cluster.ts RestartBackoff): the first replacement at
 * once, then 1 s doubling to 30 s while replacements fail to start (or exit soon after listening), and at once again
 * after a worker has served for a minute. test/integration/gateway/cluster-admin.test.ts runs it for real.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RestartBackoff } from '../../../gateway/cluster.ts';

test('replacements that keep failing wait 1 s doubling to 30 s; a worker that served a minute resets it', () => {
  const slot = new RestartBackoff();
  assert.equal(slot.next(5 * 60_000), 0, 'a worker that served, then crashed, is replaced at once');
  assert.equal(slot.attempt, 1);
  const failed = Array.from({ length: 7 }, () => slot.next(null));
  assert.deepEqual(failed, [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
  assert.equal(slot.attempt, 8);
  // A replacement listened, then crashed within seconds (a crash on the first requests): still backing off.
  assert.equal(slot.next(5_000), 30_000);
  // One that served for a minute starts a new count.
  assert.equal(slot.next(RestartBackoff.RESET_AFTER_MS), 0);
  assert.equal(slot.next(null), 1_000);
  assert.equal(slot.next(null), 2_000);
});
