/**
 * Shared by the benchmark's server processes: announce the bound ports as one JSON line on file descriptor 3 (a
 * pipe the parent opens; stdout stays free, so the gateway can log to it as in production), and exit when the
 * parent goes away (stdin closes) so an interrupted benchmark leaves no server behind.
 */
import { writeSync } from 'node:fs';
import type { Agent } from 'node:http';

export const ANNOUNCE_FD = 3;

export function announce(info: Record<string, unknown>): void {
  writeSync(ANNOUNCE_FD, `${JSON.stringify(info)}\n`);
}

export function exitWithParent(onExit: () => Promise<void> | void = () => {}): void {
  let exiting = false;
  const stop = () => {
    if (exiting) return;
    exiting = true;
    void Promise.resolve(onExit()).finally(() => process.exit(0));
  };
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

/**
 * The settings of a proxy's upstream keep-alive agent that change how it pools and times out connections, announced
 * by every proxy the gateway benchmark compares, so it can refuse to compare proxies whose agents differ.
 */
export function describeAgent(agent: Agent): Record<string, unknown> {
  const a = agent as Agent & { keepAlive?: boolean; keepAliveMsecs?: number; scheduling?: string; options: { timeout?: number }; idleMs?: number };
  return {
    class: agent.constructor.name,
    keepAlive: a.keepAlive,
    keepAliveMsecs: a.keepAliveMsecs,
    maxSockets: agent.maxSockets,
    maxFreeSockets: agent.maxFreeSockets,
    maxTotalSockets: agent.maxTotalSockets,
    scheduling: a.scheduling,
    timeout: a.options.timeout ?? null,
    idleMs: a.idleMs ?? null,
  };
}
