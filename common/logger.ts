import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import { LogThreadDestination } from './log-destination.ts';
import { timeField } from './request-line.ts';

export type { Logger } from 'pino';

/**
 * Paths pino redacts everywhere: credentials never reach a log line.
 * Request headers are logged under `req.headers`; config snippets under `config`.
 */
export const REDACT_PATHS: readonly string[] = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-strangler-override"]',
  'res.headers["set-cookie"]',
  'headers.authorization',
  'headers.cookie',
  'token',
  'password',
  'secret',
  '*.token',
  '*.password',
  '*.secret',
  '*.adminToken',
  '*.apiToken',
  'config.admin.token',
  'config.flags.token',
  'config.identity.sessionSecret',
  'config.identity.override.secret',
  '*.sasl.password',
  '*.kafka.sasl.password',
];

export interface LoggerSettings {
  level?: string;
  name?: string;
  /** Where lines go; defaults to stdout. Tests pass a stream to read what was logged. */
  destination?: DestinationStream;
  /**
   * Write stdout lines from a log thread (common/log-destination.ts) instead of pino's default destination: for
   * processes that log per request (the gateway's `log.buffer`, on by default). Lines reach stdout up to 25 ms later;
   * `await flushLogger(log)` on a clean stop, and a process 'exit' hook, write the rest.
   */
  buffer?: boolean;
  /** The file descriptor a buffering logger writes to (default stdout). */
  fd?: number;
}

/** The one way a strangler process makes its root logger. */
export function createLogger(settings: LoggerSettings = {}): Logger {
  const options: LoggerOptions = {
    level: settings.level ?? process.env.STRANGLER_LOG_LEVEL ?? 'info',
    redact: { paths: [...REDACT_PATHS], censor: '[redacted]' },
    base: { pid: process.pid, ...(settings.name ? { name: settings.name } : {}) },
    timestamp: () => timeField(Date.now()),
  };
  if (settings.destination) return pino(options, settings.destination);
  return settings.buffer ? pino(options, new LogThreadDestination(settings.fd ?? process.stdout.fd ?? 1)) : pino(options);
}

/** Resolves once every line logged so far is written (a no-op for destinations that write at once). */
export function flushLogger(log: Logger): Promise<void> {
  return new Promise((resolve) => log.flush(() => resolve()));
}

/** A logger that drops everything: for unit tests and library callers that pass none. */
export const silentLogger: Logger = pino({ level: 'silent' });
