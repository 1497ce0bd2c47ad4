/**
 * Unleash webhook addons that POST flag events to each gateway's /admin/flags/refresh, so a change made in the
 * Unleash UI (an operator's kill switch) reaches the gateways without waiting for their next poll. The gateway
 * reads Unleash's event body (type + featureName): feature-environment-disabled becomes an immediate local rollback,
 * feature-environment-enabled a resume; every other event (strategy changes, archive) only makes it refetch, so the
 * strategy-update event for the title a rollback writes cannot undo that rollback (gateway/admin/app.ts pushFromBody).
 *
 * Caveat (unleash-server 7.5.1): the server caches its list of enabled addons for up to 60 s, so a new webhook may
 * take a minute to start firing. Changes made through strangler push to gateways directly and do not need this.
 *
 * Removing a webhook (`--prune`, for gateways no longer in flags.gateways) must not simply delete it: from that cache
 * a deleted webhook still fires for up to a minute, Unleash then fails to record the delivery (a foreign key to the
 * deleted addon) and unleash-server 7.5.1 exits with code 1 on that error. So a webhook to remove is first disabled,
 * then deleted once the cache has expired (PRUNE_WAIT_MS); a disabled webhook firing from the cache is harmless.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Addon, AddonInput } from './admin-api.ts';
import type { FlagsControl } from './control.ts';

export const WEBHOOK_EVENTS = ['feature-environment-disabled', 'feature-environment-enabled', 'feature-strategy-update', 'feature-strategy-add', 'feature-strategy-remove', 'feature-archived'] as const;

/** strangler's webhooks are recognised by this description (Unleash masks addon URLs when listing them: "*****"). */
const DESCRIPTION_PREFIX = 'strangler: flag changes → ';

/** Unleash's addon cache (60 s) plus a margin: how long a disabled webhook is left before it is deleted. */
export const PRUNE_WAIT_MS = 65_000;

export interface WebhookResult {
  gateway: string;
  hookUrl: string;
  /** created; exists; enabled (it existed, disabled); removed (its gateway is no longer in flags.gateways: --prune). */
  status: 'created' | 'exists' | 'enabled' | 'removed';
  addonId: number;
}

export interface WebhookOptions {
  /** Also remove strangler's webhooks whose gateway is no longer in flags.gateways (disable, wait, delete). */
  prune?: boolean;
  /** How long disabled webhooks are left before they are deleted (default PRUNE_WAIT_MS). */
  pruneWaitMs?: number;
  /** Told before the wait, so a command can say why it pauses. */
  onPruneWait?: (ms: number, webhooks: WebhookResult[]) => void;
}

const hookUrlOf = (base: string) => `${base}/admin/flags/refresh`;

export async function installWebhooks(control: FlagsControl, options: WebhookOptions = {}): Promise<WebhookResult[]> {
  const environments = [...new Set([...control.routes.values()].map((r) => r.flag.environment))];
  const existing = await control.api.listAddons();
  const results: WebhookResult[] = [];
  const wanted = new Set<string>();
  for (const gateway of control.gateways) {
    const base = gateway.url.replace(/\/+$/, '');
    const hookUrl = hookUrlOf(base);
    const description = `${DESCRIPTION_PREFIX}${base}`;
    wanted.add(description);
    const found = existing.find((a) => a.provider === 'webhook' && (a.description === description || a.parameters.url === hookUrl));
    if (found) {
      // A webhook disabled by hand, or by a prune that stopped before deleting it, is this gateway's again.
      if (!found.enabled) await control.api.updateAddon(found.id, { ...inputOf(found), enabled: true });
      results.push({ gateway: gateway.url, hookUrl, status: found.enabled ? 'exists' : 'enabled', addonId: found.id });
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
  if (options.prune) results.push(...(await removeWebhooks(control, existing.filter((a) => isStrangler(a) && !wanted.has(a.description as string)), options)));
  return results;
}

function isStrangler(addon: Addon): boolean {
  return addon.provider === 'webhook' && typeof addon.description === 'string' && addon.description.startsWith(DESCRIPTION_PREFIX);
}

/** Disables the webhooks, waits out Unleash's addon cache, then deletes them (see the module comment for why). */
async function removeWebhooks(control: FlagsControl, stale: Addon[], options: WebhookOptions): Promise<WebhookResult[]> {
  if (stale.length === 0) return [];
  const removed = stale.map((a): WebhookResult => {
    const gateway = (a.description as string).slice(DESCRIPTION_PREFIX.length);
    return { gateway, hookUrl: hookUrlOf(gateway), status: 'removed', addonId: a.id };
  });
  for (const addon of stale) if (addon.enabled) await control.api.updateAddon(addon.id, { ...inputOf(addon), enabled: false });
  // Also when every one was disabled already: when that happened is unknown, so the cache may still hold them.
  const waitMs = options.pruneWaitMs ?? PRUNE_WAIT_MS;
  options.onPruneWait?.(waitMs, removed);
  await sleep(waitMs);
  for (const addon of stale) await control.api.deleteAddon(addon.id);
  return removed;
}

function inputOf(addon: Addon): AddonInput {
  return {
    provider: addon.provider,
    enabled: addon.enabled,
    ...(addon.description ? { description: addon.description } : {}),
    parameters: addon.parameters,
    events: addon.events,
    ...(addon.projects ? { projects: addon.projects } : {}),
    ...(addon.environments ? { environments: addon.environments } : {}),
  };
}
