/**
 * `strangler flags <sub>`: flags as code and traffic control against the Unleash Admin API.
 */
import type { Command } from '../cli/command.ts';
import { intOption, parseCommandArgs, usageError } from '../cli/command.ts';
import { StranglerError } from '../common/errors.ts';
import { createLogger } from '../common/logger.ts';
import { ConfigError, loadConfigFile, type LoadedConfig } from '../gateway/config/load.ts';
import { signOverride } from './context.ts';
import { existsSync } from 'node:fs';
import { createFlagsControl, type FlagsControl } from './control.ts';
import { PromotionController } from './controller.ts';
import { stateStoreFor } from './controller-command.ts';
import { formatSyncReport, syncFlags } from './sync.ts';
import { formatObserved, markMismatches, observedStatus } from './observed.ts';
import { defaultActor, resumeRoute, rollbackAll, rollbackRoute, routeStatus, shiftRoute, type RouteFlagStatus, type TrafficChange } from './traffic.ts';

const HELP = `Usage: strangler flags <subcommand> [options]

Flags as code and traffic control for the routes in a config file (one Unleash flag per route with a service).

Subcommands:
  sync [--fix]                     create missing flags with one flexibleRollout strategy (initialPercent, stickiness,
                                   groupId) and switch them on (never a flag that exists and is off); report hand-made
                                   changes (drift); --fix reconciles them, keeping whichever of live state and recorded
                                   intent exposes fewer users, and sets the rollout to 0 % where restoring the strategy
                                   would add users (a constraint, segment or disabled strategy set by hand)
  status [ROUTE] [--json]          flag state per route: on/off, percentage, drift, last change
  shift ROUTE PERCENT [--reason R] set the route's rollout to PERCENT (integer 0-100)
  rollback ROUTE|--all [--reason R] switch the flag off: every request goes to legacy; the percentage is kept
  resume ROUTE [--reason R]        switch the flag back on at its kept percentage
  controller                       run the guard and progressive-promotion controller (routes with guard/plan)
  override legacy|service [--ttl SECONDS]
                                   mint a signed tester override (identity.override.secret): sent as the override
                                   header or cookie, it forces that side on every route of gateways sharing the
                                   secret until it expires (default 3600 s, at most 604800 = 7 days); no Unleash call
  webhooks [--prune]               install Unleash webhook addons that push flag events (also changes made in
                                   the Unleash UI) to every gateway in flags.gateways; idempotent. --prune also
                                   removes strangler's webhooks to gateways no longer listed: disabled first, deleted
                                   65 s later (unleash-server 7.5.1 exits if a webhook deleted outright still fires)

Common options:
  --config FILE    config file (default strangler.yaml)
  --actor NAME     who is making the change, for the audit trail (default cli:$USER)
  --json           machine-readable output
  -h, --help       this text

Every change is written to Unleash (its event log shows it, with actor and reason in the strategy title), logged,
and pushed to each gateway in flags.gateways (POST /admin/flags/refresh): a rollback applies there before the
command returns, a shift or resume within about 1-2 s (Unleash publishes changes on a 1 s tick).
Exit codes: 0 ok, 1 error, 3 drift found (sync without --fix).`;

const OPTIONS = {
  config: { type: 'string' },
  reason: { type: 'string' },
  actor: { type: 'string' },
  json: { type: 'boolean' },
  fix: { type: 'boolean' },
  all: { type: 'boolean' },
  prune: { type: 'boolean' },
  ttl: { type: 'string' },
} as const;

/** A minted override is a credential for as long as it lasts: a week at most. */
const OVERRIDE_MAX_TTL_S = 7 * 24 * 3600;

/** `flags override`: a signed tester override from the config's identity.override settings, printed for a tester. */
function printOverride(config: LoadedConfig, args: readonly string[], ttlText: string | undefined, json: boolean): number {
  const [target] = args;
  if ((target !== 'legacy' && target !== 'service') || args.length > 1) throw usageError('flags', 'usage: flags override legacy|service [--ttl SECONDS]');
  const ttlS = intOption('flags', '--ttl', ttlText, { min: 1, max: OVERRIDE_MAX_TTL_S }) ?? 3600;
  const { header, cookie, secret } = config.identity.override;
  if (!secret) {
    throw new ConfigError(config.source, [{ path: 'identity.override.secret', expected: 'a string of at least 16 characters to sign overrides with', found: 'null (overrides are disabled: gateways with this config ignore every override)', hint: 'set it, e.g. to ${OVERRIDE_SECRET}, here and on the gateways' }]);
  }
  const nowMs = Date.now();
  const value = signOverride(secret, target, ttlS, nowMs);
  const expiresAt = new Date(Math.floor(nowMs / 1000) * 1000 + ttlS * 1000).toISOString();
  if (json) {
    process.stdout.write(`${JSON.stringify({ target, expiresAt, header: { name: header, value }, cookie: { name: cookie, value } })}\n`);
    return 0;
  }
  process.stdout.write(`tester override to ${target}, every route, until ${expiresAt}; send one of:\n`
    + `  header  ${header}: ${value}\n`
    + `  cookie  ${cookie}=${value}; Path=/; Max-Age=${ttlS}\n`
    + 'It is a credential until it expires: share it like one. Gateways never pass it on to upstreams.\n');
  return 0;
}

function printChange(change: TrafficChange, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(change)}\n`);
    return;
  }
  const pos = (p: TrafficChange['from']) => `${p.enabled ? 'on' : 'off'} ${p.percent ?? '?'} %`;
  const refresh = change.refresh.length === 0 ? '' : `; refreshed ${change.refresh.filter((r) => r.ok).length}/${change.refresh.length} gateways${change.refresh.some((r) => !r.ok) ? ` (failed: ${change.refresh.filter((r) => !r.ok).map((r) => `${r.url} ${r.error}`).join(', ')})` : ''}`;
  process.stdout.write(`${change.routeId} (${change.flag}, ${change.environment}): ${change.action} ${change.changed ? `${pos(change.from)} → ${pos(change.to)}` : `no change (${pos(change.to)})`}; users on the service: ${change.effectivePercent} %${refresh}\n`);
}

type PlanView = Awaited<ReturnType<PromotionController['view']>>;

function planText(view: PlanView[string] | undefined): string {
  const plan = view?.plan;
  if (!plan) return view?.guard ? `guard ${view.guard.lastVerdict ?? '-'}` : '-';
  const step = plan.stepIndex >= 0 ? `${plan.stepIndex + 1}/${plan.steps.length} (${plan.steps[plan.stepIndex]}%)` : `0/${plan.steps.length}`;
  return `${plan.state} ${step}${plan.holdUntil ? ` until ${plan.holdUntil}` : ''}${plan.reason ? ` (${plan.reason})` : ''}; guard ${view?.guard?.lastVerdict ?? '-'}`;
}

/** The controller's per-route plan state, when its store is configured and readable; undefined otherwise. */
async function planViews(control: FlagsControl): Promise<PlanView | undefined> {
  const { config } = control;
  if (!config.controller.databaseUrl && !(config.controller.stateFile && existsSync(config.controller.stateFile))) return undefined;
  const controller = new PromotionController({ control, store: stateStoreFor(config) });
  try {
    return await controller.view();
  } catch {
    return undefined;
  } finally {
    await controller.stop();
  }
}

function printStatus(rows: RouteFlagStatus[], plans: PlanView | undefined): void {
  const header = ['route', 'flag', 'env', 'state', 'percent', 'effective', 'plan', 'last change', 'drift'];
  const body = rows.map((r) => [r.routeId, r.flag, r.environment, r.state, r.percent === null ? '-' : `${r.percent}%`, `${r.effectivePercent}%`, planText(plans?.[r.routeId]), r.lastChange ?? '-', r.drift.join('; ') || '-']);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  for (const row of [header, ...body]) process.stdout.write(`${row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()}\n`);
}

export const flagsCommand: Command = {
  name: 'flags',
  summary: 'Flags as code and traffic control: sync, status, shift, rollback, resume, controller, override',
  help: HELP,
  async run(argv) {
    const { values, positionals } = parseCommandArgs('flags', argv, OPTIONS);
    const [sub, ...args] = positionals;
    if (!sub) throw usageError('flags', 'name a subcommand (sync, status, shift, rollback, resume, controller, webhooks, override)');
    // Before the config is read, so a typo is not reported as a missing strangler.yaml.
    if (!['sync', 'status', 'shift', 'rollback', 'resume', 'controller', 'webhooks', 'override'].includes(sub)) throw usageError('flags', `unknown subcommand "${sub}" (sync, status, shift, rollback, resume, controller, webhooks, override)`);
    if (values.prune && sub !== 'webhooks') throw usageError('flags', '--prune applies to `flags webhooks` only');
    if (values.ttl !== undefined && sub !== 'override') throw usageError('flags', '--ttl applies to `flags override` only');
    const log = createLogger({ name: 'flags', level: process.env.STRANGLER_LOG_LEVEL ?? 'warn' });
    const config = loadConfigFile(values.config ?? 'strangler.yaml');
    if (sub === 'override') return printOverride(config, args, values.ttl, values.json === true);
    if (sub === 'controller') {
      const { runControllerCommand } = await import('./controller-command.ts');
      return runControllerCommand(config, createLogger({ name: 'flags-controller' }));
    }
    const control: FlagsControl = createFlagsControl(config, { log });
    const opts = { actor: values.actor ?? defaultActor(), ...(values.reason ? { reason: values.reason } : {}) };
    const json = values.json === true;
    switch (sub) {
      case 'sync': {
        if (args.length > 0) throw usageError('flags', `sync takes no arguments, got "${args[0]}"`);
        const report = await syncFlags(control, { fix: values.fix === true });
        process.stdout.write(json ? `${JSON.stringify(report)}\n` : formatSyncReport(report, [...control.routes.keys()]));
        return report.drift.length > 0 && !report.fixed ? 3 : 0;
      }
      case 'status': {
        const [rows, plans, observed] = await Promise.all([routeStatus(control, args[0]), planViews(control), observedStatus(control)]);
        markMismatches(rows, observed);
        if (json) process.stdout.write(`${JSON.stringify(rows.map((r) => ({ ...r, controller: plans?.[r.routeId] ?? null, observed: observed[r.routeId] ?? [] })))}\n`);
        else {
          printStatus(rows, plans);
          process.stdout.write(`\n${formatObserved(args[0] ? { [args[0]]: observed[args[0]] ?? [] } : observed)}`);
        }
        return 0;
      }
      case 'shift': {
        const [route, percent] = args;
        if (!route || percent === undefined || args.length > 2) throw usageError('flags', 'usage: flags shift ROUTE PERCENT [--reason R]');
        printChange(await shiftRoute(control, route, percent, opts), json);
        return 0;
      }
      case 'rollback': {
        if (values.all) {
          if (args.length > 0) throw usageError('flags', 'rollback takes a ROUTE or --all, not both');
          const { changes, errors } = await rollbackAll(control, opts);
          for (const c of changes) printChange(c, json);
          for (const e of errors) process.stderr.write(`${e.routeId}: ${e.error instanceof StranglerError ? `${e.error.code}: ` : ''}${e.error.message}\n`);
          return errors.length > 0 ? 1 : 0;
        }
        if (args.length !== 1) throw usageError('flags', 'usage: flags rollback ROUTE|--all [--reason R]');
        printChange(await rollbackRoute(control, args[0]!, opts), json);
        return 0;
      }
      case 'resume': {
        if (args.length !== 1) throw usageError('flags', 'usage: flags resume ROUTE [--reason R]');
        printChange(await resumeRoute(control, args[0]!, opts), json);
        return 0;
      }
      case 'webhooks': {
        const { installWebhooks } = await import('./webhooks.ts');
        const results = await installWebhooks(control, {
          prune: values.prune === true,
          onPruneWait: (ms, stale) => {
            if (!json) process.stdout.write(`disabled ${stale.length} webhook(s) of gateways no longer in flags.gateways (${stale.map((r) => r.gateway).join(', ')}); deleting them in ${Math.round(ms / 1000)} s, once Unleash's addon cache no longer holds them\n`);
          },
        });
        if (json) process.stdout.write(`${JSON.stringify(results)}\n`);
        else for (const r of results) process.stdout.write(`${r.gateway}: webhook ${r.status} (addon ${r.addonId}) → ${r.hookUrl}\n`);
        if (results.length === 0) process.stdout.write('flags.gateways is empty: no webhook to install\n');
        return 0;
      }
      default:
        throw usageError('flags', `unknown subcommand "${sub}"`);
    }
  },
};
