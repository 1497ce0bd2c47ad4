/**
 * WebSocket upgrades in gateway tests: an upstream that greets each upgraded connection with one message, and a
 * client that reads the first message through the gateway.
 */
import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type { Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';

/** Accepts WebSocket upgrades on `server`, sending `greeting(req, socket)` on each, until the returned stop(). */
export function greetWebSockets(server: HttpServer | HttpsServer, greeting: (req: IncomingMessage, socket: Duplex) => string): () => void {
  const wss = new WebSocketServer({ noServer: true });
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => wss.handleUpgrade(req, socket, head, (ws) => ws.send(greeting(req, socket)));
  server.on('upgrade', onUpgrade);
  return () => {
    server.off('upgrade', onUpgrade);
    wss.close();
  };
}

/** Opens a WebSocket to `url` (http:// or ws://), returns the first message it receives, and closes it. */
export async function firstWebSocketMessage(url: string, headers: Record<string, string> = {}): Promise<string> {
  const ws = new WebSocket(url.replace(/^http/, 'ws'), { headers });
  const [message] = (await once(ws, 'message')) as [Buffer];
  ws.close();
  await once(ws, 'close');
  return message.toString();
}

/** Opens a WebSocket to `url`, returns the headers of the gateway's 101 and the first message, and closes it. */
export async function webSocketHandshake(url: string, options: { headers?: Record<string, string>; protocols?: string[]; origin?: string } = {}): Promise<{ headers: IncomingMessage['headers']; message: string }> {
  const ws = new WebSocket(url.replace(/^http/, 'ws'), options.protocols ?? [], { headers: options.headers ?? {}, ...(options.origin ? { origin: options.origin } : {}) });
  const upgraded = once(ws, 'upgrade') as Promise<[IncomingMessage]>;
  const [message] = (await once(ws, 'message')) as [Buffer];
  const [res] = await upgraded;
  ws.close();
  await once(ws, 'close');
  return { headers: res.headers, message: message.toString() };
}
