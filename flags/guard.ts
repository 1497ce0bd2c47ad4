/**
 * The canary guard: compares a route's service side with its legacy side over the gateways' stats window and says
 * pass, fail or insufficient. Pure: no I/O, no clock; the controller feeds it merged gateway views.
 *
 * - Fewer than `minRequests` service requests (fallbacks included: each is a failed service attempt) → insufficient.
 *   "Not enough data" is its own outcome and never counts as a pass.
 * - Otherwise fail when any of: service error rate − legacy error rate > maxErrorRateIncrease; service p99 / legacy
 *   p99 > maxP99Ratio (skipped while legacy has no latency data); fallbacks > maxFallbacks; breaker opens in the
 *   window > maxBreakerOpens (a breaker open right now counts as at least one).
 */
import type { GuardConfig } from '../gateway/config/schema.ts';
import type { RouteStatus } from '../gateway/admin/types.ts';

export type GuardOutcome = 'pass' | 'fail' | 'insufficient';

export interface GuardMetrics {
  serviceRequests: number;
  legacyRequests: number;
  serviceErrorRate: number;
  legacyErrorRate: number;
  errorRateIncrease: number;
  serviceP99Ms: number | null;
  legacyP99Ms: number | null;
  p99Ratio: number | null;
  fallbacks: number;
  breakerOpens: number;
  breakerState: string;
  /** While insufficient: estimated ms until minRequests at the current service request rate (null = no service traffic). */
  timeToVerdictMs: number | null;
}

export interface GuardVerdict {
  outcome: GuardOutcome;
  /** One line per failed check (or why the verdict is insufficient). Empty on pass. */
  reasons: string[];
  metrics: GuardMetrics;
}

export interface GuardInput {
  /** The route merged across gateways (counts and histogram buckets summed). */
  route: RouteStatus;
  /** Breaker openings within the guard window (the controller derives it from the cumulative counter). */
  breakerOpensInWindow: number;
}

const pct = (x: number) => `${(x * 100).toFixed(2)} %`;

export function evaluateGuard(guard: GuardConfig, input: GuardInput): GuardVerdict {
  const { service, legacy } = input.route.stats;
  const serviceAttempts = service.requests + service.fallbacks;
  const breakerOpens = Math.max(input.breakerOpensInWindow, input.route.breaker.state === 'open' ? 1 : 0);
  const p99Ratio = service.p99Ms !== null && legacy.p99Ms !== null && legacy.p99Ms > 0 ? service.p99Ms / legacy.p99Ms : null;
  const metrics: GuardMetrics = {
    serviceRequests: serviceAttempts,
    legacyRequests: legacy.requests,
    serviceErrorRate: service.errorRate,
    legacyErrorRate: legacy.errorRate,
    errorRateIncrease: service.errorRate - legacy.errorRate,
    serviceP99Ms: service.p99Ms,
    legacyP99Ms: legacy.p99Ms,
    p99Ratio,
    fallbacks: service.fallbacks,
    breakerOpens,
    breakerState: input.route.breaker.state,
    timeToVerdictMs: 0,
  };
  if (serviceAttempts < guard.minRequests) {
    const windowMs = input.route.windowMs > 0 ? input.route.windowMs : guard.windowMs;
    metrics.timeToVerdictMs = serviceAttempts === 0 ? null : Math.ceil(((guard.minRequests - serviceAttempts) * windowMs) / serviceAttempts);
    const eta = metrics.timeToVerdictMs === null ? 'no service traffic yet' : `≈${Math.ceil(metrics.timeToVerdictMs / 1000)} s more at the current rate`;
    return { outcome: 'insufficient', reasons: [`${serviceAttempts} service requests in the window, ${guard.minRequests} needed for a verdict (${eta})`], metrics };
  }
  const reasons: string[] = [];
  if (metrics.errorRateIncrease > guard.maxErrorRateIncrease) {
    reasons.push(`error rate ${pct(service.errorRate)} vs legacy ${pct(legacy.errorRate)}: +${pct(metrics.errorRateIncrease)} > allowed +${pct(guard.maxErrorRateIncrease)}`);
  }
  if (p99Ratio !== null && p99Ratio > guard.maxP99Ratio) {
    reasons.push(`p99 ${service.p99Ms?.toFixed(1)} ms vs legacy ${legacy.p99Ms?.toFixed(1)} ms: ×${p99Ratio.toFixed(2)} > allowed ×${guard.maxP99Ratio}`);
  }
  if (service.fallbacks > guard.maxFallbacks) reasons.push(`${service.fallbacks} fallbacks to legacy > allowed ${guard.maxFallbacks}`);
  if (breakerOpens > guard.maxBreakerOpens) reasons.push(`breaker opened ${breakerOpens}× (now ${input.route.breaker.state}) > allowed ${guard.maxBreakerOpens}`);
  return { outcome: reasons.length > 0 ? 'fail' : 'pass', reasons, metrics };
}

/**
 * Breaker openings inside the window from a cumulative counter sampled over time: latest − the newest sample at or
 * before the window start (or the oldest sample, while the history is shorter than the window). Counter resets
 * (a gateway restarted) count from zero.
 */
export class OpensHistory {
  #samples: { at: number; opens: number }[] = [];

  record(at: number, opens: number): void {
    const last = this.#samples.at(-1);
    if (last && opens < last.opens) this.#samples = [{ at: last.at, opens: 0 }];
    this.#samples.push({ at, opens });
  }

  inWindow(now: number, windowMs: number): number {
    const latest = this.#samples.at(-1);
    if (!latest) return 0;
    const start = now - windowMs;
    let base = this.#samples[0]!;
    for (const s of this.#samples) if (s.at <= start) base = s;
    // Keep one sample at or before the window start, drop older ones.
    const keepFrom = this.#samples.indexOf(base);
    if (keepFrom > 0) this.#samples = this.#samples.slice(keepFrom);
    return Math.max(0, latest.opens - base.opens);
  }
}
