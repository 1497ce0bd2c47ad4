/**
 * Unleash webhook addons that POST flag events to each gateway's /admin/flags/refresh, so a change made in the
 * Unleash UI (an operator's kill switch) reaches the gateways without waiting for their next poll. The gateway
 * reads Unleash's event body (type + featureName): feature-environment-disabled becomes an immediate local rollback,
 * feature-environment-enabled a resume; every other event (strategy changes, archive) only makes it refetch, so the
 * strategy-update event for the title a rollback writes cannot undo that rollback (gateway/admin/app.ts pushFromBody).
 *
 * Caveat (unleash-server 7.5.1): the server caches its list of enabled addons for up to 60 s, so a new webhook may
 * take a minute to start firing. Changes made through strangler push to gateways directly and do not need this.
 */
import type { FlagsControl } from './control.ts';

export const WEBHOOK_EVENTS = ['feature-environment-disabled', 'feature-environment-enabled', 'feature-strategy-update', 'feature-strategy-add', 'feature-strategy-remove', 'feature-archived'] as const;

export interface WebhookResult {
  gateway: string;
  hookUrl: string;
  status: 'created' | 'exists';
  addonId: number;
}

export async function installWebhooks(control: FlagsControl): Promise<WebhookResult[]> {
  const environments = [...new Set([...control.routes.values()].map((r) => r.flag.environment))];
  const existing = await control.api.listAddons();
  const results: WebhookResult[] = [];
  for (const gateway of control.gateways) {
    const base = gateway.url.replace(/\/+$/, '');
    const hookUrl = `${base}/admin/flags/refresh`;
    // Unleash masks addon URLs when listing them ("*****"), so strangler's addons are recognised by description.
    const description = `strangler: flag changes → ${base}`;
    const found = existing.find((a) => a.provider === 'webhook' && (a.description === description || a.parameters.url === hookUrl));
    if (found) {
      results.push({ gateway: gateway.url, hookUrl, status: 'exists', addonId: found.id });
      continue;
    }
    const addon = await control.api.createWebhook(hookUrl, {
      events: [...WEBHOOK_EVENTS],
      environments,
      description,
      ...(gateway.token ? { authorization: `Bearer ${gateway.token}` } : {}),
    });
    results.push({ gateway: gateway.url, hookUrl, status: 'created', addonId: addon.id });
  }
  return results;
}
