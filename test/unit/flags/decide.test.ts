import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decide, type DecideInput } from '../../../flags/controller.ts';
import type { GuardVerdict } from '../../../flags/guard.ts';
import { guardSchema, planSchema } from '../../../gateway/config/schema.ts';

const plan = planSchema.parse({ steps: [1, 5, 25, 50, 100], holdMs: 1000 });
const guard = guardSchema.parse({});
const v = (outcome: GuardVerdict['outcome'], reasons: string[] = []): GuardVerdict => ({ outcome, reasons, metrics: {} as GuardVerdict['metrics'] });

function run(steps: { flag: DecideInput['flag']; verdict: GuardVerdict; now: number; guard?: DecideInput['guard'] }[]) {
  let record: DecideInput['record'];
  return steps.map((s) => {
    const out = decide({ record, routeId: 'orders', flagName: 'strangler.orders', plan, guard: s.guard ?? guard, flag: s.flag, verdict: s.verdict, now: s.now });
    record = { ...out.record, version: (record?.version ?? 0) + 1 };
    return out;
  });
}

describe('controller decide()', () => {
  test('starts at the first step, advances only after holdMs of uninterrupted passes, completes at the last', () => {
    const on = (percent: number) => ({ state: 'on' as const, percent });
    const out = run([
      { flag: on(0), verdict: v('insufficient'), now: 0 },      // start: shift to 1
      { flag: on(1), verdict: v('pass'), now: 100 },            // applied, hold starts 100
      { flag: on(1), verdict: v('pass'), now: 600 },
      { flag: on(1), verdict: v('insufficient'), now: 900 },   // hold restarts at 900
      { flag: on(1), verdict: v('pass'), now: 1500 },           // 600 ms since restart: hold
      { flag: on(1), verdict: v('pass'), now: 1900 },           // 1000 ms: advance to 5
    ]);
    assert.deepEqual(out.map((o) => o.action.kind), ['shift', 'none', 'none', 'none', 'none', 'shift']);
    assert.deepEqual(out[0]?.action, { kind: 'shift', percent: 1, reason: 'plan step 1/5: start at 1 %' });
    assert.equal(out[5]?.action.kind === 'shift' && out[5].action.percent, 5);
    assert.equal(out[5]?.record.stepIndex, 1);

    const done = run([
      { flag: on(100), verdict: v('pass'), now: 0 },
    ]);
    assert.equal(done[0]?.record.state, 'completed');
  });

  test('a failing guard rolls back, pauses or alerts according to guard.action', () => {
    const on = { state: 'on' as const, percent: 25 };
    const rollback = run([{ flag: on, verdict: v('pass'), now: 0 }, { flag: on, verdict: v('fail', ['p99 ×3']), now: 10 }]);
    assert.deepEqual(rollback[1]?.action, { kind: 'rollback', reason: 'guard failed at 25 %: p99 ×3' });
    assert.equal(rollback[1]?.record.state, 'rolled-back');

    const pause = run([
      { flag: on, verdict: v('pass'), now: 0 },
      { flag: on, verdict: v('fail', ['x']), now: 10, guard: { ...guard, action: 'pause' } },
      { flag: on, verdict: v('pass'), now: 5000, guard: { ...guard, action: 'pause' } },
      { flag: { state: 'on', percent: 30 }, verdict: v('pass'), now: 6000, guard: { ...guard, action: 'pause' } },
    ]);
    assert.deepEqual(pause.map((o) => [o.action.kind, o.record.state]), [['none', 'holding'], ['pause', 'paused'], ['none', 'paused'], ['none', 'holding']]);
    assert.equal(pause[3]?.record.stepIndex, 2, 'a manual shift to 30 % positions the plan after the 25 % step');

    const alert = run([{ flag: on, verdict: v('pass'), now: 0 }, { flag: on, verdict: v('fail', ['x']), now: 10, guard: { ...guard, action: 'alert' } }]);
    assert.deepEqual([alert[1]?.action.kind, alert[1]?.record.state, alert[1]?.record.holdStartedAt], ['alert', 'holding', 10]);
  });

  test('operators win: a manual rollback stops the plan; a resume re-positions it; an unsynced flag waits', () => {
    const out = run([
      { flag: { state: 'on', percent: 5 }, verdict: v('pass'), now: 0 },
      { flag: { state: 'off', percent: 5 }, verdict: v('pass'), now: 5000 },
      { flag: { state: 'off', percent: 5 }, verdict: v('pass'), now: 9000 },
      { flag: { state: 'on', percent: 5 }, verdict: v('pass'), now: 10000 },
    ]);
    assert.deepEqual(out.map((o) => [o.action.kind, o.record.state]), [['none', 'holding'], ['none', 'rolled-back'], ['none', 'rolled-back'], ['none', 'holding']]);
    assert.equal(out[3]?.record.holdStartedAt, 10000);
    const waiting = run([{ flag: { state: 'missing', percent: null }, verdict: v('pass'), now: 0 }]);
    assert.deepEqual([waiting[0]?.action.kind, waiting[0]?.record.state], ['none', 'waiting']);
  });

  test('the guard applies from the first tick: a failing route is rolled back, not started on the plan', () => {
    const first = run([{ flag: { state: 'on', percent: 100 }, verdict: v('fail', ['errors']), now: 0 }]);
    assert.deepEqual([first[0]?.action.kind, first[0]?.record.state], ['rollback', 'rolled-back']);
    const alert = run([{ flag: { state: 'on', percent: 0 }, verdict: v('fail', ['errors']), now: 0, guard: { ...guard, action: 'alert' } }]);
    assert.equal(alert[0]?.action.kind, 'alert', 'a failing guard never starts or advances a step');
  });

  test('a step decided but not applied (crash, Unleash down) is applied again', () => {
    const on = (percent: number) => ({ state: 'on' as const, percent });
    const out = run([
      { flag: on(1), verdict: v('pass'), now: 0 },
      { flag: on(1), verdict: v('pass'), now: 1000 },   // decide 5, applied=false
      { flag: on(1), verdict: v('pass'), now: 1100 },   // Unleash still says 1: retry
      { flag: on(5), verdict: v('pass'), now: 1200 },   // now applied
    ]);
    assert.deepEqual(out.map((o) => o.action.kind), ['none', 'shift', 'shift', 'none']);
    assert.equal(out[3]?.record.applied, true);
  });
});
