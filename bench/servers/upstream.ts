/**
 * The benchmark's upstream: one process serving the same small JSON answer on two ports, so the gateway's legacy
 * and service upstreams are distinct sockets of one process and "direct" and the bare proxy use the first port.
 * Prints {"ports":[a,b]}.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { announce, exitWithParent } from './child.ts';

const BODY = Buffer.from(JSON.stringify({ id: 42, status: 'shipped', items: [{ sku: 'A-1', qty: 2 }], total: 19.9 }));

function serve(): Promise<Server> {
  const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY.length });
    res.end(BODY);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const servers = [await serve(), await serve()];
announce({ ports: servers.map((s) => (s.address() as AddressInfo).port) });
exitWithParent(() => {
  for (const s of servers) s.closeAllConnections();
});
