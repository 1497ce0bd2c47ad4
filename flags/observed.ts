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

export interface ObservedRoute {
  gateway: string;
  error: string | null;
  requests: number;
  /** What the gateway's flag client serves: "5%", "off", "legacy (local override)", "unknown flag"; "…, Unleash error: …" when it cannot read Unleash. */
  serves: string | null;
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
      for (const list of Object.values(out)) list.push({ gateway: g.url, error: messageOf(err), requests: 0, serves: null, serviceShare: null, breaker: null, errorRate: null, p99Ms: null, fallbacks: 0, guard: null, plan: null });
    }
  }));
  return out;
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
        : [route, o.gateway, o.serves ?? '-', String(o.requests), pct(o.serviceShare), o.breaker ?? '-', `${pct(o.errorRate?.legacy)}/${pct(o.errorRate?.service)}`, `${ms(o.p99Ms?.legacy)}/${ms(o.p99Ms?.service)}`, String(o.fallbacks), o.guard ?? '-', o.plan ?? '-']);
    }
  }
  if (rows.length === 0) return 'observed: no gateways configured (flags.gateways)\n';
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  return `observed by each gateway (its stats window):\n${[header, ...rows].map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n')}\n`;
}
