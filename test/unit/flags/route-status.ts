/** Builds GET /admin/routes route entries for guard and controller tests. */
import { LATENCY_BOUNDS_MS, quantileMs } from '../../../gateway/observability/stats.ts';
import type { RouteStatus, TargetWindowStats } from '../../../gateway/admin/types.ts';

export interface SideSpec {
  requests: number;
  errors?: number;
  fallbacks?: number;
  /** Every request of this side took about this long. */
  latencyMs?: number;
}

function side(spec: SideSpec, all: number, fallbacksAreAttempts: boolean): TargetWindowStats {
  const counts = new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0);
  const bucket = LATENCY_BOUNDS_MS.findIndex((b) => (spec.latencyMs ?? 10) <= b);
  counts[bucket === -1 ? LATENCY_BOUNDS_MS.length : bucket] = spec.requests;
  const errors = spec.errors ?? 0;
  const fallbacks = spec.fallbacks ?? 0;
  const extra = fallbacksAreAttempts ? fallbacks : 0;
  return {
    requests: spec.requests,
    errors,
    errorRate: spec.requests + extra === 0 ? 0 : (errors + extra) / (spec.requests + extra),
    fallbacks,
    p50Ms: quantileMs(counts, 0.5),
    p99Ms: quantileMs(counts, 0.99),
    histogram: { boundsMs: [...LATENCY_BOUNDS_MS, null], counts },
    share: all === 0 ? 0 : spec.requests / all,
  };
}

export function routeStatus(id: string, flag: string, legacy: SideSpec, service: SideSpec, breaker: { state?: 'closed' | 'open' | 'halfOpen'; opens?: number } = {}): RouteStatus {
  const all = legacy.requests + service.requests;
  return {
    id,
    match: { pathPrefix: `/api/${id}`, methods: null },
    legacy: 'legacy',
    service: 'svc',
    flag: { name: flag, project: 'default', environment: 'development' },
    flagState: { known: true, enabled: true, rolloutPercent: null, localOverride: null },
    breaker: { state: breaker.state ?? 'closed', opens: breaker.opens ?? 0 },
    windowMs: 60_000,
    stats: { legacy: side(legacy, all, false), service: side(service, all, true) },
    totals: {
      legacy: { requests: legacy.requests, errors: legacy.errors ?? 0, fallbacks: 0, histogram: [] },
      service: { requests: service.requests, errors: service.errors ?? 0, fallbacks: service.fallbacks ?? 0, histogram: [] },
    },
    guard: null,
    plan: null,
  };
}
