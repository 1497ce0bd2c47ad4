/**
 * Shows the promotion controller's durable state (guard verdicts, plan step) on the admin API and dashboard. The
 * gateway only reads the store the controller writes (flags/controller-state.ts); it never takes the leader lock.
 */
import type { LoadedConfig } from '../config/load.ts';
import type { ControlPlane } from './app.ts';
import { planHoldMs } from '../../flags/controller.ts';
import { stateStoreFor } from '../../flags/controller-command.ts';

export function controllerStateFromConfig(config: LoadedConfig): Pick<ControlPlane, 'controllerState'> & { close?: () => Promise<void> } {
  const watched = config.routes.filter((r) => r.guard || r.plan);
  if (watched.length === 0 || (!config.controller.databaseUrl && !config.controller.stateFile)) return {};
  const store = stateStoreFor(config);
  return {
    controllerState: async () => {
      const records = await store.loadAll().catch(() => ({}) as Awaited<ReturnType<typeof store.loadAll>>);
      const out: Record<string, { guard: unknown; plan: unknown }> = {};
      for (const route of watched) {
        const r = records[route.id];
        out[route.id] = {
          guard: route.guard ? { enabled: route.guard.enabled, lastVerdict: r?.lastVerdict ?? null, lastCheckedAt: r?.lastCheckedAt ? new Date(r.lastCheckedAt).toISOString() : null, reasons: r?.lastReasons ?? [] } : null,
          plan: route.plan
            ? { steps: [...route.plan.steps], stepIndex: r?.stepIndex ?? -1, state: r?.state ?? 'not-started', ...(r?.state === 'paused' && r.pause ? { reason: r.pause.reason } : {}), holdUntil: r?.holdStartedAt ? new Date(r.holdStartedAt + planHoldMs(route.plan, config.admin.statsWindowMs)).toISOString() : null }
            : null,
        };
      }
      return out;
    },
    close: () => store.close(),
  };
}
