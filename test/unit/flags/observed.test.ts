/** `flags status` marks gateways that do not serve what Unleash has, instead of leaving two tables to compare. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatObserved, markMismatches, type ObservedRoute } from '../../../flags/observed.ts';

const seen = (gateway: string, serves: string, servesPercent: number | null): ObservedRoute => ({
  gateway, error: null, requests: 10, serves, servesPercent, mismatch: null, serviceShare: 0.1, breaker: 'closed',
  errorRate: { legacy: 0, service: 0 }, p99Ms: { legacy: 1, service: 1 }, fallbacks: 0, guard: null, plan: null,
});

test('regression: a gateway holding a local rollback while Unleash is on, or lagging a rollback, is marked as differing', () => {
  const observed = {
    orders: [seen('http://gw-a', 'legacy (local override)', 0), seen('http://gw-b', '25%', 25)],
    users: [seen('http://gw-a', '5%', 5), seen('http://gw-b', 'off', 0)],
    carts: [seen('http://gw-a', '?%', null)],
  };
  const rows = [
    { routeId: 'orders', state: 'on' as const, percent: 25, effectivePercent: 25 },
    { routeId: 'users', state: 'off' as const, percent: 5, effectivePercent: 0 },
    { routeId: 'carts', state: 'on' as const, percent: 10, effectivePercent: 10 },
  ];
  assert.equal(markMismatches(rows, observed), 3);
  assert.deepEqual(observed.orders.map((o) => o.mismatch), ['Unleash: on at 25 %', null]);
  assert.deepEqual(observed.users.map((o) => o.mismatch), ['Unleash: off', null]);
  assert.equal(observed.carts[0]?.mismatch, 'Unleash: on at 10 %', 'a gateway that cannot say one percentage does not serve the configured one');
  const table = formatObserved(observed);
  assert.match(table, /orders\s+http:\/\/gw-a\s+legacy \(local override\) ≠ Unleash: on at 25 %/);
  assert.match(table, /users\s+http:\/\/gw-a\s+5% ≠ Unleash: off/);
  assert.match(table, /3 gateway entries do not serve what Unleash has/);
  assert.equal(markMismatches(rows.map((r) => ({ ...r, state: 'on' as const, percent: 25, effectivePercent: 25 })).slice(0, 1), { orders: [seen('http://gw-b', '25%', 25)] }), 0);
});
