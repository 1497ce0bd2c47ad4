/**
 * The configured upstreams: the only hosts the gateway ever connects to. Each has its own keep-alive agent,
 * kept across config reloads while its settings are unchanged.
 */
import { Agent } from 'node:http';
import type { UpstreamConfig } from '../config/schema.ts';

export interface Upstream {
  readonly id: string;
  readonly config: UpstreamConfig;
  readonly target: URL;
  readonly agent: Agent;
}

function sameSettings(a: UpstreamConfig, b: UpstreamConfig): boolean {
  return a.url === b.url && a.maxSockets === b.maxSockets && a.keepAliveMs === b.keepAliveMs;
}

export function buildUpstreams(configs: readonly UpstreamConfig[], previous?: ReadonlyMap<string, Upstream>): Map<string, Upstream> {
  const out = new Map<string, Upstream>();
  for (const config of configs) {
    const old = previous?.get(config.id);
    if (old && sameSettings(old.config, config)) {
      out.set(config.id, { ...old, config });
      continue;
    }
    const agent = new Agent({ keepAlive: true, maxSockets: config.maxSockets, maxFreeSockets: Math.min(config.maxSockets, 64), timeout: config.keepAliveMs, scheduling: 'lifo' });
    out.set(config.id, { id: config.id, config, target: new URL(config.url), agent });
  }
  return out;
}

/** Closes the agents that the new set no longer uses. */
export function retireUpstreams(previous: ReadonlyMap<string, Upstream>, next: ReadonlyMap<string, Upstream>): void {
  for (const [id, u] of previous) if (next.get(id)?.agent !== u.agent) u.agent.destroy();
}
