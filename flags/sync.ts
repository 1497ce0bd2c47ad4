/**
 * Flags as code: `strangler flags sync --config FILE`.
 *
 * For every route with a service: the flag exists, and its environment holds exactly one flexibleRollout strategy
 * with the configured stickiness and groupId, whose title records the intended rollout and on/off state
 * (annotation.ts). A new flag starts at `initialPercent` and is switched on only after its strategy exists (never
 * `/on` without a strategy: Unleash would add its default strategy).
 *
 * Anything else is drift (changed by hand): reported, never silently overwritten. `fix: true` reconciles: the
 * structure comes from the config; for exposure it keeps whichever of the live state and the recorded intent sends
 * fewer users to the service (it never switches a flag on or raises a rollout). Running sync twice changes nothing
 * the second time.
 */
import { StranglerError } from '../common/errors.ts';
import type { Strategy, StrategyInput } from './admin-api.ts';
import { formatTitle, parseTitle, type Intended } from './annotation.ts';
import type { FlagsControl, ManagedRoute } from './control.ts';
import { FLAGS_LOG } from './log-events.ts';

export type DriftKind = 'unmanaged' | 'rollout' | 'stickiness' | 'groupId' | 'constraints' | 'strategy-disabled' | 'extra-strategy' | 'enabled';

export interface Drift {
  routeId: string;
  flag: string;
  environment: string;
  kind: DriftKind;
  expected: string;
  found: string;
}

export interface SyncAction {
  routeId: string;
  flag: string;
  environment: string;
  action: 'created-flag' | 'added-strategy' | 'enabled' | 'fixed';
  detail: string;
}

export interface SyncReport {
  actions: SyncAction[];
  /** Drift found (and, with fix, repaired: see `fixed`). */
  drift: Drift[];
  fixed: boolean;
}

export interface SyncOptions {
  fix?: boolean;
  /** Only these route ids (default: all routes with a flag). */
  routes?: readonly string[];
}

export async function syncFlags(control: FlagsControl, options: SyncOptions = {}): Promise<SyncReport> {
  const report: SyncReport = { actions: [], drift: [], fixed: options.fix === true };
  for (const managed of control.routes.values()) {
    if (options.routes && !options.routes.includes(managed.routeId)) continue;
    await syncOne(control, managed, options.fix === true, report);
  }
  return report;
}

/** The strategy strangler manages among an environment's strategies: annotated first, else the first flexibleRollout. */
export function findManagedStrategy(strategies: readonly Strategy[]): Strategy | undefined {
  return strategies.find((s) => s.name === 'flexibleRollout' && parseTitle(s.title) !== undefined)
    ?? strategies.find((s) => s.name === 'flexibleRollout');
}

/** The integer percentage a strategy parameter holds, or undefined when Unleash stored something that is not 0..100. */
export function rolloutOf(strategy: Strategy): number | undefined {
  const raw = strategy.parameters.rollout;
  if (raw === undefined || !/^\d{1,3}$/.test(raw)) return undefined;
  const n = Number(raw);
  return n <= 100 ? n : undefined;
}

function desiredStrategy(managed: ManagedRoute, intended: Intended, note: string): StrategyInput {
  return {
    name: 'flexibleRollout',
    title: formatTitle(intended, note),
    parameters: { rollout: String(intended.rollout), stickiness: managed.flag.stickiness, groupId: managed.flag.groupId },
    constraints: [],
    segments: [],
    variants: [],
    disabled: false,
  };
}

async function syncOne(control: FlagsControl, managed: ManagedRoute, fix: boolean, report: SyncReport): Promise<void> {
  const { api, log } = control;
  const { name, project, environment } = managed.flag;
  const base = { routeId: managed.routeId, flag: name, environment };
  const act = (action: SyncAction['action'], detail: string) => {
    report.actions.push({ ...base, action, detail });
    log.info({ ...base, action, detail }, action === 'created-flag' ? FLAGS_LOG.syncCreated : action === 'fixed' ? FLAGS_LOG.syncFixed : FLAGS_LOG.syncStrategyAdded);
  };

  const feature = await api.findFeature(project, name);
  if (!feature) {
    const m = managed.route.match;
    try {
      await api.createFeature(project, { name, type: 'release', description: `strangler route ${managed.routeId} (${m.pathPrefix ?? m.pattern}): ${managed.route.legacy} → ${managed.route.service}` });
    } catch (err) {
      if (err instanceof StranglerError && err.code === 'UNLEASH_CONFLICT') {
        throw new StranglerError('UNLEASH_CONFLICT', `flag "${name}" for route ${managed.routeId} exists outside project "${project}" or in the archive (${err.message}); revive it or pick another flag.name`, { cause: err });
      }
      throw err;
    }
    act('created-flag', `created flag ${name} in project ${project}`);
  }

  const state = await api.getFeatureEnvironment(project, name, environment);
  const ours = findManagedStrategy(state.strategies);
  const others = state.strategies.filter((s) => s !== ours);
  const drift: Drift[] = [];
  const found = (kind: DriftKind, expected: string, actual: string) => drift.push({ ...base, kind, expected, found: actual });

  if (!ours) {
    // No flexibleRollout yet: add ours at the initial percentage, then switch on (safe: a strategy exists now).
    const intended: Intended = { rollout: managed.flag.initialPercent, enabled: true };
    for (const other of others) found('extra-strategy', 'only the flexibleRollout strategy managed by strangler', `${other.name} strategy ${other.id}`);
    await api.addStrategy(project, name, environment, desiredStrategy(managed, intended, 'created by flags sync'));
    act('added-strategy', `added flexibleRollout ${intended.rollout} % (stickiness ${managed.flag.stickiness}, groupId ${managed.flag.groupId}) in ${environment}`);
    if (fix) for (const other of others) await api.deleteStrategy(project, name, environment, other.id);
    if (!state.enabled && (others.length === 0 || fix)) {
      await api.setEnvironmentEnabled(project, name, environment, true);
      act('enabled', `switched ${environment} on at ${intended.rollout} %`);
    }
    if (fix && drift.length > 0) act('fixed', `removed ${others.length} other strateg${others.length === 1 ? 'y' : 'ies'}`);
    recordDrift(control, report, drift);
    return;
  }

  const recorded = parseTitle(ours.title);
  const current = rolloutOf(ours);
  const intended: Intended = recorded ?? { rollout: current ?? 0, enabled: state.enabled };
  if (!recorded) found('unmanaged', 'a strategy title written by strangler ("strangler rollout=N enabled=…")', JSON.stringify(ours.title ?? null));
  if (current !== intended.rollout) found('rollout', `${intended.rollout} % (last set through strangler)`, JSON.stringify(ours.parameters.rollout ?? null));
  if ((ours.parameters.stickiness ?? 'default') !== managed.flag.stickiness) found('stickiness', managed.flag.stickiness, JSON.stringify(ours.parameters.stickiness ?? null));
  if (ours.parameters.groupId !== managed.flag.groupId) found('groupId', managed.flag.groupId, JSON.stringify(ours.parameters.groupId ?? null));
  if ((ours.constraints?.length ?? 0) > 0 || (ours.segments?.length ?? 0) > 0) found('constraints', 'no constraints or segments', `${ours.constraints?.length ?? 0} constraints, ${ours.segments?.length ?? 0} segments`);
  if (ours.disabled === true) found('strategy-disabled', 'strategy enabled', 'strategy disabled');
  for (const other of others) found('extra-strategy', 'only the flexibleRollout strategy managed by strangler', `${other.name} strategy ${other.id} (${JSON.stringify(other.parameters)})`);
  if (state.enabled !== intended.enabled) found('enabled', `${environment} ${intended.enabled ? 'on' : 'off'} (last set through strangler)`, state.enabled ? 'on' : 'off');

  if (fix && drift.length > 0) {
    // --fix only ever moves users toward legacy: a hand-made change that exposes fewer users (lower rollout,
    // switched off) becomes the new intent; one that exposes more is reverted. Structure (stickiness, groupId,
    // constraints, extra strategies) is restored from the config.
    const fixed: Intended = {
      rollout: current === undefined ? 0 : Math.min(current, intended.rollout),
      enabled: state.enabled && intended.enabled,
    };
    const adopted = fixed.rollout !== intended.rollout || fixed.enabled !== intended.enabled;
    const why = recorded ? `${adopted ? 'reconciled' : 'restored'} by flags sync --fix (was: ${recorded.note ?? 'no note'})` : 'adopted by flags sync --fix';
    await api.updateStrategy(project, name, environment, ours.id, desiredStrategy(managed, fixed, why));
    for (const other of others) await api.deleteStrategy(project, name, environment, other.id);
    if (state.enabled !== fixed.enabled) await api.setEnvironmentEnabled(project, name, environment, fixed.enabled);
    act('fixed', `${drift.map((d) => `${d.kind}: found ${d.found}`).join('; ')} → rollout ${fixed.rollout} %, ${fixed.enabled ? 'on' : 'off'}`);
  }
  recordDrift(control, report, drift);
}

function recordDrift(control: FlagsControl, report: SyncReport, drift: Drift[]): void {
  for (const d of drift) control.log.warn({ ...d }, FLAGS_LOG.syncDrift);
  report.drift.push(...drift);
}

/** Human-readable lines for the CLI. */
export function formatSyncReport(report: SyncReport, routeIds: readonly string[]): string {
  const lines: string[] = [];
  for (const id of routeIds) {
    const actions = report.actions.filter((a) => a.routeId === id && a.action !== 'fixed');
    const drift = report.drift.filter((d) => d.routeId === id);
    const fixed = report.actions.some((a) => a.routeId === id && a.action === 'fixed');
    if (actions.length === 0 && drift.length === 0) {
      lines.push(`${id}: no changes`);
      continue;
    }
    for (const a of actions) lines.push(`${id}: ${a.detail}`);
    for (const d of drift) lines.push(`${id}: ${fixed ? 'FIXED' : 'DRIFT'} ${d.kind}: expected ${d.expected}, found ${d.found}`);
  }
  const open = report.fixed ? 0 : report.drift.length;
  if (open > 0) lines.push(`\n${open} difference${open === 1 ? '' : 's'} between Unleash and the config/recorded intent, left as found. Run \`strangler flags sync --fix\` to reconcile.`);
  else if (report.actions.length === 0) lines.push('no changes');
  return `${lines.join('\n')}\n`;
}
