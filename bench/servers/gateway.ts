/**
 * The full gateway as a benchmark server: one route with a legacy and a service upstream, its flag at a
 * flexibleRollout percentage from a bootstrap features file (no Unleash), the default breaker and fallback
 * policies, stats, and logs at production level: the logger startGateway makes by default (pino, info level: one
 * request.completed line per request, written to stdout by the log thread of log.buffer, its
 * default), with stdout redirected to a file by the parent.
 *
 * Usage: gateway.ts <legacy url> <service url> <work dir>. Prints {"port":n,"agent":{...}} (the legacy upstream's agent,
 * describeAgent), which the benchmark compares with the bare proxy's.
 * Profiling knobs (environment): BENCH_FLAG_PERCENT (default 50), BENCH_LOG_LEVEL (default info),
 * BENCH_RESPONSE_HEADERS (default 1), BENCH_LEGACY_ONLY (default 0: the route has a service), BENCH_LOG_SAMPLE_RATE
 * (proxy.logSampleRate, default 1: every request logged), BENCH_LOG_SINK (where log lines go: `stdout`, the default,
 * which the parent redirects to a file; `devnull`, the same log thread writing to /dev/null; `none`, lines made
 * and dropped: to tell the cost of making a line from the cost of writing it).
 */
import { openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLogger, type Logger } from '../../common/logger.ts';
import { validateConfig } from '../../gateway/config/load.ts';
import { startGateway } from '../../gateway/server.ts';
import { announce, describeAgent, exitWithParent } from './child.ts';

const [legacyUrl, serviceUrl, dir] = process.argv.slice(2);
if (!legacyUrl || !serviceUrl || !dir) throw new Error('usage: gateway.ts <legacy url> <service url> <work dir>');
const percent = Number(process.env.BENCH_FLAG_PERCENT ?? 50);
const level = process.env.BENCH_LOG_LEVEL ?? 'info';
const responseHeaders = (process.env.BENCH_RESPONSE_HEADERS ?? '1') === '1';
const logSampleRate = Number(process.env.BENCH_LOG_SAMPLE_RATE ?? 1);
const legacyOnly = process.env.BENCH_LEGACY_ONLY === '1';
const flag = 'strangler.orders';

const featuresFile = join(dir, `features-${process.pid}.json`);
writeFileSync(featuresFile, JSON.stringify({
  version: 2,
  features: [{
    name: flag,
    enabled: true,
    strategies: [{ name: 'flexibleRollout', constraints: [], parameters: { groupId: flag, rollout: String(percent), stickiness: 'default' } }],
  }],
}));

const config = validateConfig({
  upstreams: [
    { id: 'legacy', url: legacyUrl },
    { id: 'orders-svc', url: serviceUrl },
  ],
  routes: [
    { id: 'orders', match: { pathPrefix: '/api/orders' }, legacy: 'legacy', ...(legacyOnly ? {} : { service: 'orders-svc' }) },
  ],
  flags: { url: null, backupPath: null, bootstrapFile: featuresFile },
  proxy: { bind: '127.0.0.1', port: 0, responseHeaders, logSampleRate },
  admin: { port: 0, token: 'bench-admin-token-0123456789' },
  identity: { sessionSecret: 'bench-session-secret-0123456789', override: { secret: 'bench-override-secret-0123456789' } },
  log: { level },
}, 'bench');

const sink = process.env.BENCH_LOG_SINK ?? 'stdout';
const sinks: Record<string, () => Logger | undefined> = {
  stdout: () => undefined,
  devnull: () => createLogger({ level, name: 'gateway', buffer: true, fd: openSync('/dev/null', 'w') }),
  none: () => createLogger({ level, name: 'gateway', destination: { write: () => undefined } }),
};
const makeLog = sinks[sink];
if (!makeLog) throw new Error(`BENCH_LOG_SINK: expected one of ${Object.keys(sinks).join(', ')}, found ${sink}`);
const log = makeLog();
const gateway = await startGateway(config, { watch: false, port: 0, adminPort: 0, ...(log ? { log } : {}) });
const legacyAgent = gateway.runtime.snapshot.upstreams.get('legacy')?.agent;
announce({ port: Number(new URL(gateway.proxyUrl).port), ...(legacyAgent ? { agent: describeAgent(legacyAgent) } : {}) });
exitWithParent(() => gateway.close());
