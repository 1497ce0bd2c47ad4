import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decide, type DecideInput } from '../../../flags/controller.ts';
import type { GuardVerdict } from '../../../flags/guard.ts';
import { guardSchema, planSchema } from '../../../gateway/config/schema.ts';

const plan = planSchema.parse({ steps: [1, 5, 25, 50, 100], holdMs: 1000 });
const guard = guardSchema.parse({});
const v = (outcome: GuardVerdict['outcome'], reasons: string[] = []): GuardVerdict => ({ outcome, reasons, metrics: {} as GuardVerdict['metrics'] });

function run(steps: { flag: DecideInput['flag']; verdict: GuardVerdict; now: number; guard?: DecideInput['guard']; minHoldMs?: number; applied?: boolean }[]) {
  let record: DecideInput['record'];
  return steps.map((s) => {
    const out = decide({ record, routeId: 'orders', flagName: 'strangler.orders', plan, guard: s.guard ?? guard, flag: s.flag, verdict: s.verdict, now: s.now, ...(s.minHoldMs === undefined ? {} : { minHoldMs: s.minHoldMs }) });
    // applied: the controller applied the action (Unleash answered) and marked the record; false = the write failed.
    if (s.applied !== undefined) out.record = { ...out.record, applied: s.applied };
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
      { flag: { state: 'on', percent: 30, lastChange: 'shift 25→30% by cli:alice' }, verdict: v('pass'), now: 6000, guard: { ...guard, action: 'pause' } },
      { flag: { state: 'on', percent: 30, lastChange: 'resume by cli:alice' }, verdict: v('pass'), now: 7000, guard: { ...guard, action: 'pause' } },
    ]);
    assert.deepEqual(pause.map((o) => [o.action.kind, o.record.state]), [['none', 'holding'], ['pause', 'paused'], ['none', 'paused'], ['pause', 'paused'], ['none', 'holding']]);
    assert.match(pause[1]?.record.pause?.reason ?? '', /guard failed at 25 %: x; the plan holds until `strangler flags resume orders`/);
    assert.match(pause[3]?.record.pause?.reason ?? '', /rollout moved 25 % → 30 % outside the plan \("shift 25→30% by cli:alice"\)/, 'a manual shift keeps the plan paused');
    assert.equal(pause[4]?.record.stepIndex, 2, 'a resume positions the plan after the 25 % step');
    assert.equal(pause[4]?.record.pause, undefined);

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

  test('an automatic rollback that did not reach Unleash is retried, not taken for a resume; an operator\'s shift still wins', () => {
    const on = (percent: number) => ({ state: 'on' as const, percent });
    const out = run([
      { flag: on(25), verdict: v('pass'), now: 0 },
      { flag: on(25), verdict: v('fail', ['errors']), now: 10 },   // rollback decided (applied false); Unleash answers 5xx
      { flag: on(25), verdict: v('pass'), now: 20, applied: true },  // still on at 25 %: roll back again; this time it works
      { flag: { state: 'off', percent: 25 }, verdict: v('pass'), now: 30 },
      { flag: on(25), verdict: v('pass'), now: 40 },                 // now on again: an operator's resume
    ]);
    assert.deepEqual(out.map((o) => [o.action.kind, o.record.state, o.record.applied]), [
      ['none', 'holding', true], ['rollback', 'rolled-back', false], ['rollback', 'rolled-back', true], ['none', 'rolled-back', true], ['none', 'holding', true],
    ]);
    assert.match(out[2]?.action.kind === 'rollback' ? out[2].action.reason : '', /retrying the rollback decided earlier: Unleash still has the flag on at 25 %/);

    const shifted = run([
      { flag: on(25), verdict: v('fail', ['errors']), now: 0 },
      { flag: on(10), verdict: v('pass'), now: 10 }, // the rollback failed, then an operator shifted to 10 %
    ]);
    assert.deepEqual(shifted.map((o) => [o.action.kind, o.record.state]), [['rollback', 'rolled-back'], ['pause', 'paused']], 'the operator\'s 10 % is held, not rolled back nor promoted');
  });

  test('an operator\'s shift to 0 % with the flag on pauses the plan (never restarted from step 1) until a new resume note', () => {
    const on = (percent: number, lastChange: string) => ({ state: 'on' as const, percent, lastChange });
    const out = run([
      { flag: on(5, 'resume by cli:bob'), verdict: v('pass'), now: 0 },
      { flag: on(0, 'resume by cli:bob'), verdict: v('pass'), now: 100 },     // shifted in the Unleash UI: the note is stale
      { flag: on(0, 'resume by cli:bob'), verdict: v('pass'), now: 60_000 },  // still the note from before the pause
      { flag: on(0, 'resume at 2026-01-01T00:00:00.000Z by cli:bob'), verdict: v('pass'), now: 61_000 }, // bob resumes again
      { flag: on(1, 'shift 0→1% by controller'), verdict: v('pass'), now: 61_100 },
    ]);
    assert.deepEqual(out.map((o) => [o.action.kind, o.record.state]), [['none', 'holding'], ['pause', 'paused'], ['none', 'paused'], ['shift', 'holding'], ['none', 'holding']]);
    assert.deepEqual(out[3]?.action, { kind: 'shift', percent: 1, reason: 'plan step 1/5: start at 1 %' });
    // A record paused before pause reasons existed is released by the next resume, not by the note already there.
    const legacyPaused = { ...out[2]!.record, pause: undefined, version: 7 };
    const stay = decide({ record: legacyPaused, routeId: 'orders', flagName: 'strangler.orders', plan, guard, flag: on(0, 'resume by cli:bob'), verdict: v('pass'), now: 70_000 });
    assert.deepEqual([stay.record.state, stay.action.kind, stay.record.pause?.lastChange], ['paused', 'none', 'resume by cli:bob']);
  });

  test('each step is held at least minHoldMs (the gateways\' stats window) even when holdMs is shorter', () => {
    const on = (percent: number) => ({ state: 'on' as const, percent });
    const out = run([
      { flag: on(1), verdict: v('pass'), now: 0, minHoldMs: 5000 },
      { flag: on(1), verdict: v('pass'), now: 1000, minHoldMs: 5000 },
      { flag: on(1), verdict: v('pass'), now: 4999, minHoldMs: 5000 },
      { flag: on(1), verdict: v('pass'), now: 5000, minHoldMs: 5000 },
    ]);
    assert.deepEqual(out.map((o) => o.action.kind), ['none', 'none', 'none', 'shift']);
  });

  test('a gap between ticks longer than the guard window restarts the hold, unless the ticks are that far apart by config', () => {
    const at = (now: number, intervalMs?: number) => ({ record: undefined, routeId: 'orders', flagName: 'strangler.orders', plan, guard: { ...guard, windowMs: 5000 }, flag: { state: 'on' as const, percent: 1 }, verdict: v('pass'), now, ...(intervalMs ? { intervalMs } : {}) });
    const started = decide(at(0)).record;
    const late = decide({ ...at(5001), record: { ...started, version: 1 } });
    assert.deepEqual([late.action.kind, late.record.holdStartedAt], ['none', 5001], 'nobody watched 0..5001: held again');
    const onTime = decide({ ...at(5000), record: { ...started, version: 1 } });
    assert.equal(onTime.action.kind, 'shift');
    const slowTicks = decide({ ...at(10_000, 6000), record: { ...started, version: 1 } });
    assert.equal(slowTicks.action.kind, 'shift', 'controller.intervalMs 6 s: a 10 s gap is two intervals, not a blind stretch');
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

  test('a step whose shift found the flag moved by an operator (FLAG_CONFLICT) holds at the operator\'s percentage instead of retrying', () => {
    const on = (percent: number) => ({ state: 'on' as const, percent });
    const out = run([
      { flag: on(5), verdict: v('pass'), now: 0 },
      { flag: on(5), verdict: v('pass'), now: 1000 },   // decide 25 from 5; the shift conflicts, nothing written
      { flag: on(10), verdict: v('pass'), now: 1100 },  // the operator's 10 %: kept, not overridden with 25
      { flag: on(10), verdict: v('pass'), now: 9000 },
    ]);
    assert.deepEqual(out.map((o) => o.action.kind), ['none', 'shift', 'pause', 'none']);
    assert.equal(out[1]?.record.fromPercent, 5);
    assert.deepEqual([out[2]?.record.state, out[2]?.record.targetPercent, out[2]?.record.applied, out[2]?.record.stepIndex, out[2]?.record.holdStartedAt], ['paused', 10, true, 1, null]);
    assert.equal(out[3]?.record.state, 'paused');
  });

  test('a step that reached Unleash late (Unleash down, retried) is held from when it landed, not from when it was decided', () => {
    const on = (percent: number) => ({ state: 'on' as const, percent });
    const late: Parameters<typeof run>[0] = [{ flag: on(1), verdict: v('pass'), now: 0 }, { flag: on(1), verdict: v('pass'), now: 1000, applied: false }];
    for (let t = 4000; t <= 60_000; t += 4000) late.push({ flag: on(1), verdict: v('pass'), now: t, applied: t === 60_000 }); // retries fail until 60 s
    late.push({ flag: on(5), verdict: v('pass'), now: 60_500 }, { flag: on(5), verdict: v('pass'), now: 61_000 });
    const out = run(late).slice(-3);
    assert.deepEqual(out.map((o) => o.action.kind), ['shift', 'none', 'shift'], '5 % is held 1000 ms from 60 000, when it landed');
    assert.equal(out[1]?.record.holdStartedAt, 60_000);
  });

  test('a plan edited between runs of the controller goes on from the live percentage: never down, never ended early', () => {
    const on = (percent: number) => ({ state: 'on' as const, percent });
    const at25 = run([{ flag: on(25), verdict: v('pass'), now: 0 }])[0]!.record; // stepIndex 2 of [1, 5, 25, 50, 100]
    const next = (steps: number[], percent: number, state = at25) => decide({ record: { ...state, version: 1 }, routeId: 'orders', flagName: 'strangler.orders', plan: planSchema.parse({ steps, holdMs: 1000 }), guard, flag: on(percent), verdict: v('pass'), now: 5000 });
    assert.deepEqual(next([1, 2, 3, 4, 10, 100], 25).action, { kind: 'shift', percent: 100, reason: 'plan step 6/6: 25 → 100 % after 5 s healthy' });
    const fewer = next([10, 25, 100], 25);
    assert.deepEqual([fewer.record.state, fewer.action.kind === 'shift' && fewer.action.percent, fewer.record.stepIndex], ['holding', 100, 2]);
    const completed = { ...at25, state: 'completed' as const, targetPercent: 25 };
    const extended = next([1, 5, 25, 50], 25, completed);
    assert.deepEqual([extended.record.state, extended.record.holdStartedAt, extended.action.kind], ['holding', 5000, 'none'], 'an extended plan holds its step again, then goes on');
    assert.equal(next([1, 5, 25], 25, completed).record.state, 'completed');
  });

  test('plan.steps must increase', () => {
    assert.throws(() => planSchema.parse({ steps: [1, 50, 5, 100] }), /strictly increasing/);
    assert.throws(() => planSchema.parse({ steps: [5, 5] }), /strictly increasing/);
  });
});
