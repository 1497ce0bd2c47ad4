/**
 * The promotion controller: every intervalMs it reads each gateway's GET /admin/routes, merges them (counts and
 * histogram buckets summed), evaluates each route's guard, and advances its plan.
 *
 *   step i applied ──guard passes for max(holdMs, the gateways' stats window) without a break──► step i+1 ──…──► completed
 *        │ guard insufficient / alert, a gateway not yet serving Unleash's percentage, or one not answering: the hold restarts
 *        └ guard fails: action rollback (flag off) | pause (stay, until `flags resume`) | alert (log)
 *
 * Decisions are written to the state store by compare-and-set before they are applied in Unleash, so of two
 * controllers only one can move a step; a step or rollback decided but not yet applied (crash, Unleash down) is retried.
 * Operators win: a manual rollback puts the plan in rolled-back; a manual shift (the rollout moved outside the plan)
 * pauses it where the operator put it, with the reason in the state; `flags resume` hands it back to the plan.
 */
import { messageOf } from '../common/errors.ts';
import { mergeRouteStatuses } from '../gateway/admin/status.ts';
import type { RouteStatus, RoutesResponse } from '../gateway/admin/types.ts';
import { guardSchema, type GuardConfig, type PlanConfig } from '../gateway/config/schema.ts';
import type { FlagsControl, GatewayRef, ManagedRoute } from './control.ts';
import type { PlanRecord, StateStore } from './controller-state.ts';
import { evaluateGuard, gatewaysNotServing, OpensHistory, withGatewaysServing, type GatewayView, type GuardVerdict } from './guard.ts';
import { FLAGS_LOG } from './log-events.ts';
import { rollbackRoute, routeStatus, shiftRoute, type RouteFlagStatus } from './traffic.ts';

export type ControllerAction =
  | { kind: 'none' }
  | { kind: 'shift'; percent: number; reason: string }
  | { kind: 'rollback'; reason: string }
  | { kind: 'alert'; reason: string }
  | { kind: 'pause'; reason: string };

export interface DecideInput {
  record: PlanRecord | undefined;
  routeId: string;
  flagName: string;
  plan: PlanConfig | undefined;
  guard: GuardConfig;
  flag: Pick<RouteFlagStatus, 'state' | 'percent'> & Partial<Pick<RouteFlagStatus, 'lastChange' | 'drift'>>;
  verdict: GuardVerdict;
  now: number;
  /** A decided but unapplied step is re-applied only this long after it was decided (another controller may still be applying it). */
  retryAfterMs?: number;
  /** The gateways' stats window: each step is held at least this long, so the window that promotes it holds only its own traffic. */
  minHoldMs?: number;
  /** controller.intervalMs: a gap between two ticks longer than the windows (and than two intervals) restarts the hold. */
  intervalMs?: number;
}

/**
 * How long a plan step is held: holdMs, but at least the gateways' stats window, so the window that promotes a step
 * holds only that step's traffic. The controller, its status view and the gateway's plan view all use this.
 */
export function planHoldMs(plan: PlanConfig, statsWindowMs: number): number {
  return Math.max(plan.holdMs, statsWindowMs);
}

/** Index of the last step ≤ percent (-1 when below the first step). */
function positionOf(steps: readonly number[], percent: number): number {
  let index = -1;
  steps.forEach((s, i) => { if (s <= percent) index = i; });
  return index;
}

/** The pure state machine: the next record and the one action to apply. */
export function decide(input: DecideInput): { record: PlanRecord; action: ControllerAction } {
  const { plan, guard, flag, verdict, now } = input;
  const base: PlanRecord = input.record ?? {
    routeId: input.routeId, flag: input.flagName, state: plan ? 'holding' : 'monitoring', stepIndex: -1, targetPercent: null, applied: true,
    holdStartedAt: null, lastVerdict: null, lastReasons: [], lastCheckedAt: null, updatedAt: now, version: 0,
  };
  // `pause` is carried only by the branches that stay paused.
  const { pause: storedPause, ...unpaused } = base;
  const record: PlanRecord = { ...unpaused, lastVerdict: verdict.outcome, lastReasons: verdict.reasons, lastCheckedAt: now, updatedAt: now };
  const none = { kind: 'none' } as const;
  const steps = plan?.steps ?? [];

  if (flag.state === 'missing') return { record: { ...record, state: 'waiting', holdStartedAt: null }, action: none };
  const percent = flag.percent ?? 0;
  const lastChange = flag.lastChange ?? null;

  // First sight, or coming back from waiting / rolled-back with the flag on: position the plan at the live percentage.
  const reposition = (): PlanRecord => {
    if (!plan) return { ...record, state: 'monitoring', targetPercent: percent, applied: true, holdStartedAt: now };
    const at = positionOf(steps, percent);
    if (at === -1) {
      const first = steps[0]!;
      return { ...record, state: 'holding', stepIndex: 0, targetPercent: first, applied: false, fromPercent: percent, holdStartedAt: now };
    }
    return { ...record, state: at === steps.length - 1 && percent >= steps[at]! ? 'completed' : 'holding', stepIndex: at, targetPercent: percent, applied: true, holdStartedAt: now };
  };
  const startStep = (r: PlanRecord): ControllerAction => (r.applied ? none : { kind: 'shift', percent: r.targetPercent!, reason: `plan step ${r.stepIndex + 1}/${steps.length}: start at ${r.targetPercent} %` });
  // The rollout moved outside the plan (a shift by hand, the dashboard, the Unleash UI, sync --fix): the operator's
  // position is kept, as Argo Rollouts keeps a paused rollout, until they hand the route back with `flags resume`.
  // A shift to 0 % with the flag on is how an operator pauses a route; the plan must never restart from its first step.
  // The action logs it (flags: controller paused the plan), once per change by hand.
  const heldByOperator = (from: number | null | undefined): [PlanRecord, ControllerAction] => {
    const how = flag.drift && flag.drift.length > 0 ? `changed outside strangler: ${flag.drift.join('; ')}` : lastChange ? `"${lastChange}"` : 'no note recorded';
    const reason = `rollout moved ${from ?? '?'} % → ${percent} % outside the plan (${how}); the plan holds until \`strangler flags resume ${input.routeId}\``;
    const held: PlanRecord = { ...record, state: 'paused', stepIndex: positionOf(steps, percent), targetPercent: percent, applied: true, holdStartedAt: null, pause: { reason, since: now, lastChange } };
    return [held, { kind: 'pause', reason }];
  };

  if (flag.state === 'off') {
    // Rolled back (by us or by an operator): nothing to do until someone resumes.
    return { record: { ...record, state: 'rolled-back', holdStartedAt: null, applied: true }, action: none };
  }
  if (input.record && base.state === 'rolled-back' && !base.applied && (base.targetPercent === null || percent === base.targetPercent)) {
    // Our rollback is decided but Unleash still has the flag on at the same percentage (the Unleash write failed):
    // that is no operator's resume, so roll back again. A different percentage is an operator's shift: followed below.
    return { record: { ...record, holdStartedAt: null }, action: { kind: 'rollback', reason: `retrying the rollback decided earlier: Unleash still has the flag on at ${percent} %` } };
  }

  // Where the plan stands before the guard is consulted.
  let current = record;
  let pending: ControllerAction = none;
  let settled = false; // true: nothing more to decide this tick unless the guard fails
  if (plan && input.record && base.state === 'rolled-back' && !base.applied) {
    // Our rollback never reached Unleash, and an operator shifted meanwhile: their position, held.
    [current, pending] = heldByOperator(base.targetPercent);
    settled = true;
  } else if (!input.record || base.state === 'waiting' || base.state === 'rolled-back' || (plan && base.state === 'monitoring')) {
    current = reposition();
    pending = startStep(current);
    settled = true;
  } else if (base.state === 'paused') {
    settled = true;
    // A record paused before `pause` existed is released by the next resume note, not by the one already there.
    const pause = storedPause ?? { reason: 'paused', since: now, lastChange };
    if (lastChange !== null && lastChange !== pause.lastChange && /^resume\b/.test(lastChange)) {
      // `strangler flags resume` (CLI, dashboard, admin API): the plan goes on from the live percentage.
      current = reposition();
      pending = startStep(current);
    } else if (base.targetPercent !== null && percent !== base.targetPercent) {
      if (plan) [current, pending] = heldByOperator(base.targetPercent);
      else current = reposition();
    } else {
      current = { ...record, pause };
    }
  } else if (!base.applied && base.targetPercent !== null) {
    settled = true;
    if (percent === base.targetPercent) {
      // In Unleash now, but not marked (a crash after the write, or a retry that landed): the hold counts from here,
      // not from when the step was decided, so the step is never promoted on the previous step's traffic.
      current = { ...record, applied: true, holdStartedAt: now };
    } else if (base.fromPercent !== undefined && percent !== base.fromPercent) {
      // Neither where the step started nor where it goes: an operator shifted meanwhile (the step's shift found the
      // flag changed and wrote nothing, FLAG_CONFLICT). Their position wins over the step.
      if (plan) [current, pending] = heldByOperator(base.fromPercent);
      else current = reposition();
    } else if (now - (base.holdStartedAt ?? 0) >= (input.retryAfterMs ?? 0)) {
      // Decided earlier, not yet in Unleash (crash or Unleash error): apply again. The hold starts with this write
      // (however long Unleash was down), and the next retry waits retryAfterMs from it.
      current = { ...record, holdStartedAt: now };
      pending = { kind: 'shift', percent: base.targetPercent, reason: `plan step ${base.stepIndex + 1}/${steps.length}: ${base.targetPercent} % (retry)` };
    }
  } else if (base.targetPercent !== null && percent !== base.targetPercent) {
    // An operator shifted by hand: the plan holds at their percentage (a guard-only route just follows).
    if (plan) [current, pending] = heldByOperator(base.targetPercent);
    else current = reposition();
    settled = true;
  }

  if (guard.enabled && verdict.outcome === 'fail') {
    const reason = `guard failed at ${percent} %: ${verdict.reasons.join('; ')}`;
    const { pause: currentPause, ...active } = current;
    // applied: false until Unleash has the flag off (#apply marks it; a failed write is retried on the next tick).
    if (guard.action === 'rollback') return { record: { ...active, state: 'rolled-back', holdStartedAt: null, applied: false, targetPercent: percent }, action: { kind: 'rollback', reason } };
    if (guard.action === 'pause') {
      const pause = currentPause ?? { reason: `${reason}; the plan holds until \`strangler flags resume ${input.routeId}\``, since: now, lastChange };
      return { record: { ...active, state: 'paused', holdStartedAt: null, applied: true, targetPercent: percent, pause }, action: base.state === 'paused' && input.record ? none : { kind: 'pause', reason } };
    }
    return { record: { ...current, holdStartedAt: now }, action: { kind: 'alert', reason } }; // never move a step while failing
  }
  if (settled) return { record: current, action: pending };
  if (base.state === 'paused' || base.state === 'monitoring' || !plan) return { record, action: none };
  // The next step comes from the plan as configured now and the live percentage, not from the stored index: a plan
  // edited between two runs of the controller never moves the percentage down, skips a step or ends early.
  const at = positionOf(steps, percent);
  if (base.state === 'completed') {
    if (at >= steps.length - 1) return { record, action: none };
    // The plan was extended past where it had completed: hold this step again, then go on.
    return { record: { ...record, state: 'holding', stepIndex: at, holdStartedAt: now }, action: none };
  }

  // holding, at step `at`
  const here: PlanRecord = { ...record, stepIndex: at };
  if (guard.enabled && verdict.outcome !== 'pass') return { record: { ...here, holdStartedAt: now }, action: none };
  // A controller that did not look for longer than the window (stopped, restarting, no leader, Unleash unreadable)
  // never judged what happened meanwhile (a breaker that opened and closed, errors aged out of the stats window):
  // the hold starts again rather than promoting on a stretch nobody watched.
  const unwatched = base.lastCheckedAt !== null && now - base.lastCheckedAt > Math.max(guard.windowMs, input.minHoldMs ?? 0, 2 * (input.intervalMs ?? 0));
  const holdStartedAt = unwatched ? now : base.holdStartedAt ?? now;
  if (now - holdStartedAt < planHoldMs(plan, input.minHoldMs ?? 0)) return { record: { ...here, holdStartedAt }, action: none };
  const nextIndex = at + 1;
  if (nextIndex >= steps.length) return { record: { ...here, state: 'completed', holdStartedAt }, action: none };
  const target = steps[nextIndex]!;
  return {
    record: { ...record, stepIndex: nextIndex, targetPercent: target, applied: false, fromPercent: percent, holdStartedAt: now },
    action: { kind: 'shift', percent: target, reason: `plan step ${nextIndex + 1}/${steps.length}: ${percent} → ${target} % after ${Math.round((now - holdStartedAt) / 1000)} s healthy` },
  };
}

export interface ControllerOptions {
  control: FlagsControl;
  store: StateStore;
  now?: () => number;
  /** Reads one gateway's GET /admin/routes (replaceable in tests). */
  readGateway?: (gateway: GatewayRef) => Promise<RoutesResponse>;
}

export interface TickReport {
  leader: boolean;
  gatewaysRead: number;
  routes: { routeId: string; verdict: GuardVerdict; record: PlanRecord; action: ControllerAction; conflict: boolean; error: string | null }[];
}

export async function readGatewayRoutes(gateway: GatewayRef, timeoutMs = 2_000): Promise<RoutesResponse> {
  const url = `${gateway.url.replace(/\/+$/, '')}/admin/routes`;
  const res = await fetch(url, { headers: gateway.token ? { Authorization: `Bearer ${gateway.token}` } : {}, signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`GET ${url}: HTTP ${res.status}`);
  }
  return (await res.json()) as RoutesResponse;
}

export class PromotionController {
  #control: FlagsControl;
  #store: StateStore;
  #now: () => number;
  #readGateway: (gateway: GatewayRef) => Promise<RoutesResponse>;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<unknown> | undefined;
  #wasLeader: boolean | undefined;
  #windowWarned = new Set<string>();
  /** Route → the gateways' stats window last reported (a step is held at least this long). */
  #statsWindowMs = new Map<string, number>();

  constructor(options: ControllerOptions) {
    this.#control = options.control;
    this.#store = options.store;
    this.#now = options.now ?? Date.now;
    this.#readGateway = options.readGateway ?? ((g) => readGatewayRoutes(g, options.control.refreshTimeoutMs));
  }

  /** Routes the controller acts on: those with a guard or a plan. */
  routes(): ManagedRoute[] {
    return [...this.#control.routes.values()].filter((m) => m.route.guard !== undefined || m.route.plan !== undefined);
  }

  /** One pass over every guarded or planned route. */
  async tick(): Promise<TickReport> {
    const log = this.#control.log;
    const leader = await this.#store.acquireLeadership();
    if (leader !== this.#wasLeader) log.info({ leader }, FLAGS_LOG.controllerTick);
    this.#wasLeader = leader;
    if (!leader) return { leader, gatewaysRead: 0, routes: [] };

    const views = await Promise.allSettled(this.#control.gateways.map((g) => this.#readGateway(g)));
    const ok: GatewayView[] = [];
    const unread: string[] = [];
    views.forEach((v, i) => {
      const url = this.#control.gateways[i]!.url;
      if (v.status === 'fulfilled') ok.push({ gateway: url, response: v.value });
      else {
        log.warn({ gateway: url, err: messageOf(v.reason) }, FLAGS_LOG.gatewayReadFailed);
        unread.push(`no stats from gateway ${url} (${messageOf(v.reason)}): its traffic cannot be judged, so the plan does not advance`);
      }
    });
    const merged = new Map(mergeRouteStatuses(ok.map((v) => v.response.routes)).map((r) => [r.id, r]));
    const records = await this.#store.loadAll();
    const report: TickReport = { leader, gatewaysRead: ok.length, routes: [] };
    for (const managed of this.routes()) {
      report.routes.push(await this.#tickRoute(managed, merged.get(managed.routeId), records[managed.routeId], ok, unread));
    }
    return report;
  }

  async #tickRoute(managed: ManagedRoute, stats: RouteStatus | undefined, stored: PlanRecord | undefined, views: GatewayView[], unread: string[]): Promise<TickReport['routes'][number]> {
    const { log } = this.#control;
    const now = this.#now();
    const guard = managed.route.guard ?? guardSchema.parse({});
    const plan = managed.route.plan;
    const routeId = managed.routeId;
    let verdict: GuardVerdict;
    let history: OpensHistory | undefined;
    if (!stats) {
      verdict = { outcome: 'insufficient', reasons: [views.length === 0 ? 'no gateway answered GET /admin/routes' : 'no gateway reports this route'], metrics: emptyMetrics() };
    } else {
      if (stats.windowMs !== guard.windowMs && !this.#windowWarned.has(routeId)) {
        // The gateways' counters cover admin.statsWindowMs; the guard can only judge that window.
        this.#windowWarned.add(routeId);
        log.warn({ routeId, gatewayWindowMs: stats.windowMs, guardWindowMs: guard.windowMs }, FLAGS_LOG.guardWindowMismatch);
      }
      if (plan && plan.holdMs < stats.windowMs && this.#statsWindowMs.get(routeId) !== stats.windowMs) {
        // decide() holds each step for the whole window instead (minHoldMs); say so once per window size.
        log.warn({ routeId, holdMs: plan.holdMs, gatewayWindowMs: stats.windowMs }, FLAGS_LOG.planHoldShorterThanWindow);
      }
      this.#statsWindowMs.set(routeId, stats.windowMs);
      // From the stored record, not memory: a restarted controller (or a standby taking over) compares each gateway's
      // counter with the last one stored, so an opening between two controllers' ticks is not lost.
      history = new OpensHistory(guard.windowMs, stored?.opens);
      // Per gateway: a gateway that misses a read (or restarts) must not make the others' old openings look new.
      history.record(now, views.flatMap(({ gateway, response }) => {
        const r = response.routes.find((x) => x.id === routeId);
        return r ? [{ gateway, instanceId: response.gateway.instanceId, opens: r.breaker.opens }] : [];
      }));
      verdict = evaluateGuard(guard, { route: stats, breakerOpensInWindow: history.inWindow(now) });
    }
    let error: string | null = null;
    try {
      const [flag] = await routeStatus(this.#control, routeId);
      // Stats of a gateway that does not serve Unleash's percentage yet describe another step, and a gateway that did
      // not answer is not in the stats at all: no pass until every listed gateway answers and serves the step.
      if (stats && flag!.state === 'on') verdict = withGatewaysServing(verdict, gatewaysNotServing(views, routeId, flag!.effectivePercent), unread);
      const retryAfterMs = Math.max(2_000, 2 * this.#control.config.controller.intervalMs);
      const decided = decide({ record: stored, routeId, flagName: managed.flag.name, plan, guard, flag: flag!, verdict, now, retryAfterMs, intervalMs: this.#control.config.controller.intervalMs, ...(stats ? { minHoldMs: stats.windowMs } : {}) });
      const { action } = decided;
      const record: PlanRecord = history ? { ...decided.record, opens: history.snapshot() } : decided.record;
      log.debug({ routeId, outcome: verdict.outcome, reasons: verdict.reasons, state: record.state, action: action.kind }, FLAGS_LOG.guardVerdict);
      const written = await this.#store.compareAndSet(record, stored?.version ?? 0);
      if (!written) {
        log.info({ routeId }, FLAGS_LOG.controllerConflict);
        return { routeId, verdict, record, action, conflict: true, error };
      }
      const done = await this.#apply(managed, written, action, flag!);
      return { routeId, verdict, record: done, action, conflict: false, error };
    } catch (err) {
      error = messageOf(err);
      log.warn({ routeId, err: error }, FLAGS_LOG.controllerError);
      return { routeId, verdict, record: stored ?? ({} as PlanRecord), action: { kind: 'none' }, conflict: false, error };
    }
  }

  async #apply(managed: ManagedRoute, record: PlanRecord, action: ControllerAction, seen: RouteFlagStatus): Promise<PlanRecord> {
    const { log } = this.#control;
    const opts = { actor: 'controller', reason: 'reason' in action ? action.reason : undefined };
    switch (action.kind) {
      case 'shift': {
        // Only from the position the decision was made on: an operator's rollback (or shift) in between wins, the
        // shift fails with FLAG_CONFLICT and the next tick decides again.
        await shiftRoute(this.#control, managed.routeId, action.percent, { ...opts, expect: { enabled: seen.enabled, percent: seen.percent } });
        log.info({ routeId: managed.routeId, percent: action.percent, reason: action.reason }, FLAGS_LOG.controllerAdvance);
        return this.#markApplied(record);
      }
      case 'rollback':
        await rollbackRoute(this.#control, managed.routeId, opts);
        log.warn({ routeId: managed.routeId, reason: action.reason }, FLAGS_LOG.controllerRollback);
        return this.#markApplied(record);
      case 'pause':
        log.warn({ routeId: managed.routeId, reason: action.reason }, FLAGS_LOG.controllerPaused);
        return record;
      case 'alert':
        log.error({ routeId: managed.routeId, reason: action.reason }, FLAGS_LOG.controllerAlert);
        return record;
      default:
        return record;
    }
  }

  /** Records that the decided step is in Unleash; re-reads when a peer wrote in between (its write may not know). */
  async #markApplied(record: PlanRecord): Promise<PlanRecord> {
    let current: PlanRecord | undefined = record;
    for (let attempt = 0; attempt < 3 && current; attempt++) {
      if (current.applied || current.stepIndex !== record.stepIndex || current.targetPercent !== record.targetPercent) return current;
      const written = await this.#store.compareAndSet({ ...current, applied: true }, current.version);
      if (written) return written;
      current = (await this.#store.loadAll())[record.routeId];
    }
    return current ?? record;
  }

  /** Guard/plan view per route in the shape of GET /admin/routes (for the gateway's controllerState hook). */
  async view(): Promise<Record<string, Pick<RouteStatus, 'guard' | 'plan'>>> {
    const records = await this.#store.loadAll();
    const out: Record<string, Pick<RouteStatus, 'guard' | 'plan'>> = {};
    for (const managed of this.routes()) {
      const r = records[managed.routeId];
      const guard = managed.route.guard;
      const plan = managed.route.plan;
      out[managed.routeId] = {
        guard: { enabled: guard?.enabled ?? true, lastVerdict: r?.lastVerdict ?? null, lastCheckedAt: r?.lastCheckedAt ? new Date(r.lastCheckedAt).toISOString() : null },
        plan: plan ? {
          steps: [...plan.steps],
          stepIndex: r?.stepIndex ?? -1,
          state: r?.state ?? 'not-started',
          ...(r?.state === 'paused' && r.pause ? { reason: r.pause.reason } : {}),
          holdUntil: r?.state === 'holding' && r.holdStartedAt !== null
            ? new Date(r.holdStartedAt + planHoldMs(plan, this.#statsWindowMs.get(managed.routeId) ?? this.#control.config.admin.statsWindowMs)).toISOString()
            : null,
        } : null,
      };
    }
    return out;
  }

  /** Ticks every intervalMs (one tick at a time) until stop(). */
  start(intervalMs: number): void {
    const loop = () => {
      this.#running = this.tick().catch((err: unknown) => this.#control.log.warn({ err: messageOf(err) }, FLAGS_LOG.controllerError)).finally(() => {
        if (this.#timer !== undefined) this.#timer = setTimeout(loop, intervalMs);
      });
    };
    this.#timer = setTimeout(loop, 0);
  }

  async stop(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running;
    await this.#store.close();
  }
}

function emptyMetrics(): GuardVerdict['metrics'] {
  return { serviceRequests: 0, legacyRequests: 0, serviceErrorRate: 0, legacyErrorRate: 0, errorRateIncrease: 0, serviceP99Ms: null, legacyP99Ms: null, p99Ratio: null, fallbacks: 0, breakerOpens: 0, breakerState: 'closed', timeToVerdictMs: null };
}
