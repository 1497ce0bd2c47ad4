/**
 * The baseline: http-proxy in front of one upstream with the same keep-alive agent the gateway gives an upstream
 * (made by the gateway's own upstreamAgent() from the same upstream defaults) and nothing else (no routing, no flags,
 * no breaker, no stats, no logs, no X-Forwarded-* or hop-by-hop header handling). Usage: bare-proxy.ts <upstream url>.
 * Prints {"port":n,"agent":{...}} (describeAgent), which the benchmark compares with the gateway's.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import httpProxy from 'http-proxy';
import { upstreamSchema } from '../../gateway/config/schema.ts';
import { upstreamAgent } from '../../gateway/proxy/upstreams.ts';
import { announce, describeAgent, exitWithParent } from './child.ts';

const target = process.argv[2];
if (!target) throw new Error('usage: bare-proxy.ts <upstream url>');
const agent = upstreamAgent(upstreamSchema.parse({ id: 'legacy', url: target }), null);
const proxy = httpProxy.createProxyServer({ target, agent });
proxy.on('error', (_err, _req, res) => {
  if ('writeHead' in res && !res.headersSent) res.writeHead(502);
  res.end();
});
const server = createServer((req, res) => proxy.web(req, res));
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
announce({ port: (server.address() as AddressInfo).port, agent: describeAgent(agent) });
exitWithParent(() => {
  server.closeAllConnections();
  agent.destroy();
});
