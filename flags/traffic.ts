/**
 * Traffic control for one route's flag: status, shift, rollback, resume. Used by `strangler flags …`, by the
 * gateway's admin API (POST /admin/routes/:id/shift|rollback|resume) and by the promotion controller.
 *
 * - shift: PATCH the flexibleRollout strategy's rollout (validated 0–100 first; Unleash accepts "101" or "abc").
 *   The environment's on/off state is left alone: shifting a rolled-back route records the new percentage, which
 *   applies once the route is resumed. A shift decided on an earlier read (the controller's) passes `expect` and
 *   fails with FLAG_CONFLICT, writing and pushing nothing, when the flag moved meanwhile: a rollback always wins.
 * - rollback: the push to every gateway (their local override to legacy) starts first and happens whatever
 *   Unleash answers; then environment /off and the annotation. The strategy stays, so resume restores exactly the
 *   previous percentage.
 * - resume: environment /on, only when the managed strategy exists (otherwise Unleash would add its default). The
 *   resume push always goes out, even when Unleash was already on: it is what clears the gateways' local override
 *   left by a rollback that could not switch Unleash off.
 *
 * Every change writes the intent (rollout, on/off, who, why) into the strategy title, so Unleash's event log shows
 * it, logs one `flags: traffic change` line (who, when, from, to, reason) and pushes a refresh to every gateway.
 * On any validation or lookup error nothing is changed.
 */
import { userInfo } from 'node:os';
import { StranglerError, messageOf } from '../common/errors.ts';
import type { FeatureEnvironmentState, Strategy } from './admin-api.ts';
import { formatTitle, note, parseTitle } from './annotation.ts';
import { managedRoute, type FlagsControl, type ManagedRoute } from './control.ts';
import { FLAGS_LOG } from './log-events.ts';
import { pushRefresh, type RefreshResult } from './refresh.ts';
import { compareFlag, driftText, findManagedStrategy, readEnvironmentState, rolloutOf, type DriftKind } from './sync.ts';

export interface ChangeOptions {
  reason?: string | null;
  /** Who asked: "cli:alice", "admin-api", "controller". */
  actor?: string;
}

/** Options of shiftRoute. */
export interface ShiftOptions extends ChangeOptions {
  /**
   * The position the caller decided on (the controller: on, at the percentage it read). When Unleash has
   * anything else now (an operator rolled back, resumed or shifted since), the shift fails with FLAG_CONFLICT and
   * nothing is written or pushed. Without it (operators) the shift applies to whatever state the flag is in.
   */
  expect?: FlagPosition;
}

export interface FlagPosition {
  enabled: boolean;
  /** null when the flag or its strategy does not exist, or the stored value is not 0..100. */
  percent: number | null;
}

export interface TrafficChange {
  routeId: string;
  flag: string;
  environment: string;
  action: 'shift' | 'rollback' | 'resume';
  from: FlagPosition;
  to: FlagPosition;
  /** What users see: percent when enabled, 0 when off. */
  effectivePercent: number;
  actor: string;
  reason: string | null;
  at: string;
  /** false when the route already was in the requested state (nothing written). */
  changed: boolean;
  refresh: RefreshResult[];
}

export interface RouteFlagStatus {
  routeId: string;
  flag: string;
  project: string;
  environment: string;
  /** 'missing': no flag or no strategy (run sync); 'off': rolled back; 'on': serving `percent`. */
  state: 'missing' | 'off' | 'on';
  enabled: boolean;
  percent: number | null;
  effectivePercent: number;
  strategies: number;
  stickiness: string | null;
  groupId: string | null;
  /** The last note strangler wrote ("shift by alice: …"), if any. */
  lastChange: string | null;
  /** Short descriptions of differences to the recorded intent; run `flags sync` for detail. */
  drift: string[];
}

/** Validates a percentage: an integer 0..100 (number or decimal string). Throws PERCENT_INVALID. */
export function parsePercent(value: unknown): number {
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^\s*\d+\s*$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isInteger(n) || n < 0 || n > 100) {
    throw new StranglerError('PERCENT_INVALID', `rollout percentage must be an integer from 0 to 100, got ${JSON.stringify(value)}`, { details: { value: String(value) } });
  }
  return n;
}

export function defaultActor(): string {
  try {
    return `cli:${userInfo().username}`;
  } catch {
    return 'cli';
  }
}

interface ReadState {
  state: FeatureEnvironmentState | undefined;
  strategy: Strategy | undefined;
  /** The flag is in Unleash's archive: gateways see no flag (every request to legacy), whatever its strategy says. */
  archived: boolean;
}

async function readState(control: FlagsControl, managed: ManagedRoute): Promise<ReadState> {
  const { name, project } = managed.flag;
  try {
    // Unleash still answers GET …/environments/{env} for an archived flag, strategy and all, and still takes a PATCH
    // of that strategy; only the flag itself (404 once archived) tells that no gateway sees it.
    // An environment missing from the project throws FLAG_ENVIRONMENT_MISSING (not "no flag": gateways may still be
    // served the flag as it was, and Unleash cannot switch it off there).
    const [feature, state] = await Promise.all([control.api.findFeature(project, name), readEnvironmentState(control, managed)]);
    if (!feature) return { state: undefined, strategy: undefined, archived: true };
    return { state, strategy: findManagedStrategy(state.strategies), archived: false };
  } catch (err) {
    if (err instanceof StranglerError && err.code === 'UNLEASH_NOT_FOUND') return { state: undefined, strategy: undefined, archived: false };
    throw err;
  }
}

function archivedText(managed: ManagedRoute): string {
  const { name, project } = managed.flag;
  return `flag "${name}" is archived in Unleash (project ${project}), so every gateway treats it as unknown and sends the route to legacy; revive it (Unleash UI → Archive, or POST /api/admin/archive/revive/${name}) and run \`strangler flags sync\``;
}

function requireSynced(managed: ManagedRoute, state: FeatureEnvironmentState | undefined, strategy: Strategy | undefined, action: string, archived: boolean): asserts strategy is Strategy {
  const { name, environment } = managed.flag;
  if (archived) throw new StranglerError('FLAG_NOT_SYNCED', `cannot ${action} route ${managed.routeId}: ${archivedText(managed)}`, { details: { routeId: managed.routeId, flag: name } });
  if (!state || !strategy) {
    throw new StranglerError('FLAG_NOT_SYNCED', `cannot ${action} route ${managed.routeId}: flag "${name}" has no flexibleRollout strategy in ${environment}; run \`strangler flags sync\` first`, { details: { routeId: managed.routeId, flag: name } });
  }
  // A strategy changed by hand in its structure (another strategy beside it, constraints or segments, another
  // stickiness or groupId, disabled) is not "this percentage of users": a shift or resume would report a share it
  // does not set (random stickiness even moves users on every request). Rollout and on/off drift do not block: the
  // action overwrites them. A rollback is never blocked.
  const blocking = compareFlag(managed, state).drift.filter((d) => STRUCTURAL_DRIFT.has(d.kind));
  if (blocking.length > 0) {
    throw new StranglerError('FLAG_DRIFT', `cannot ${action} route ${managed.routeId}: flag "${name}" in ${environment} was changed by hand, so its rollout is not one ${managed.flag.stickiness}-sticky percentage of users (${blocking.map(driftText).join('; ')}); run \`strangler flags sync\` to see the differences and \`--fix\` to restore strangler's strategy (at 0 % where restoring it would add users), then ${action} again. \`strangler flags rollback\` still works`, { details: { routeId: managed.routeId, flag: name, drift: blocking.map(driftText) } });
  }
}

/** Drift that makes a shift or resume not do what it reports (see requireSynced). */
const STRUCTURAL_DRIFT: ReadonlySet<DriftKind> = new Set(['extra-strategy', 'stickiness', 'groupId', 'constraints', 'strategy-disabled']);

function changeRecord(control: FlagsControl, managed: ManagedRoute, action: TrafficChange['action'], from: FlagPosition, to: FlagPosition, options: ChangeOptions, changed: boolean): TrafficChange {
  return {
    routeId: managed.routeId,
    flag: managed.flag.name,
    environment: managed.flag.environment,
    action,
    from,
    to,
    effectivePercent: to.enabled ? (to.percent ?? 0) : 0,
    actor: options.actor ?? defaultActor(),
    reason: options.reason ?? null,
    at: new Date().toISOString(),
    changed,
    refresh: [],
  };
}

async function finish(control: FlagsControl, change: TrafficChange, pushed = false): Promise<TrafficChange> {
  // A resume is pushed even when Unleash was already on: only the push clears a gateway's local override.
  if (!pushed && (change.changed || change.action === 'resume')) {
    change.refresh = await pushRefresh(control, { flag: change.flag, action: change.action, ...(change.action === 'shift' ? { percent: change.to.percent ?? 0 } : {}) });
  }
  const { refresh, ...logged } = change;
  control.log.info({ ...logged, refreshFailed: refresh.filter((r) => !r.ok).map((r) => r.url) }, FLAGS_LOG.trafficChange);
  return change;
}

function positionText(p: FlagPosition): string {
  return `${p.enabled ? 'on' : 'off'} at ${p.percent ?? '?'} %`;
}

/** Sets the route's rollout percentage. */
export async function shiftRoute(control: FlagsControl, routeId: string, percent: unknown, options: ShiftOptions = {}): Promise<TrafficChange> {
  const target = parsePercent(percent);
  const managed = managedRoute(control, routeId);
  const { name, project, environment } = managed.flag;
  const { state, strategy, archived } = await readState(control, managed);
  requireSynced(managed, state, strategy, 'shift', archived);
  const from: FlagPosition = { enabled: state!.enabled, percent: rolloutOf(strategy) ?? null };
  const to: FlagPosition = { enabled: state!.enabled, percent: target };
  const { expect } = options;
  const conflict = (now: FlagPosition, what: string) => new StranglerError('FLAG_CONFLICT', `shift of route ${routeId} to ${target} % ${what}: it was decided with "${name}" ${positionText(expect!)}, but Unleash has it ${positionText(now)} (changed by someone else, e.g. an operator's rollback); nothing was pushed, decide again from the current state`, { details: { routeId, flag: name, expected: expect, found: now } });
  if (expect && (expect.enabled !== from.enabled || expect.percent !== from.percent)) throw conflict(from, 'not written');
  const actor = options.actor ?? defaultActor();
  const recorded = parseTitle(strategy.title);
  const unchanged = from.percent === target && recorded?.rollout === target && recorded.enabled === state!.enabled;
  if (!unchanged) {
    await control.api.patchStrategy(project, name, environment, strategy.id, [
      { op: 'replace', path: '/parameters/rollout', value: String(target) },
      { op: 'replace', path: '/title', value: formatTitle({ rollout: target, enabled: state!.enabled }, note(`shift ${from.percent ?? '?'}→${target}%`, actor, options.reason ?? undefined)) },
    ]);
    if (expect) {
      // Unleash has no conditional write: a rollback can land between the read above and the PATCH. Read again,
      // and if the flag went off meanwhile put the percentage back, so resume restores what was rolled back.
      const after = await readState(control, managed);
      if (after.state && !after.state.enabled) {
        await control.api.patchStrategy(project, name, environment, strategy.id, [
          { op: 'replace', path: '/parameters/rollout', value: String(from.percent ?? 0) },
          { op: 'replace', path: '/title', value: formatTitle({ rollout: from.percent ?? 0, enabled: false }, note(`shift ${from.percent ?? '?'}→${target}% undone: rolled back meanwhile`, actor, options.reason ?? undefined)) },
        ]);
        throw conflict({ enabled: false, percent: from.percent }, 'undone');
      }
    }
  }
  return finish(control, changeRecord(control, managed, 'shift', from, to, { ...options, actor }, !unchanged));
}

/** Switches the route's flag off (everyone to legacy); the strategy and its percentage are kept for resume. */
export async function rollbackRoute(control: FlagsControl, routeId: string, options: ChangeOptions = {}): Promise<TrafficChange> {
  const managed = managedRoute(control, routeId);
  const { name, project, environment } = managed.flag;
  const actor = options.actor ?? defaultActor();
  // The push (each gateway's local override to legacy) does not wait for Unleash and happens whatever Unleash
  // answers (down, token revoked or without permission, flag missing), so the kill switch works when it is needed
  // most; the annotation (audit) runs alongside and must not delay or fail the rollback.
  const pushing = pushRefresh(control, { flag: name, action: 'rollback' });
  let state: FeatureEnvironmentState | undefined;
  let strategy: Strategy | undefined;
  let archived: boolean;
  try {
    ({ state, strategy, archived } = await readState(control, managed));
    if (state?.enabled) await control.api.setEnvironmentEnabled(project, name, environment, false);
  } catch (err) {
    // Unleash was not switched off: report that (non-zero exit), with how many gateways the override reached.
    const refresh = await pushing;
    const reached = refresh.filter((r) => r.ok).length;
    control.log.warn({ routeId, flag: name, actor, reason: options.reason ?? null, gateways: reached, of: refresh.length, err: messageOf(err) }, FLAGS_LOG.trafficChange);
    const code = err instanceof StranglerError ? err.code : 'INTERNAL_ERROR';
    throw new StranglerError(code, `${messageOf(err)}. The rollback was pushed to ${reached}/${refresh.length} gateways (local override to legacy, until a resume), but Unleash was not switched off for "${name}", so gateways not in flags.gateways (and restarted ones without flags.backupPath) still follow Unleash; fix the cause and run the rollback again`, { cause: err, details: { routeId, flag: name, refresh } });
  }
  if (!state) {
    await pushing;
    throw new StranglerError('FLAG_NOT_SYNCED', `cannot roll back route ${routeId}: ${archived ? archivedText(managed) : `flag "${name}" does not exist in project ${project}; with no flag every request already goes to legacy`}`);
  }
  const from: FlagPosition = { enabled: state.enabled, percent: strategy ? rolloutOf(strategy) ?? null : null };
  const to: FlagPosition = { enabled: false, percent: from.percent };
  const recorded = strategy ? parseTitle(strategy.title) : undefined;
  const change = changeRecord(control, managed, 'rollback', from, to, { ...options, actor }, state.enabled || recorded?.enabled !== false);
  if (strategy && change.changed) {
    const title = formatTitle({ rollout: recorded?.rollout ?? from.percent ?? 0, enabled: false }, note('rollback', actor, options.reason ?? undefined));
    try {
      await control.api.patchStrategy(project, name, environment, strategy.id, [{ op: 'replace', path: '/title', value: title }]);
    } catch (err) {
      control.log.warn({ routeId, flag: name, err: messageOf(err) }, FLAGS_LOG.trafficChange);
    }
  }
  change.refresh = await pushing;
  return finish(control, change, true);
}

/** Rolls back every route with a flag; one failure does not stop the others (they are reported). */
export async function rollbackAll(control: FlagsControl, options: ChangeOptions = {}): Promise<{ changes: TrafficChange[]; errors: { routeId: string; error: StranglerError | Error }[] }> {
  const results = await Promise.allSettled([...control.routes.keys()].map((id) => rollbackRoute(control, id, options)));
  const changes: TrafficChange[] = [];
  const errors: { routeId: string; error: StranglerError | Error }[] = [];
  const ids = [...control.routes.keys()];
  results.forEach((r, i) => {
    if (r.status === 'fulfilled') changes.push(r.value);
    else errors.push({ routeId: ids[i]!, error: r.reason instanceof Error ? r.reason : new Error(String(r.reason)) });
  });
  return { changes, errors };
}

/** Switches the route's flag back on at its strategy's percentage. */
export async function resumeRoute(control: FlagsControl, routeId: string, options: ChangeOptions = {}): Promise<TrafficChange> {
  const managed = managedRoute(control, routeId);
  const { name, project, environment } = managed.flag;
  const actor = options.actor ?? defaultActor();
  const { state, strategy, archived } = await readState(control, managed);
  requireSynced(managed, state, strategy, 'resume', archived);
  const percent = rolloutOf(strategy);
  if (percent === undefined) throw new StranglerError('FLAG_DRIFT', `cannot resume route ${routeId}: the rollout of "${name}" is ${JSON.stringify(strategy.parameters.rollout)}, not 0..100; shift it first`);
  const from: FlagPosition = { enabled: state!.enabled, percent };
  const to: FlagPosition = { enabled: true, percent };
  const recorded = parseTitle(strategy.title);
  const changed = !state!.enabled || recorded?.enabled !== true;
  // The note is written even when the flag is already on: "resume by …" is what hands a route the promotion
  // controller holds (after an operator's shift outside its plan) back to the plan, and Unleash's event log shows it.
  // A note identical to the one there (the same actor resuming again) gets the time, so the resume is told apart.
  const resumeNote = note('resume', actor, options.reason ?? undefined);
  await control.api.patchStrategy(project, name, environment, strategy.id, [
    { op: 'replace', path: '/title', value: formatTitle({ rollout: percent, enabled: true }, recorded?.note === resumeNote ? note(`resume at ${new Date().toISOString()}`, actor, options.reason ?? undefined) : resumeNote) },
  ]);
  if (!state!.enabled) await control.api.setEnvironmentEnabled(project, name, environment, true);
  return finish(control, changeRecord(control, managed, 'resume', from, to, { ...options, actor }, changed));
}

/** The flag state of one route (or all, in config order) as Unleash has it now. */
export async function routeStatus(control: FlagsControl, routeId?: string): Promise<RouteFlagStatus[]> {
  const routes = routeId ? [managedRoute(control, routeId)] : [...control.routes.values()];
  return Promise.all(routes.map(async (managed) => {
    const { state, strategy, archived } = await readState(control, managed);
    const percent = strategy ? rolloutOf(strategy) ?? null : null;
    const enabled = state?.enabled ?? false;
    const recorded = strategy ? parseTitle(strategy.title) : undefined;
    // Exactly what `flags sync` would report (and `--fix` change): one drift definition (sync.ts compareFlag).
    const drift: string[] = archived ? ['flag archived in Unleash: every gateway sends the route to legacy'] : [];
    if (state) drift.push(...compareFlag(managed, state).drift.map(driftText));
    return {
      routeId: managed.routeId,
      flag: managed.flag.name,
      project: managed.flag.project,
      environment: managed.flag.environment,
      state: !strategy ? 'missing' : enabled ? 'on' : 'off',
      enabled,
      percent,
      effectivePercent: strategy && enabled ? (percent ?? 0) : state && enabled && state.strategies.length === 0 ? 100 : 0,
      strategies: state?.strategies.length ?? 0,
      stickiness: strategy?.parameters.stickiness ?? null,
      groupId: strategy?.parameters.groupId ?? null,
      lastChange: recorded?.note ?? null,
      drift,
    };
  }));
}

/** shift/rollback/resume bound to one FlagsControl, in the shape the gateway's admin API takes (TrafficActions). */
export function trafficActions(control: FlagsControl | (() => FlagsControl)) {
  const get = typeof control === 'function' ? control : () => control;
  return {
    shift: (routeId: string, percent: number, change: ChangeOptions) => shiftRoute(get(), routeId, percent, change),
    rollback: (routeId: string, change: ChangeOptions) => rollbackRoute(get(), routeId, change),
    resume: (routeId: string, change: ChangeOptions) => resumeRoute(get(), routeId, change),
  };
}
