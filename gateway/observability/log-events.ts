/**
 * Every log message the gateway writes, with its level, in one place (fastify's log controller, YARP's event ids).
 * Field names are constants so dashboards and alerts can rely on them.
 */
import type { Logger } from '../../common/logger.ts';

export const F = { reqId: 'reqId', routeId: 'routeId', target: 'target', decision: 'decision', status: 'status', durationMs: 'durationMs' } as const;

type Level = 'debug' | 'info' | 'warn' | 'error';

const EVENTS = {
  'gateway.started': 'info',
  'gateway.stopping': 'info',
  'gateway.stopped': 'info',
  'gateway.drain_timeout': 'warn',
  'gateway.worker_exit': 'warn',
  'request.completed': 'info',
  'request.failed': 'warn',
  'request.fallback': 'warn',
  'request.override_rejected': 'warn',
  'request.rejected': 'warn',
  'upgrade.routed': 'info',
  'upgrade.failed': 'warn',
  'breaker.open': 'warn',
  'breaker.half_open': 'info',
  'breaker.close': 'info',
  'config.reloaded': 'info',
  'config.reload_failed': 'error',
  'config.ephemeral_session_secret': 'warn',
  'flags.ready': 'info',
  'flags.degraded': 'warn',
  'flags.push': 'info',
  'admin.change': 'info',
  'admin.error': 'error',
} as const satisfies Record<string, Level>;

export type LogEvent = keyof typeof EVENTS;

/** Writes one catalogued event. */
export function logEvent(log: Logger, event: LogEvent, fields: Record<string, unknown> = {}): void {
  log[EVENTS[event]](fields, event);
}
