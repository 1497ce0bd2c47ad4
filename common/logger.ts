import { pino, type Logger, type LoggerOptions } from 'pino';

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
];

export interface LoggerSettings {
  level?: string;
  name?: string;
  /** Where lines go; defaults to stdout. Tests pass a stream to read what was logged. */
  destination?: NodeJS.WritableStream;
}

/** The one way a strangler process makes its root logger. */
export function createLogger(settings: LoggerSettings = {}): Logger {
  const options: LoggerOptions = {
    level: settings.level ?? process.env.STRANGLER_LOG_LEVEL ?? 'info',
    redact: { paths: [...REDACT_PATHS], censor: '[redacted]' },
    base: { pid: process.pid, ...(settings.name ? { name: settings.name } : {}) },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return settings.destination ? pino(options, settings.destination) : pino(options);
}

/** A logger that drops everything: for unit tests and library callers that pass none. */
export const silentLogger: Logger = pino({ level: 'silent' });
