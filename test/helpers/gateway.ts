/**
 * Builds gateway configs for tests and starts gateways on ephemeral ports with a silent logger.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateConfig, type LoadedConfig } from '../../gateway/config/load.ts';
import { startGateway, type GatewayOptions, type RunningGateway } from '../../gateway/server.ts';
import { silentLogger } from '../../common/logger.ts';

/** A /api/client/features body with one flexibleRollout flag per entry. */
export function featuresFile(flags: Record<string, { enabled?: boolean; percent: number }>): string {
  const dir = mkdtempSync(join(tmpdir(), 'strangler-flags-'));
  const file = join(dir, 'features.json');
  writeFileSync(file, JSON.stringify({
    version: 2,
    features: Object.entries(flags).map(([name, f]) => ({
      name,
      enabled: f.enabled ?? true,
      strategies: [{ name: 'flexibleRollout', constraints: [], parameters: { groupId: name, rollout: String(f.percent), stickiness: 'default' } }],
    })),
  }));
  return file;
}

export interface TestGatewayConfig {
  legacyUrl: string;
  serviceUrl: string;
  /** Extra fields merged into the raw config (before validation). */
  raw?: Record<string, unknown>;
  route?: Record<string, unknown>;
  flags?: Record<string, unknown>;
}

export function testConfig(c: TestGatewayConfig): LoadedConfig {
  const raw = {
    upstreams: [
      { id: 'legacy', url: c.legacyUrl, timeoutMs: 2000, connectTimeoutMs: 500 },
      { id: 'svc', url: c.serviceUrl, timeoutMs: 2000, connectTimeoutMs: 500 },
    ],
    routes: [{ id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy', service: 'svc', ...c.route }],
    flags: { url: null, backupPath: null, ...c.flags },
    proxy: { port: 0, bind: '127.0.0.1', drainTimeoutMs: 2000 },
    admin: { port: 0, token: 'test-admin-token-0123456789' },
    identity: { sessionSecret: 'test-session-secret-0123456789', override: { secret: 'test-override-secret-0123456789' } },
    ...c.raw,
  };
  return validateConfig(raw, 'test-config.yaml');
}

export async function startTestGateway(config: LoadedConfig, options: GatewayOptions = {}): Promise<RunningGateway> {
  return startGateway(config, { log: silentLogger, watch: false, ...options });
}
