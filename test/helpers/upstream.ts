/**
 * A fake upstream on port 0 whose behaviour tests switch at will: answer normally, answer 500, stall (never send
 * headers), reset the socket, or be stopped (connection refused). It records what it received.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type Mode = 'ok' | 'status500' | 'stall' | 'reset' | 'hold';

export interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface FakeUpstream {
  readonly name: string;
  readonly url: string;
  readonly port: number;
  mode: Mode;
  readonly received: Received[];
  /** Answers every request held in 'hold' mode with 200. */
  release(): void;
  /** Resolves when the next request has been received (before it is answered). */
  nextRequest(): Promise<Received>;
  stop(): Promise<void>;
  start(): Promise<void>;
  server: Server;
}

export async function fakeUpstream(name: string): Promise<FakeUpstream> {
  const sockets = new Set<Socket>();
  const waiters: ((r: Received) => void)[] = [];
  const held: (() => void)[] = [];
  let port = 0;
  const up: FakeUpstream = {
    name,
    url: '',
    port: 0,
    mode: 'ok',
    received: [],
    release: () => {
      for (const answer of held.splice(0)) answer();
    },
    nextRequest: () => new Promise((resolve) => waiters.push(resolve)),
    server: createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const r: Received = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString() };
        up.received.push(r);
        for (const w of waiters.splice(0)) w(r);
        const ok = () => {
          res.writeHead(200, { 'content-type': 'application/json', 'x-served-by': name, connection: 'keep-alive', 'keep-alive': 'timeout=5', 'x-hop': 'drop-me' });
          res.end(JSON.stringify({ from: name, method: r.method, url: r.url, body: r.body }));
        };
        switch (up.mode) {
          case 'hold':
            held.push(ok);
            return;
          case 'stall':
            return; // never answers; the socket is destroyed by stop() or the client
          case 'reset':
            req.socket.destroy();
            return;
          case 'status500':
            res.writeHead(500, { 'content-type': 'application/json', 'x-served-by': name });
            res.end(JSON.stringify({ from: name, error: 'boom' }));
            return;
          default:
            ok();
        }
      });
    }),
    stop: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => up.server.close(() => resolve()));
    },
    start: async () => {
      await new Promise<void>((resolve) => up.server.listen(port, '127.0.0.1', () => resolve()));
      port = (up.server.address() as AddressInfo).port;
      Object.assign(up, { port, url: `http://127.0.0.1:${port}` });
    },
  };
  up.server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await up.start();
  return up;
}
