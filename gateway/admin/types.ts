/**
 * JSON shapes of the control plane's read API (GET /admin/*). The CLI (`strangler flags status`), the migration
 * dashboard and the promotion controller all read these; change them only together with their readers.
 */

export type Target = 'legacy' | 'service';
export type BreakerState = 'closed' | 'open' | 'halfOpen';

/** Counters for one route × target over the sliding window (default 60 s). */
export interface TargetWindowStats {
  requests: number;
  /** Answers with status >= 500 or proxy errors, as the client saw them from this target. */
  errors: number;
  errorRate: number;
  /** Requests that failed on this target and were answered by legacy instead (only meaningful for 'service'). */
  fallbacks: number;
  p50Ms: number | null;
  p99Ms: number | null;
  /** Latency histogram over the window: upper bounds in ms (last is +Inf as null) and counts; lets readers merge gateways exactly. */
  histogram: { boundsMs: (number | null)[]; counts: number[] };
  /** Share of this route's requests that this target answered in the window, 0..1. */
  share: number;
}

export interface RouteStatus {
  id: string;
  match: { pathPrefix?: string; pattern?: string; methods: string[] | null; host?: string };
  legacy: string;
  service: string;
  flag: { name: string; project: string; environment: string };
  /** What this gateway's unleash-client currently sees. null = flag unknown to the SDK (routes to legacy). */
  flagState: { known: boolean; enabled: boolean; rolloutPercent: number | null; localOverride: 'legacy' | null };
  breaker: { state: BreakerState; opens: number };
  windowMs: number;
  stats: Record<Target, TargetWindowStats>;
  /**
   * Since start: counters, the cumulative latency histogram (bucket counts, bounds as in stats.histogram) and the sum
   * of the latencies in ms (absent from gateways older than this field).
   */
  totals: Record<Target, { requests: number; errors: number; fallbacks: number; sumMs?: number; histogram: number[] }>;
  /** Filled by the controller when a guard or plan is configured for the route. */
  guard: { enabled: boolean; lastVerdict: string | null; lastCheckedAt: string | null } | null;
  /** reason: while paused, why (an operator's shift outside the plan, or the guard) and how to resume. */
  plan: { steps: number[]; stepIndex: number; state: string; holdUntil: string | null; reason?: string } | null;
}

export interface RoutesResponse {
  gateway: {
    instanceId: string;
    workers: number;
    ready: boolean;
    degraded: string | null;
    flagsSynchronized: boolean;
    flagsError: string | null;
    /** Why the last config reload was refused (the last good config still serves); null after a good one. Absent from older gateways. */
    reloadError?: string | null;
  };
  routes: RouteStatus[];
}
