import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { evaluateGuard, OpensHistory } from '../../../flags/guard.ts';
import { guardSchema } from '../../../gateway/config/schema.ts';
import { mergeRouteStatuses } from '../../../gateway/admin/status.ts';
import { routeStatus } from './route-status.ts';

const guard = guardSchema.parse({ minRequests: 50, maxErrorRateIncrease: 0.05, maxP99Ratio: 2, maxFallbacks: 10, maxBreakerOpens: 0 });
const verdict = (...args: Parameters<typeof routeStatus>) => evaluateGuard(guard, { route: routeStatus(...args), breakerOpensInWindow: 0 });

describe('evaluateGuard', () => {
  test('fewer service requests than minRequests is insufficient, never a pass, even when everything is failing', () => {
    const v = verdict('r', 'f', { requests: 1000 }, { requests: 49, errors: 49 });
    assert.equal(v.outcome, 'insufficient');
    assert.match(v.reasons[0] ?? '', /49 service requests in the window, 50 needed for a verdict \(≈2 s more at the current rate\)/);
    assert.equal(v.metrics.timeToVerdictMs, 1225, '1 more request at 49 per 60 s');
    assert.equal(verdict('r', 'f', { requests: 10 }, { requests: 0 }).metrics.timeToVerdictMs, null);
  });

  test('a healthy service passes', () => {
    const v = verdict('r', 'f', { requests: 1000, errors: 10, latencyMs: 20 }, { requests: 100, errors: 2, latencyMs: 22 });
    assert.equal(v.outcome, 'pass');
    assert.deepEqual(v.reasons, []);
  });

  test('each limit fails on its own, at the boundary pair', () => {
    // error rate: legacy 1 %, service 6 % → +5 points passes; 7 % fails
    assert.equal(verdict('r', 'f', { requests: 100, errors: 1 }, { requests: 100, errors: 6 }).outcome, 'pass');
    const err = verdict('r', 'f', { requests: 100, errors: 1 }, { requests: 100, errors: 7 });
    assert.equal(err.outcome, 'fail');
    assert.match(err.reasons[0] ?? '', /error rate 7.00 % vs legacy 1.00 %/);
    // p99: both in known buckets; 5 ms vs 25 ms bucket → ratio well above 2
    const slow = verdict('r', 'f', { requests: 100, latencyMs: 4 }, { requests: 100, latencyMs: 40 });
    assert.equal(slow.outcome, 'fail');
    assert.match(slow.reasons.join(), /p99 .* > allowed ×2/);
    // fallbacks: 10 allowed, 11 fail (each fallback is also a failed attempt, so keep the rate limit out of the way)
    const g = guardSchema.parse({ maxErrorRateIncrease: 1 });
    assert.equal(evaluateGuard(g, { route: routeStatus('r', 'f', { requests: 100 }, { requests: 100, fallbacks: 10 }), breakerOpensInWindow: 0 }).outcome, 'pass');
    const fb = evaluateGuard(g, { route: routeStatus('r', 'f', { requests: 100 }, { requests: 100, fallbacks: 11 }), breakerOpensInWindow: 0 });
    assert.deepEqual(fb.reasons, ['11 fallbacks to legacy > allowed 10']);
  });

  test('breaker opens in the window fail; an open breaker counts as one even without a recorded opening', () => {
    assert.equal(evaluateGuard(guard, { route: routeStatus('r', 'f', { requests: 100 }, { requests: 100 }), breakerOpensInWindow: 1 }).outcome, 'fail');
    const open = evaluateGuard(guard, { route: routeStatus('r', 'f', { requests: 100 }, { requests: 100 }, { state: 'open' }), breakerOpensInWindow: 0 });
    assert.match(open.reasons[0] ?? '', /breaker opened 1× \(now open\)/);
  });

  test('no legacy latency data skips the p99 check instead of dividing by nothing', () => {
    const v = verdict('r', 'f', { requests: 0 }, { requests: 100, latencyMs: 900 });
    assert.equal(v.outcome, 'pass');
    assert.equal(v.metrics.p99Ratio, null);
  });

  test('windows of several gateways are merged by summing counts and histogram buckets', () => {
    // Each gateway alone has too few requests; together they reach a verdict, and the errors add up.
    const a = routeStatus('orders', 'f', { requests: 300, latencyMs: 8 }, { requests: 30, errors: 3, latencyMs: 8 });
    const b = routeStatus('orders', 'f', { requests: 300, latencyMs: 8 }, { requests: 30, errors: 3, latencyMs: 8 });
    assert.equal(evaluateGuard(guard, { route: a, breakerOpensInWindow: 0 }).outcome, 'insufficient');
    const [merged] = mergeRouteStatuses([[a], [b]]);
    assert.ok(merged);
    assert.equal(merged.stats.service.requests, 60);
    assert.deepEqual(merged.stats.service.histogram.counts.reduce((x, y) => x + y, 0), 60);
    const v = evaluateGuard(guard, { route: merged, breakerOpensInWindow: 0 });
    assert.equal(v.outcome, 'fail');
    assert.equal(v.metrics.serviceErrorRate, 0.1);
  });
});

test('OpensHistory counts openings inside the window from a cumulative counter, surviving counter resets', () => {
  const h = new OpensHistory();
  h.record(0, 2);
  assert.equal(h.inWindow(0, 1000), 0);
  h.record(500, 3);
  assert.equal(h.inWindow(500, 1000), 1);
  h.record(2000, 3);
  assert.equal(h.inWindow(2000, 1000), 0, 'the opening at 500 left the window');
  h.record(2500, 1); // gateway restarted: counter reset to 0, then one opening
  assert.equal(h.inWindow(2500, 1000), 1);
});
