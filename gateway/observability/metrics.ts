/**
 * GET /metrics: Prometheus text exposition, rendered from the same route statuses the admin API serves
 * (so a cluster's merged view and a single process render the same way).
 */
import type { RouteStatus, RoutesResponse, Target } from '../admin/types.ts';
import { LATENCY_BOUNDS_MS } from './stats.ts';

const BREAKER_VALUE = { closed: 0, halfOpen: 1, open: 2 } as const;

function label(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

export function renderMetrics(view: RoutesResponse): string {
  const out: string[] = [];
  const family = (name: string, type: string, help: string) => out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  const targets: Target[] = ['legacy', 'service'];
  const each = (fn: (r: RouteStatus, t: Target, l: string) => void) => {
    for (const r of view.routes) for (const t of targets) fn(r, t, `route="${label(r.id)}",target="${t}"`);
  };

  family('strangler_requests_total', 'counter', 'Requests answered, by route and target.');
  each((r, t, l) => out.push(`strangler_requests_total{${l}} ${r.totals[t].requests}`));
  family('strangler_request_errors_total', 'counter', 'Answers with status >= 500 or a proxy error.');
  each((r, t, l) => out.push(`strangler_request_errors_total{${l}} ${r.totals[t].errors}`));
  family('strangler_fallbacks_total', 'counter', 'Service failures answered by legacy instead.');
  for (const r of view.routes) out.push(`strangler_fallbacks_total{route="${label(r.id)}"} ${r.totals.service.fallbacks}`);

  family('strangler_request_duration_seconds', 'histogram', 'Time from request to response headers and body, by route and target.');
  each((r, t, l) => {
    let cumulative = 0;
    const counts = r.totals[t].histogram;
    LATENCY_BOUNDS_MS.forEach((bound, i) => {
      cumulative += counts[i] ?? 0;
      out.push(`strangler_request_duration_seconds_bucket{${l},le="${bound / 1000}"} ${cumulative}`);
    });
    cumulative += counts[LATENCY_BOUNDS_MS.length] ?? 0;
    out.push(`strangler_request_duration_seconds_bucket{${l},le="+Inf"} ${cumulative}`);
    out.push(`strangler_request_duration_seconds_sum{${l}} ${(r.totals[t].sumMs ?? 0) / 1000}`);
    out.push(`strangler_request_duration_seconds_count{${l}} ${cumulative}`);
  });

  family('strangler_breaker_state', 'gauge', 'Circuit breaker state of the route\'s service: 0 closed, 1 half-open, 2 open.');
  for (const r of view.routes) if (r.service) out.push(`strangler_breaker_state{route="${label(r.id)}",upstream="${label(r.service)}"} ${BREAKER_VALUE[r.breaker.state]}`);
  family('strangler_breaker_opens_total', 'counter', 'Times the breaker opened.');
  for (const r of view.routes) if (r.service) out.push(`strangler_breaker_opens_total{route="${label(r.id)}",upstream="${label(r.service)}"} ${r.breaker.opens}`);

  family('strangler_flag_enabled', 'gauge', 'Route flag as this gateway sees it: 1 enabled, 0 disabled or unknown.');
  for (const r of view.routes) out.push(`strangler_flag_enabled{route="${label(r.id)}",flag="${label(r.flag.name)}"} ${r.flagState.enabled && !r.flagState.localOverride ? 1 : 0}`);
  family('strangler_flag_rollout_percent', 'gauge', 'Rollout percentage of the route flag as this gateway sees it; no sample when the flag is not one sticky percentage.');
  // An unknown share ("?": constraints, several strategies, another strategy) has no sample rather than a false 0.
  for (const r of view.routes) if (r.flagState.rolloutPercent !== null) out.push(`strangler_flag_rollout_percent{route="${label(r.id)}",flag="${label(r.flag.name)}"} ${r.flagState.rolloutPercent}`);
  family('strangler_flags_ready', 'gauge', '1 when flag data is loaded (else every route goes to legacy).');
  out.push(`strangler_flags_ready ${view.gateway.ready ? 1 : 0}`);
  return `${out.join('\n')}\n`;
}
