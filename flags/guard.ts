/**
 * The canary guard: compares a route's service side with its legacy side over the gateways' stats window and says
 * pass, fail or insufficient. Pure: no I/O, no clock; the controller feeds it merged gateway views.
 *
 * - Fewer than `minRequests` service requests (fallbacks included: each is a failed service attempt), or none at all
 *   (even with minRequests: 0) → insufficient. "Not enough data" is its own outcome and never counts as a pass.
 * - Otherwise fail when any of: service error rate − legacy error rate > maxErrorRateIncrease; service p99 / legacy
 *   p99 > maxP99Ratio (skipped while legacy has no latency data); fallbacks > maxFallbacks; breaker opens in the
 *   window > maxBreakerOpens (a breaker open right now counts as at least one).
 */
import type { GuardConfig } from '../gateway/config/schema.ts';
import type { RouteStatus, RoutesResponse } from '../gateway/admin/types.ts';

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
  // No service traffic is "no data" even when minRequests is 0: nothing was compared, so nothing can pass.
  const needed = Math.max(1, guard.minRequests);
  if (serviceAttempts < needed) {
    const windowMs = input.route.windowMs > 0 ? input.route.windowMs : guard.windowMs;
    metrics.timeToVerdictMs = serviceAttempts === 0 ? null : Math.ceil(((needed - serviceAttempts) * windowMs) / serviceAttempts);
    const eta = metrics.timeToVerdictMs === null ? 'no service traffic yet' : `≈${Math.ceil(metrics.timeToVerdictMs / 1000)} s more at the current rate`;
    return { outcome: 'insufficient', reasons: [`${serviceAttempts} service requests in the window, ${needed} needed for a verdict (${eta})`], metrics };
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

/** OpensHistory as stored in the controller state (JSON). */
export interface OpensSnapshot {
  samples: { at: number; total: number }[];
  last: Record<string, { at: number; instanceId: string | null; opens: number }>;
}

/** One gateway's cumulative breaker-open counter for a route, as read in one tick. */
export interface OpensSample {
  /** Which gateway (its configured URL): counters are only ever compared with the same gateway's earlier value. */
  gateway: string;
  /** The gateway's instanceId; a new one means the process restarted and its counter began again at zero. */
  instanceId: string | undefined;
  opens: number;
}

/**
 * Breaker openings inside the window, from each gateway's cumulative counter sampled over time. The history keeps
 * its own running total built from per-gateway increases only, so a gateway that misses a read, comes back or
 * restarts never turns other gateways' old openings into new ones:
 * - a gateway's first sample (or its first after more than a window without one) only sets its baseline;
 * - a gateway that missed reads is compared with its last sample, so openings during the gap count when it is back;
 * - a new instanceId is a restart: its whole counter is new openings (since the restart);
 * - a decrease under the same instanceId (a worker of a --workers gateway restarted) rebases without counting, since
 *   how many of the remaining openings are new is unknown; a breaker open right now still counts in the guard.
 * inWindow = running total now − the running total at the newest sample at or before the window start.
 */
export class OpensHistory {
  readonly #windowMs: number;
  #samples: { at: number; total: number }[] = [];
  #last = new Map<string, { at: number; instanceId: string | undefined; opens: number }>();

  constructor(windowMs: number, saved?: OpensSnapshot) {
    this.#windowMs = windowMs;
    if (saved) {
      this.#samples = saved.samples.map((s) => ({ at: s.at, total: s.total }));
      for (const [gateway, l] of Object.entries(saved.last)) this.#last.set(gateway, { at: l.at, instanceId: l.instanceId ?? undefined, opens: l.opens });
    }
  }

  /** What the controller persists with the plan record, so a restarted controller (a new pod) compares with its predecessor's last samples. */
  snapshot(): OpensSnapshot {
    const last: OpensSnapshot['last'] = {};
    const newest = this.#samples.at(-1)?.at ?? 0;
    // A gateway not sampled for more than a window would only set a baseline again: not worth keeping (a removed gateway).
    for (const [gateway, l] of this.#last) if (newest - l.at <= this.#windowMs) last[gateway] = { at: l.at, instanceId: l.instanceId ?? null, opens: l.opens };
    return { samples: this.#samples.map((s) => ({ ...s })), last };
  }

  /** Records the counters of the gateways that answered at `at` (gateways that did not answer are simply absent). */
  record(at: number, samples: readonly OpensSample[]): void {
    let added = 0;
    for (const s of samples) {
      const prev = this.#last.get(s.gateway);
      if (prev && at - prev.at <= this.#windowMs) {
        if (prev.instanceId !== s.instanceId) added += s.opens;
        else if (s.opens >= prev.opens) added += s.opens - prev.opens;
      }
      this.#last.set(s.gateway, { at, instanceId: s.instanceId, opens: s.opens });
    }
    this.#samples.push({ at, total: (this.#samples.at(-1)?.total ?? 0) + added });
  }

  inWindow(now: number): number {
    const latest = this.#samples.at(-1);
    if (!latest) return 0;
    const start = now - this.#windowMs;
    let base = this.#samples[0]!;
    for (const s of this.#samples) if (s.at <= start) base = s;
    // Keep one sample at or before the window start, drop older ones.
    const keepFrom = this.#samples.indexOf(base);
    if (keepFrom > 0) this.#samples = this.#samples.slice(keepFrom);
    return latest.total - base.total;
  }
}

/**
 * Why the gateways do not (yet) serve `percent` for a route: one line per gateway that reports another percentage,
 * the flag off or unknown, a local rollback override, or an error reading Unleash. Empty = every gateway that answered
 * serves the step. Stats from a gateway that lags describe the previous step (or a stale one), so the controller
 * treats them as "not yet measurable", as Flagger waits for the canary to be ready before its analysis.
 */
/** One gateway's answer to GET /admin/routes in a controller tick, with the URL it was read from. */
export interface GatewayView {
  gateway: string;
  response: RoutesResponse;
}

export function gatewaysNotServing(views: readonly GatewayView[], routeId: string, percent: number): string[] {
  const reasons: string[] = [];
  for (const { gateway, response } of views) {
    const route = response.routes.find((r) => r.id === routeId);
    const problems: string[] = [];
    if (!route) problems.push(`does not report route ${routeId} (its config differs)`);
    else {
      const f = route.flagState;
      if (f.localOverride !== null) problems.push(`routes the flag to ${f.localOverride} (local rollback override, kept until a resume or until it sees the flag off and then on in Unleash)`);
      if (!f.known) problems.push('does not know the flag');
      else if (!f.enabled) problems.push('serves the flag off');
      else if (f.rolloutPercent !== percent) problems.push(`serves ${f.rolloutPercent ?? 'an unknown'} % instead of ${percent} %`);
    }
    const flagsError = response.gateway.flagsError ?? response.gateway.degraded;
    if (flagsError) problems.push(`cannot read Unleash: ${flagsError}`);
    if (problems.length > 0) reasons.push(`gateway ${gateway} ${problems.join('; ')}`);
  }
  return reasons;
}

/**
 * A pass or insufficient verdict becomes insufficient while gateways lag, or while a gateway in flags.gateways did
 * not answer (`unread`, one line each: its traffic, errors and breaker openings are not in the merged view, so a pass
 * would be judged on part of the traffic). A fail stays a fail: the service did fail where it was seen.
 */
export function withGatewaysServing(verdict: GuardVerdict, lagging: readonly string[], unread: readonly string[] = []): GuardVerdict {
  if ((lagging.length === 0 && unread.length === 0) || verdict.outcome === 'fail') return verdict;
  const waiting = [...unread, ...lagging.map((l) => `waiting for the gateways to serve the step: ${l}`)];
  return { ...verdict, outcome: 'insufficient', reasons: verdict.outcome === 'insufficient' ? [...waiting, ...verdict.reasons] : waiting };
}
