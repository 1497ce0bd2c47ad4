/**
 * What each gateway actually observed for a route over its stats window (GET /admin/routes): the share sent to the
 * service, breaker state, error rate and p99 per target, fallbacks, and guard/plan state. Shown by `flags status`
 * beside the configured percentage, since the two can differ (a rollback in flight, a gateway that cannot reach
 * Unleash, a breaker that is open).
 */
import { messageOf } from '../common/errors.ts';
import type { RouteStatus } from '../gateway/admin/types.ts';
import type { FlagsControl } from './control.ts';
import { readGatewayRoutes } from './controller.ts';
import type { RouteFlagStatus } from './traffic.ts';

export interface ObservedRoute {
  gateway: string;
  error: string | null;
  requests: number;
  /** What the gateway's flag client serves: "5%", "off", "legacy (local override)", "unknown flag"; "…, Unleash error: …" when it cannot read Unleash. */
  serves: string | null;
  /** The share of users it sends to the service (0 when off, overridden or unknown); null when not one percentage. */
  servesPercent: number | null;
  /** Set by markMismatches: how this differs from what Unleash has ("Unleash on at 25 %"), null when it agrees. */
  mismatch: string | null;
  serviceShare: number | null;
  breaker: string | null;
  errorRate: { legacy: number; service: number } | null;
  p99Ms: { legacy: number | null; service: number | null } | null;
  fallbacks: number;
  guard: string | null;
  plan: string | null;
}

export async function observedStatus(control: FlagsControl): Promise<Record<string, ObservedRoute[]>> {
  const out: Record<string, ObservedRoute[]> = {};
  for (const id of control.routes.keys()) out[id] = [];
  await Promise.all(control.gateways.map(async (g) => {
    try {
      const view = await readGatewayRoutes(g, control.refreshTimeoutMs);
      for (const r of view.routes) {
        const list = out[r.id];
        if (!list) continue;
        const { legacy, service } = r.stats;
        const requests = legacy.requests + service.requests;
        list.push({
          gateway: g.url,
          error: null,
          requests,
          serves: servesOf(r.flagState, view.gateway.flagsError),
          servesPercent: r.flagState.localOverride || !r.flagState.known || !r.flagState.enabled ? 0 : r.flagState.rolloutPercent,
          mismatch: null,
          serviceShare: requests === 0 ? null : service.share,
          breaker: r.breaker.state,
          errorRate: { legacy: legacy.errorRate, service: service.errorRate },
          p99Ms: { legacy: legacy.p99Ms, service: service.p99Ms },
          fallbacks: service.fallbacks,
          guard: r.guard ? (r.guard.lastVerdict ?? 'no verdict yet') : null,
          plan: r.plan ? `${r.plan.state}${r.plan.stepIndex >= 0 ? ` step ${r.plan.stepIndex + 1}/${r.plan.steps.length}` : ''}` : null,
        });
      }
    } catch (err) {
      for (const list of Object.values(out)) list.push({ gateway: g.url, error: messageOf(err), requests: 0, serves: null, servesPercent: null, mismatch: null, serviceShare: null, breaker: null, errorRate: null, p99Ms: null, fallbacks: 0, guard: null, plan: null });
    }
  }));
  return out;
}

/**
 * Marks every gateway that does not serve what Unleash has for the route (a push that did not land, a local rollback
 * override Unleash never got, a gateway that lags or reads another environment), so `flags status` says so instead of
 * leaving the operator to compare two tables. Returns how many entries differ.
 */
export function markMismatches(rows: readonly Pick<RouteFlagStatus, 'routeId' | 'state' | 'percent' | 'effectivePercent'>[], observed: Record<string, ObservedRoute[]>): number {
  let count = 0;
  for (const row of rows) {
    const unleash = row.state === 'on' ? (row.percent === null ? null : row.effectivePercent) : 0;
    for (const o of observed[row.routeId] ?? []) {
      o.mismatch = o.error || unleash === null || o.servesPercent === unleash ? null : `Unleash: ${row.state === 'on' ? `on at ${unleash} %` : row.state}`;
      if (o.mismatch) count++;
    }
  }
  return count;
}

/** The gateway's own flag state, which can lag Unleash (a push that did not land, a revoked token, a local rollback). */
function servesOf(f: RouteStatus['flagState'], flagsError: string | null): string {
  const serves = f.localOverride ? `${f.localOverride} (local override)` : !f.known ? 'unknown flag' : !f.enabled ? 'off' : `${f.rolloutPercent ?? '?'}%`;
  return flagsError ? `${serves}, Unleash error: ${flagsError}` : serves;
}

const pct = (x: number | null | undefined) => (x === null || x === undefined ? '-' : `${(x * 100).toFixed(1)}%`);
const ms = (x: number | null | undefined) => (x === null || x === undefined ? '-' : `${x.toFixed(1)}ms`);

/** The "observed by each gateway" table of `flags status`. */
export function formatObserved(observed: Record<string, ObservedRoute[]>): string {
  const header = ['route', 'gateway', 'serves', 'requests', 'to service', 'breaker', 'errors L/S', 'p99 L/S', 'fallbacks', 'guard', 'plan'];
  const rows: string[][] = [];
  for (const [route, list] of Object.entries(observed)) {
    for (const o of list) {
      rows.push(o.error
        ? [route, o.gateway, `unreachable: ${o.error}`, '', '', '', '', '', '', '', '']
        : [route, o.gateway, `${o.serves ?? '-'}${o.mismatch ? ` ≠ ${o.mismatch}` : ''}`, String(o.requests), pct(o.serviceShare), o.breaker ?? '-', `${pct(o.errorRate?.legacy)}/${pct(o.errorRate?.service)}`, `${ms(o.p99Ms?.legacy)}/${ms(o.p99Ms?.service)}`, String(o.fallbacks), o.guard ?? '-', o.plan ?? '-']);
    }
  }
  if (rows.length === 0) return 'observed: no gateways configured (flags.gateways)\n';
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const differ = Object.values(observed).flat().filter((o) => o.mismatch).length;
  const note = differ === 0 ? '' : `${differ} gateway entr${differ === 1 ? 'y does' : 'ies do'} not serve what Unleash has (marked ≠): a push that did not land, a local rollback override (lifted by \`flags resume\`), or a gateway that cannot read Unleash\n`;
  return `observed by each gateway (its stats window):\n${[header, ...rows].map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n')}\n${note}`;
}
