/**
 * The upstream keep-alive agent closes idle sockets itself (a sweep instead of a per-socket idle timer): after
 * upstreams[].keepAliveMs, or earlier when the upstream announces a shorter Keep-Alive timeout, and before the
 * upstream would close them.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { UpstreamAgent } from '../../../gateway/proxy/upstreams.ts';
import { waitFor } from '../../helpers/wait.ts';

const servers: Server[] = [];
const agents: UpstreamAgent[] = [];
after(() => {
  for (const a of agents) a.destroy();
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
});

/** A server with the given keep-alive timeout that records, per connection, whether the client closed it first. */
async function upstream(keepAliveTimeout: number): Promise<{ port: number; closedByClient: Promise<boolean> }> {
  let resolve: (v: boolean) => void = () => {};
  const closedByClient = new Promise<boolean>((r) => (resolve = r));
  const server = createServer({ keepAliveTimeout }, (_req, res) => res.end('ok'));
  server.on('connection', (socket: Socket) => {
    let ended = false;
    socket.on('end', () => (ended = true));
    socket.on('close', () => resolve(ended));
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { port: (server.address() as AddressInfo).port, closedByClient };
}

function get(port: number, agent: UpstreamAgent): Promise<void> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
      res.resume();
      res.on('end', () => resolve());
    })
      .on('error', reject)
      .end();
  });
}

const freeCount = (agent: UpstreamAgent) => Object.values(agent.freeSockets).reduce((n, l) => n + (l?.length ?? 0), 0);


test('an idle socket is kept for reuse, then closed by the agent after idleMs', async () => {
  const up = await upstream(60_000);
  const agent = new UpstreamAgent({ keepAlive: true, maxSockets: 4, idleMs: 300 });
  agents.push(agent);
  const start = Date.now();
  await get(up.port, agent);
  await get(up.port, agent);
  assert.equal(freeCount(agent), 1, 'one socket, reused, now free');
  await waitFor('the idle socket to close', () => freeCount(agent) === 0, 10_000);
  assert.ok(Date.now() - start >= 300, 'not before idleMs');
  assert.equal(await up.closedByClient, true, 'the gateway side closed it, not the upstream');
});

test("a shorter Keep-Alive hint from the upstream wins over idleMs, so the agent closes first", async () => {
  const up = await upstream(2_000); // announces Keep-Alive: timeout=2
  const agent = new UpstreamAgent({ keepAlive: true, maxSockets: 4, idleMs: 60_000 });
  agents.push(agent);
  await get(up.port, agent);
  assert.equal(freeCount(agent), 1);
  await waitFor('the idle socket to close', () => freeCount(agent) === 0, 10_000);
  assert.equal(await up.closedByClient, true, 'closed by the agent before the upstream timed it out');
});
