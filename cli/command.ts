import { parseArgs, type ParseArgsConfig } from 'node:util';
import { isStranglerError, StranglerError } from '../common/errors.ts';

/** One `strangler <name>` command. Subcommands are dispatched by the command itself. */
export interface Command {
  readonly name: string;
  readonly summary: string;
  /** Full help text printed by `--help`. */
  readonly help: string;
  /** True when the command prints its own help for its subcommands (so `--help` is passed through to it). */
  readonly handlesHelp?: boolean;
  /** Runs the command; resolves to the process exit code. Long-running commands resolve when they stop. */
  run(argv: readonly string[]): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** parseArgs with strict checking and a usage error that points at --help. */
export function parseCommandArgs<O extends Options>(command: string, argv: readonly string[], options: O) {
  try {
    return parseArgs({ args: [...argv], options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (err) {
    throw new StranglerError('CLI_USAGE', `${command}: ${(err as Error).message}. Run \`strangler ${command} --help\`.`);
  }
}

/**
 * The exit code for an error that ended a command: 2 for a usage error (as for a bare or unknown `strangler`, and as
 * diff and grep use 2 for trouble), so scripts can tell a mistyped command from a failure (1) or a command's own
 * documented result codes (e.g. sync verify's 3).
 */
export function exitCodeOf(err: unknown): number {
  return isStranglerError(err) && err.code === 'CLI_USAGE' ? 2 : 1;
}

export function usageError(command: string, message: string): StranglerError {
  return new StranglerError('CLI_USAGE', `${command}: ${message}. Run \`strangler ${command} --help\`.`);
}

/**
 * An integer option (or its environment fallback, already resolved by the caller): undefined when absent, else a
 * usage error naming the flag unless it is an integer within [min, max].
 */
export function intOption(command: string, flag: string, value: string | undefined, range: { min?: number; max?: number } = {}): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  const { min = 0, max } = range;
  if (!/^\d+$/.test(value) || n < min || (max !== undefined && n > max)) {
    throw usageError(command, `${flag} expects an integer ${max === undefined ? `≥ ${min}` : `from ${min} to ${max}`}, got "${value}"`);
  }
  return n;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** A --log-level value: undefined when absent, else a usage error naming the flag unless it is a pino level. */
export function logLevelOption(command: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (!(LOG_LEVELS as readonly string[]).includes(value)) throw usageError(command, `--log-level expects one of ${LOG_LEVELS.join(', ')}, got "${value}"`);
  return value;
}
