/**
 * The baseline: http-proxy in front of one upstream with a keep-alive agent and nothing else (no routing, no
 * flags, no breaker, no stats, no logs). Usage: bare-proxy.ts <upstream url>. Prints {"port":n}.
 */
import { Agent, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import httpProxy from 'http-proxy';
import { announce, exitWithParent } from './child.ts';

const target = process.argv[2];
if (!target) throw new Error('usage: bare-proxy.ts <upstream url>');
const agent = new Agent({ keepAlive: true, maxSockets: 256 });
const proxy = httpProxy.createProxyServer({ target, agent });
proxy.on('error', (_err, _req, res) => {
  if ('writeHead' in res && !res.headersSent) res.writeHead(502);
  res.end();
});
const server = createServer((req, res) => proxy.web(req, res));
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
announce({ port: (server.address() as AddressInfo).port });
exitWithParent(() => {
  server.closeAllConnections();
  agent.destroy();
});
