/**
 * Builds the read API's JSON from runtime state, and merges the views of several workers or gateways into one
 * (sums of counts and histogram buckets, so merged quantiles are exact to the bucket).
 */
import type { Runtime } from '../runtime.ts';
import type { RouteStatus, RoutesResponse, Target, TargetWindowStats, BreakerState } from './types.ts';
import { quantileMs } from '../observability/stats.ts';

export function routeStatuses(runtime: Runtime): RouteStatus[] {
  const { config, breakers } = runtime.snapshot;
  return config.routes.map((route) => {
    const stats = runtime.stats(route.id);
    const breaker = route.service ? breakers.get(route.service) : undefined;
    const totals = (t: Target) => {
      const x = stats.totals(t);
      return { requests: x.requests, errors: x.errors, fallbacks: x.fallbacks, sumMs: x.sumMs, histogram: [...x.histogram] };
    };
    return {
      id: route.id,
      match: { ...route.match, methods: route.match.methods ? [...route.match.methods] : null },
      legacy: route.legacy,
      service: route.service ?? '',
      flag: { name: route.flag.name, project: route.flag.project, environment: route.flag.environment },
      flagState: runtime.flags.state(route.flag.name),
      breaker: { state: breaker?.state ?? 'closed', opens: breaker?.opens ?? 0 },
      windowMs: stats.windowMs,
      stats: stats.window(),
      totals: { legacy: totals('legacy'), service: totals('service') },
      guard: route.guard ? { enabled: route.guard.enabled, lastVerdict: null, lastCheckedAt: null } : null,
      plan: route.plan ? { steps: [...route.plan.steps], stepIndex: -1, state: 'not-started', holdUntil: null } : null,
    };
  });
}

export function routesResponse(runtime: Runtime, workers = 1): RoutesResponse {
  const status = runtime.flags.status;
  return {
    gateway: {
      instanceId: runtime.instanceId,
      workers,
      ready: status.ready,
      degraded: degradedReason(runtime),
      flagsSynchronized: status.synchronized,
      flagsError: status.lastError,
      reloadError: runtime.reload.lastError?.message ?? null,
    },
    routes: routeStatuses(runtime),
  };
}

export function degradedReason(runtime: Runtime): string | null {
  const s = runtime.flags.status;
  if (!s.ready) return 'no flag data (Unleash unreachable, no backup, no bootstrap): every route goes to legacy';
  if (s.authError) return `Unleash refused the token: ${s.lastError ?? ''}`;
  return null;
}

const BREAKER_RANK: Record<BreakerState, number> = { closed: 0, halfOpen: 1, open: 2 };

/** `fallbacksAreAttempts`: on the service side a fallback is a failed attempt (as in RouteStats.window). */
function mergeTarget(parts: TargetWindowStats[], allRequests: number, fallbacksAreAttempts: boolean): TargetWindowStats {
  const first = parts[0] as TargetWindowStats;
  const counts = first.histogram.counts.map((_, i) => parts.reduce((sum, p) => sum + (p.histogram.counts[i] ?? 0), 0));
  const requests = parts.reduce((s, p) => s + p.requests, 0);
  const errors = parts.reduce((s, p) => s + p.errors, 0);
  const fallbacks = parts.reduce((s, p) => s + p.fallbacks, 0);
  const extra = fallbacksAreAttempts ? fallbacks : 0;
  return {
    requests,
    errors,
    errorRate: requests + extra === 0 ? 0 : (errors + extra) / (requests + extra),
    fallbacks,
    p50Ms: quantileMs(counts, 0.5),
    p99Ms: quantileMs(counts, 0.99),
    histogram: { boundsMs: first.histogram.boundsMs, counts },
    share: allRequests === 0 ? 0 : requests / allRequests,
  };
}

/** One view of several gateways' (or workers') routes: counts summed, breaker = worst state, flag state from the first. */
export function mergeRouteStatuses(views: RouteStatus[][]): RouteStatus[] {
  const first = views[0];
  if (!first) return [];
  return first.map((route) => {
    const same = views.map((v) => v.find((r) => r.id === route.id)).filter((r): r is RouteStatus => r !== undefined);
    const all = same.reduce((s, r) => s + r.stats.legacy.requests + r.stats.service.requests, 0);
    const worst = same.reduce((w, r) => (BREAKER_RANK[r.breaker.state] > BREAKER_RANK[w] ? r.breaker.state : w), 'closed' as BreakerState);
    return {
      ...route,
      breaker: { state: worst, opens: same.reduce((s, r) => s + r.breaker.opens, 0) },
      stats: { legacy: mergeTarget(same.map((r) => r.stats.legacy), all, false), service: mergeTarget(same.map((r) => r.stats.service), all, true) },
      totals: { legacy: addTotals(same.map((r) => r.totals.legacy)), service: addTotals(same.map((r) => r.totals.service)) },
      flagState: same.some((r) => r.flagState.localOverride) ? { ...route.flagState, localOverride: 'legacy' } : route.flagState,
    };
  });
}

type Totals = RouteStatus['totals'][Target];

/** Lifetime totals added up: counters, latency sums, and histograms bucket by bucket. */
function addTotals(parts: readonly Totals[]): Totals {
  const sum = (of: (p: Totals) => number) => parts.reduce((s, p) => s + of(p), 0);
  const buckets = Math.max(0, ...parts.map((p) => p.histogram.length));
  return {
    requests: sum((p) => p.requests),
    errors: sum((p) => p.errors),
    fallbacks: sum((p) => p.fallbacks),
    sumMs: sum((p) => p.sumMs ?? 0),
    histogram: Array.from({ length: buckets }, (_, i) => sum((p) => p.histogram[i] ?? 0)),
  };
}

/** Lifetime totals a cluster primary keeps for workers that have exited, by route id (see addRetiredTotals). */
export type RetiredTotals = Map<string, { totals: RouteStatus['totals']; opens: number }>;

/** Adds an exited worker's last reported lifetime totals to `retired`. */
export function retireTotals(retired: RetiredTotals, routes: readonly RouteStatus[]): void {
  for (const r of routes) {
    const before = retired.get(r.id);
    retired.set(r.id, {
      totals: before ? { legacy: addTotals([before.totals.legacy, r.totals.legacy]), service: addTotals([before.totals.service, r.totals.service]) } : r.totals,
      opens: (before?.opens ?? 0) + r.breaker.opens,
    });
  }
}

/**
 * Lifetime counters stay monotonic across worker restarts: a restarted worker counts from zero, so the totals of
 * the workers that exited are added back (otherwise the summed counter drops and Prometheus, taking the drop for a
 * reset, counts every surviving worker's total again as new increase).
 */
export function addRetiredTotals(routes: RouteStatus[], retired: RetiredTotals): RouteStatus[] {
  if (retired.size === 0) return routes;
  return routes.map((route) => {
    const r = retired.get(route.id);
    if (!r) return route;
    return { ...route, breaker: { ...route.breaker, opens: route.breaker.opens + r.opens }, totals: { legacy: addTotals([route.totals.legacy, r.totals.legacy]), service: addTotals([route.totals.service, r.totals.service]) } };
  });
}
