/**
 * Flags as code: `strangler flags sync --config FILE`.
 *
 * For every route with a service: the flag exists, and its environment holds exactly one flexibleRollout strategy
 * with the configured stickiness and groupId, whose title records the intended rollout and on/off state
 * (annotation.ts). A new flag starts at `initialPercent` and is switched on only after its strategy exists (never
 * `/on` without a strategy: Unleash would add its default strategy). Sync switches on only a flag it has just
 * created or one that was never configured in the environment (no strategies, no events there); a flag someone
 * switched off stays off, with or without `fix`.
 *
 * Anything else is drift (changed by hand): reported, never silently overwritten. `fix: true` reconciles: the
 * structure comes from the config; for exposure it keeps whichever of the live state and the recorded intent sends
 * fewer users to the service (it never switches a flag on or raises a rollout). When restoring the structure could
 * itself select users the live strategy does not (dropping a constraint or segment, enabling a disabled strategy,
 * another stickiness or groupId), the repaired rollout is 0 % and the report says why. Running sync twice changes
 * nothing the second time.
 */
import { StranglerError } from '../common/errors.ts';
import type { FeatureEnvironmentState, Strategy, StrategyInput } from './admin-api.ts';
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
  /** `left-off`: the environment is off and sync did not switch it on; `narrowed`: --fix set the rollout to 0 %. */
  action: 'created-flag' | 'added-strategy' | 'enabled' | 'left-off' | 'narrowed' | 'fixed';
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

/** One line per drift entry, the same in `flags sync` and `flags status`. */
export function driftText(d: Drift): string {
  return `${d.kind}: expected ${d.expected}, found ${d.found}`;
}

/**
 * The flag's state in its environment. Unleash answers 404 both for a flag that does not exist and for an environment
 * the project does not have (removed in the Unleash UI, or never added); the latter throws FLAG_ENVIRONMENT_MISSING
 * naming the environment, the project and what to do, the former is rethrown as the UNLEASH_NOT_FOUND it is.
 */
export async function readEnvironmentState(control: FlagsControl, managed: ManagedRoute): Promise<FeatureEnvironmentState> {
  const { name, project, environment } = managed.flag;
  try {
    return await control.api.getFeatureEnvironment(project, name, environment);
  } catch (err) {
    if (err instanceof StranglerError && err.code === 'UNLEASH_NOT_FOUND') await requireEnvironment(control, managed, err);
    throw err;
  }
}

/** Throws FLAG_ENVIRONMENT_MISSING unless the route's environment exists and is enabled in its project. */
export async function requireEnvironment(control: FlagsControl, managed: ManagedRoute, cause?: unknown): Promise<void> {
  const { name, project, environment } = managed.flag;
  let environments;
  try {
    environments = await control.api.projectEnvironments(project);
  } catch {
    return; // cannot tell (an older Unleash, a token without the permission): the caller's own error stands
  }
  const env = environments.find((e) => e.name === environment);
  if (env && env.enabled !== false && env.visible !== false) return;
  const source = control.config.source;
  const fixConfig = `fix flags.environment in ${source} (it must be the environment of the gateways' backend token, flags.token)`;
  const inProject = environments.filter((e) => e.visible !== false && e.enabled !== false).map((e) => e.name);
  const why = !env
    ? `Unleash has no environment "${environment}" (it has: ${environments.map((e) => e.name).join(', ') || 'none'}); ${fixConfig}`
    : env.enabled === false
      ? `environment "${environment}" is disabled in Unleash; enable it (Unleash UI → Configure → Environments) or ${fixConfig}`
      : `environment "${environment}" is not enabled in Unleash project "${project}" (removed from the project, or never added), so the Admin API can neither read nor change flag "${name}" there, while gateways reading "${environment}" may still be served the flag as it was; add "${environment}" to the project (Unleash UI → Projects → ${project} → Settings → Environments, or POST /api/admin/projects/${project}/environments {"environment":"${environment}"}), or ${fixConfig}`;
  throw new StranglerError('FLAG_ENVIRONMENT_MISSING', `route ${managed.routeId}: ${why}${inProject.length > 0 ? `; project "${project}" has: ${inProject.join(', ')}` : ''}`, {
    ...(cause === undefined ? {} : { cause }),
    details: { routeId: managed.routeId, flag: name, project, environment },
  });
}

/** How the flag's strategies in its environment compare with the config and the recorded intent. */
export interface FlagComparison {
  /** The strategy strangler manages (see findManagedStrategy), if any. */
  ours: Strategy | undefined;
  others: Strategy[];
  /** The intent strangler wrote into our strategy's title, if it parses. */
  recorded: ReturnType<typeof parseTitle>;
  /** The recorded intent, else the live state (an unmanaged strategy is adopted as it is). */
  intended: Intended;
  /** Every difference `flags sync` reports and `--fix` reconciles; `flags status` shows the same list. */
  drift: Drift[];
}

/** The one drift definition: what `flags sync` (dry run) reports, and so what `flags status` shows. */
export function compareFlag(managed: ManagedRoute, state: FeatureEnvironmentState): FlagComparison {
  const { name, environment } = managed.flag;
  const base = { routeId: managed.routeId, flag: name, environment };
  const ours = findManagedStrategy(state.strategies);
  const others = state.strategies.filter((s) => s !== ours);
  const drift: Drift[] = [];
  const found = (kind: DriftKind, expected: string, actual: string) => drift.push({ ...base, kind, expected, found: actual });
  if (!ours) {
    for (const other of others) found('extra-strategy', 'only the flexibleRollout strategy managed by strangler', `${other.name} strategy ${other.id}`);
    return { ours, others, recorded: undefined, intended: { rollout: managed.flag.initialPercent, enabled: state.enabled }, drift };
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
  return { ours, others, recorded, intended, drift };
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
    log.info({ ...base, action, detail }, ACTION_LOG[action]);
  };

  const feature = await api.findFeature(project, name);
  if (!feature) {
    await requireEnvironment(control, managed); // before creating a flag in a project without the environment
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

  const state = await readEnvironmentState(control, managed);
  const { ours, others, recorded, intended, drift } = compareFlag(managed, state);

  if (!ours) {
    // No flexibleRollout yet: add ours, then switch on (safe: a strategy exists now). Only a flag nobody has
    // switched off is switched on: one created just now, or one never configured in this environment. An
    // environment that is on with other strategies gets ours at 0 %: beside them, any more would add users.
    const switchOn = !state.enabled && (!feature || (state.strategies.length === 0 && !(await api.getFeatureEvents(name)).some((e) => e.environment === environment)));
    const besideOthers = state.enabled && others.length > 0 && managed.flag.initialPercent > 0;
    const added: Intended = { rollout: besideOthers ? 0 : managed.flag.initialPercent, enabled: state.enabled || switchOn };
    await api.addStrategy(project, name, environment, desiredStrategy(managed, added, 'created by flags sync'));
    act('added-strategy', `added flexibleRollout ${added.rollout} % (stickiness ${managed.flag.stickiness}, groupId ${managed.flag.groupId}) in ${environment}${besideOthers ? ` instead of initialPercent ${managed.flag.initialPercent} %: ${environment} is already on with ${others.length} other strateg${others.length === 1 ? 'y' : 'ies'}, so more would add users to the service` : ''}`);
    if (fix) for (const other of others) await api.deleteStrategy(project, name, environment, other.id);
    if (switchOn) {
      await api.setEnvironmentEnabled(project, name, environment, true);
      act('enabled', `switched ${environment} on at ${added.rollout} %`);
    } else if (!state.enabled) {
      act('left-off', `left ${environment} off: the flag already existed and is off in Unleash (switched off or configured there before); sync switches on only flags it creates. Run \`strangler flags resume ${managed.routeId}\` to switch it on at ${added.rollout} %`);
    }
    if (fix && drift.length > 0) act('fixed', `removed ${others.length} other strateg${others.length === 1 ? 'y' : 'ies'}`);
    recordDrift(control, report, drift);
    return;
  }

  const current = rolloutOf(ours);

  if (fix && drift.length > 0) {
    // --fix only ever moves users toward legacy: a hand-made change that exposes fewer users (lower rollout,
    // switched off) becomes the new intent; one that exposes more is reverted. Structure (stickiness, groupId,
    // constraints, extra strategies) is restored from the config. Deleting extra strategies only removes users
    // (strategies are ORed); but where restoring ours would select users the live one does not, the only repair
    // that moves nobody to the service is 0 %.
    const kept = current === undefined ? 0 : Math.min(current, intended.rollout);
    const widening = kept === 0 ? [] : wideningChanges(managed, ours);
    const fixed: Intended = { rollout: widening.length > 0 ? 0 : kept, enabled: state.enabled && intended.enabled };
    const adopted = fixed.rollout !== intended.rollout || fixed.enabled !== intended.enabled;
    const why = widening.length > 0
      ? `narrowed to 0 % by flags sync --fix (${widening.join('; ')})`
      : recorded ? `${adopted ? 'reconciled' : 'restored'} by flags sync --fix (was: ${recorded.note ?? 'no note'})` : 'adopted by flags sync --fix';
    await api.updateStrategy(project, name, environment, ours.id, desiredStrategy(managed, fixed, why));
    for (const other of others) await api.deleteStrategy(project, name, environment, other.id);
    if (state.enabled !== fixed.enabled) await api.setEnvironmentEnabled(project, name, environment, fixed.enabled);
    if (widening.length > 0) {
      act('narrowed', `rollout set to 0 % instead of ${kept} %: ${widening.join('; ')}, so restoring the configured strategy at ${kept} % would move users to the service. Raise it deliberately with \`strangler flags shift ${managed.routeId} PERCENT\``);
    }
    act('fixed', `${drift.map((d) => `${d.kind}: found ${d.found}`).join('; ')} → rollout ${fixed.rollout} %, ${fixed.enabled ? 'on' : 'off'}`);
  }
  recordDrift(control, report, drift);
}

/**
 * Why replacing the live strategy by the configured one could send users to the service who are on legacy now,
 * at the same rollout: each entry is one reason; empty when the configured strategy selects a subset.
 */
function wideningChanges(managed: ManagedRoute, live: Strategy): string[] {
  const reasons: string[] = [];
  const constraints = live.constraints?.length ?? 0;
  const segments = live.segments?.length ?? 0;
  if (constraints > 0) reasons.push(`the live strategy has ${constraints === 1 ? '1 constraint that narrows' : `${constraints} constraints that narrow`} it`);
  if (segments > 0) reasons.push(`the live strategy has ${segments === 1 ? '1 segment that narrows' : `${segments} segments that narrow`} it`);
  if (live.disabled === true) reasons.push('the live strategy is disabled');
  const stickiness = live.parameters.stickiness ?? 'default';
  if (stickiness !== managed.flag.stickiness) reasons.push(`the live stickiness is ${JSON.stringify(stickiness)}; another stickiness puts other users in the rollout`);
  if (live.parameters.groupId !== managed.flag.groupId) reasons.push(`the live groupId is ${JSON.stringify(live.parameters.groupId ?? null)}; another groupId reshuffles which users are in the rollout`);
  return reasons;
}

const ACTION_LOG: Record<SyncAction['action'], string> = {
  'created-flag': FLAGS_LOG.syncCreated,
  'added-strategy': FLAGS_LOG.syncStrategyAdded,
  enabled: FLAGS_LOG.syncStrategyAdded,
  'left-off': FLAGS_LOG.syncLeftOff,
  narrowed: FLAGS_LOG.syncNarrowed,
  fixed: FLAGS_LOG.syncFixed,
};

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
    for (const d of drift) lines.push(`${id}: ${fixed ? 'FIXED' : 'DRIFT'} ${driftText(d)}`);
  }
  const open = report.fixed ? 0 : report.drift.length;
  if (open > 0) lines.push(`\n${open} difference${open === 1 ? '' : 's'} between Unleash and the config/recorded intent, left as found. Run \`strangler flags sync --fix\` to reconcile.`);
  else if (report.actions.length === 0) lines.push('no changes');
  return `${lines.join('\n')}\n`;
}
