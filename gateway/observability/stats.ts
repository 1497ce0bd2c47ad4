/**
 * Per route × target statistics: lifetime totals (for /metrics) and a sliding window (for the admin API, the
 * dashboard and the guard). Recording is a few array increments; nothing allocates per request.
 */
import type { Target, TargetWindowStats } from '../admin/types.ts';

/** Histogram upper bounds in ms; the last bucket is +Inf. */
export const LATENCY_BOUNDS_MS: readonly number[] = [0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];
const BUCKETS = LATENCY_BOUNDS_MS.length + 1;

function bucketOf(ms: number): number {
  for (let i = 0; i < LATENCY_BOUNDS_MS.length; i++) if (ms <= (LATENCY_BOUNDS_MS[i] as number)) return i;
  return LATENCY_BOUNDS_MS.length;
}

/** Quantile from a bucketed histogram, interpolated linearly inside the bucket. */
export function quantileMs(counts: readonly number[], q: number): number | null {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i] as number;
    if (c > 0 && seen + c >= rank) {
      const lo = i === 0 ? 0 : (LATENCY_BOUNDS_MS[i - 1] as number);
      const hi = i < LATENCY_BOUNDS_MS.length ? (LATENCY_BOUNDS_MS[i] as number) : lo * 2;
      return lo + (hi - lo) * Math.min(1, Math.max(0, (rank - seen) / c));
    }
    seen += c;
  }
  return LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.length - 1] ?? null;
}

class Counts {
  requests = 0;
  errors = 0;
  fallbacks = 0;
  /** Sum of the recorded durations (Prometheus' histogram _sum). */
  sumMs = 0;
  readonly histogram = new Array<number>(BUCKETS).fill(0);
  reset(): void {
    this.requests = this.errors = this.fallbacks = this.sumMs = 0;
    this.histogram.fill(0);
  }
}

class TargetStats {
  readonly totals = new Counts();
  readonly #buckets: Counts[];
  readonly #bucketMs: number;
  #current = 0;
  #currentStart: number;

  constructor(windowMs: number, buckets: number, now: number) {
    this.#bucketMs = Math.max(1, Math.floor(windowMs / buckets));
    this.#buckets = Array.from({ length: buckets }, () => new Counts());
    this.#currentStart = now;
  }

  #advance(now: number): Counts {
    let steps = Math.floor((now - this.#currentStart) / this.#bucketMs);
    if (steps > 0) {
      this.#currentStart += steps * this.#bucketMs;
      steps = Math.min(steps, this.#buckets.length);
      for (let i = 0; i < steps; i++) {
        this.#current = (this.#current + 1) % this.#buckets.length;
        (this.#buckets[this.#current] as Counts).reset();
      }
    }
    return this.#buckets[this.#current] as Counts;
  }

  record(now: number, durationMs: number, error: boolean): void {
    const b = this.#advance(now);
    const bucket = bucketOf(durationMs);
    b.requests++;
    this.totals.requests++;
    this.totals.sumMs += durationMs;
    (b.histogram[bucket] as number)++;
    (this.totals.histogram[bucket] as number)++;
    if (error) {
      b.errors++;
      this.totals.errors++;
    }
  }

  fallback(now: number): void {
    this.#advance(now).fallbacks++;
    this.totals.fallbacks++;
  }

  /** Empties the sliding window; the lifetime totals stay (Prometheus counters never go down). */
  restartWindow(): void {
    for (const b of this.#buckets) b.reset();
  }

  window(now: number): Counts {
    this.#advance(now);
    const sum = new Counts();
    for (const b of this.#buckets) {
      sum.requests += b.requests;
      sum.errors += b.errors;
      sum.fallbacks += b.fallbacks;
      for (let i = 0; i < BUCKETS; i++) (sum.histogram[i] as number) += b.histogram[i] as number;
    }
    return sum;
  }
}

export class RouteStats {
  readonly windowMs: number;
  readonly #targets: Record<Target, TargetStats>;
  readonly #now: () => number;

  constructor(windowMs: number, now: () => number = Date.now) {
    this.windowMs = windowMs;
    this.#now = now;
    const t = now();
    this.#targets = { legacy: new TargetStats(windowMs, 12, t), service: new TargetStats(windowMs, 12, t) };
  }

  /** One answered request: `target` is who produced the answer the client got. */
  record(target: Target, durationMs: number, error: boolean): void {
    this.#targets[target].record(this.#now(), durationMs, error);
  }

  /** The service failed and legacy answered instead: a service failure even though the client got an answer. */
  fallback(): void {
    this.#targets.service.fallback(this.#now());
  }

  /** A fresh window for both targets (a new analysis); lifetime totals are kept. */
  restartWindow(): void {
    this.#targets.legacy.restartWindow();
    this.#targets.service.restartWindow();
  }

  totals(target: Target): { requests: number; errors: number; fallbacks: number; sumMs: number; histogram: readonly number[] } {
    return this.#targets[target].totals;
  }

  window(): Record<Target, TargetWindowStats> {
    const now = this.#now();
    const legacy = this.#targets.legacy.window(now);
    const service = this.#targets.service.window(now);
    // A fallback is answered by legacy but counts as a service attempt when computing shares and error rates.
    const all = legacy.requests + service.requests;
    const view = (c: Counts, extraAttempts: number): TargetWindowStats => {
      const attempts = c.requests + extraAttempts;
      return {
        requests: c.requests,
        errors: c.errors,
        errorRate: attempts === 0 ? 0 : (c.errors + extraAttempts) / attempts,
        fallbacks: c.fallbacks,
        p50Ms: quantileMs(c.histogram, 0.5),
        p99Ms: quantileMs(c.histogram, 0.99),
        histogram: { boundsMs: [...LATENCY_BOUNDS_MS, null], counts: [...c.histogram] },
        share: all === 0 ? 0 : c.requests / all,
      };
    };
    return { legacy: view(legacy, 0), service: view(service, service.fallbacks) };
  }
}
