import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { evaluateGuard, gatewaysNotServing, OpensHistory, withGatewaysServing } from '../../../flags/guard.ts';
import type { RouteStatus, RoutesResponse } from '../../../gateway/admin/types.ts';
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

  test('no service traffic is insufficient even with minRequests: 0', () => {
    const zero = guardSchema.parse({ minRequests: 0 });
    const none = evaluateGuard(zero, { route: routeStatus('r', 'f', { requests: 1000, errors: 500 }, { requests: 0 }), breakerOpensInWindow: 0 });
    assert.deepEqual([none.outcome, none.reasons], ['insufficient', ['0 service requests in the window, 1 needed for a verdict (no service traffic yet)']]);
    assert.equal(evaluateGuard(zero, { route: routeStatus('r', 'f', { requests: 10 }, { requests: 1 }), breakerOpensInWindow: 0 }).outcome, 'pass');
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

describe('OpensHistory', () => {
  const at = (gateway: string, opens: number, instanceId = `${gateway}-1`) => ({ gateway, instanceId, opens });

  test('counts openings inside the window from cumulative counters; the first sample of a gateway is its baseline', () => {
    const h = new OpensHistory(1000);
    h.record(0, [at('a', 2)]);
    assert.equal(h.inWindow(0), 0, 'openings from before the first read are not in the window');
    h.record(500, [at('a', 3)]);
    assert.equal(h.inWindow(500), 1);
    h.record(2000, [at('a', 3)]);
    assert.equal(h.inWindow(2000), 0, 'the opening at 500 left the window');
  });

  test('a gateway that misses a read, comes back or is newly added never makes old openings look new', () => {
    const h = new OpensHistory(60_000);
    h.record(0, [at('a', 2), at('b', 3)]);
    h.record(10_000, [at('a', 2)]); // b did not answer
    assert.equal(h.inWindow(10_000), 0);
    h.record(20_000, [at('a', 2), at('b', 3)]);
    assert.equal(h.inWindow(20_000), 0, 'b is back with the same counter');
    h.record(30_000, [at('a', 2), at('b', 3), at('c', 7)]);
    assert.equal(h.inWindow(30_000), 0, 'a newly seen gateway only sets its baseline');
    h.record(40_000, [at('a', 2), at('c', 7)]);
    h.record(50_000, [at('a', 2), at('b', 4), at('c', 7)]);
    assert.equal(h.inWindow(50_000), 1, 'an opening during b\'s missed read counts once it answers again');
    h.record(200_000, [at('a', 2), at('b', 9), at('c', 7)]);
    assert.equal(h.inWindow(200_000), 0, 'after more than a window without a read, b starts from a new baseline');
  });

  test('a restart (new instanceId) counts from zero; a decrease under the same instance (a worker restarted) does not count old openings', () => {
    const h = new OpensHistory(60_000);
    h.record(0, [at('a', 2), at('b', 3)]);
    h.record(10_000, [at('a', 2), at('b', 1, 'b-2')]);
    assert.equal(h.inWindow(10_000), 1, 'b restarted and opened once since');
    h.record(20_000, [at('a', 1), at('b', 1, 'b-2')]);
    assert.equal(h.inWindow(20_000), 1, 'a\'s counter dropped: one of its workers restarted; nothing new is counted');
    h.record(30_000, [at('a', 2), at('b', 1, 'b-2')]);
    assert.equal(h.inWindow(30_000), 2);
  });
});

describe('gateways serving the step', () => {
  const view = (patch: Partial<RouteStatus['flagState']>, gateway: Partial<RoutesResponse['gateway']> = {}) => {
    const route = routeStatus('orders', 'f', { requests: 100 }, { requests: 100 });
    route.flagState = { known: true, enabled: true, rolloutPercent: 5, localOverride: null, ...patch };
    return { instanceId: '1', workers: 1, ready: true, degraded: null, flagsSynchronized: true, flagsError: null, ...gateway, route };
  };
  const lagging = (...views: ReturnType<typeof view>[]) =>
    gatewaysNotServing(views.map(({ route, ...gateway }, i) => ({ gateway: `http://gw${i}`, response: { gateway, routes: [route] } })), 'orders', 5);

  test('every gateway at the step, on, without override or error: nothing lags', () => {
    assert.deepEqual(lagging(view({}), view({})), []);
  });

  test('each way of not serving the step is named with the gateway', () => {
    assert.deepEqual(lagging(view({}), view({ rolloutPercent: 1 })), ['gateway http://gw1 serves 1 % instead of 5 %']);
    assert.deepEqual(lagging(view({ localOverride: 'legacy' })), ['gateway http://gw0 routes the flag to legacy (local rollback override, kept until a resume or until it sees the flag off and then on in Unleash)']);
    assert.deepEqual(lagging(view({ enabled: false })), ['gateway http://gw0 serves the flag off']);
    assert.deepEqual(lagging(view({ known: false, rolloutPercent: null })), ['gateway http://gw0 does not know the flag']);
    assert.deepEqual(lagging(view({ rolloutPercent: 1 }, { flagsError: 'Unleash refused the token (401)' })), ['gateway http://gw0 serves 1 % instead of 5 %; cannot read Unleash: Unleash refused the token (401)']);
    assert.deepEqual(gatewaysNotServing([{ gateway: 'http://gw0', response: { gateway: view({}), routes: [] } as unknown as RoutesResponse }], 'orders', 5), ['gateway http://gw0 does not report route orders (its config differs)']);
  });

  test('a lagging gateway turns a pass into insufficient; a fail stays a fail', () => {
    const pass = verdict('r', 'f', { requests: 1000 }, { requests: 100 });
    const waiting = withGatewaysServing(pass, ['gateway http://gw1 serves 1 % instead of 5 %']);
    assert.deepEqual([waiting.outcome, waiting.reasons], ['insufficient', ['waiting for the gateways to serve the step: gateway http://gw1 serves 1 % instead of 5 %']]);
    const fail = verdict('r', 'f', { requests: 100 }, { requests: 100, errors: 50 });
    assert.equal(withGatewaysServing(fail, ['x']).outcome, 'fail');
    assert.equal(withGatewaysServing(pass, []), pass);
    const unread = withGatewaysServing(pass, [], ['no stats from gateway http://gw2 (HTTP 401)']);
    assert.deepEqual([unread.outcome, unread.reasons], ['insufficient', ['no stats from gateway http://gw2 (HTTP 401)']]);
    assert.equal(withGatewaysServing(fail, [], ['no stats from gateway http://gw2 (HTTP 401)']).outcome, 'fail');
  });
});
