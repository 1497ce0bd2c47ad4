/**
 * One opossum breaker per service upstream, built from the route's named policy. The breaker wraps the whole
 * service attempt; the attempt resolves to a typed outcome, and only real service failures (connect, timeout,
 * reset, 5xx) reject, so 4xx answers never trip it. A client's hang-up is not an outcome: the attempt goes on
 * without the client and settles with the service's own (forward.ts, Attempt.abort). opossum's own timeout is off:
 * the forwarder owns timeouts so it can cancel the upstream request it started.
 */
import CircuitBreaker from 'opossum';
import type { BreakerPolicy } from '../config/schema.ts';
import type { BreakerState } from '../admin/types.ts';
import type { Logger } from '../../common/logger.ts';
import { logEvent } from '../observability/log-events.ts';

type Action = (...args: unknown[]) => Promise<unknown>;

export interface BreakerView {
  upstream: string;
  policy: string;
  state: BreakerState;
  opens: number;
  stats: { fires: number; failures: number; successes: number; rejects: number };
}

export class Breaker {
  readonly upstream: string;
  readonly policyName: string;
  readonly #breaker: CircuitBreaker<[Action, ...unknown[]], unknown>;
  /** Times it opened, counted from the first breaker of this upstream (a reload that rebuilds it passes it on). */
  opens: number;

  constructor(upstream: string, policyName: string, policy: BreakerPolicy, log: Logger, opens = 0) {
    this.upstream = upstream;
    this.policyName = policyName;
    this.opens = opens;
    this.#breaker = new CircuitBreaker<[Action, ...unknown[]], unknown>((action: Action, ...args: unknown[]) => action(...args), {
      name: upstream,
      timeout: false,
      errorThresholdPercentage: policy.errorThresholdPercentage,
      volumeThreshold: policy.volumeThreshold,
      resetTimeout: policy.resetTimeoutMs,
      rollingCountTimeout: policy.rollingCountTimeoutMs,
      rollingCountBuckets: policy.rollingCountBuckets,
      rollingPercentilesEnabled: false,
      enableSnapshots: false,
    });
    this.#breaker.on('open', () => {
      this.opens++;
      logEvent(log, 'breaker.open', { upstream, policy: policyName });
    });
    this.#breaker.on('halfOpen', () => logEvent(log, 'breaker.half_open', { upstream }));
    this.#breaker.on('close', () => logEvent(log, 'breaker.close', { upstream }));
  }

  /**
   * Runs `action(...args)` through the breaker (arguments passed along, so callers need no closure per call).
   * Rejects with an error whose code is EOPENBREAKER when open.
   */
  fire<A extends unknown[], T>(action: (...args: A) => Promise<T>, ...args: A): Promise<T> {
    return this.#breaker.fire(action as unknown as Action, ...args) as Promise<T>;
  }

  get state(): BreakerState {
    return this.#breaker.opened ? 'open' : this.#breaker.halfOpen ? 'halfOpen' : 'closed';
  }

  /** opossum emitter, for tests that wait on 'open' / 'halfOpen' / 'close'. */
  get events(): CircuitBreaker<[Action, ...unknown[]], unknown> {
    return this.#breaker;
  }

  view(): BreakerView {
    const s = this.#breaker.stats;
    return { upstream: this.upstream, policy: this.policyName, state: this.state, opens: this.opens, stats: { fires: s.fires, failures: s.failures, successes: s.successes, rejects: s.rejects } };
  }

  shutdown(): void {
    this.#breaker.shutdown();
  }
}

export function isOpenBreakerError(err: unknown): boolean {
  return (err as { code?: string } | null)?.code === 'EOPENBREAKER';
}
