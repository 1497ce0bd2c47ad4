/** Raw HTTP/1.1 bytes to a server, for what a well-behaved client library would not send (smuggling, bad framing). */
import { once } from 'node:events';
import { connect } from 'node:net';

/** Sends `request` as it is and returns the raw response text, once the server closes the connection. */
export async function raw(url: string, request: string | Buffer): Promise<string> {
  const socket = connect(Number(new URL(url).port), '127.0.0.1');
  await once(socket, 'connect');
  socket.write(request);
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  await once(socket, 'close');
  return Buffer.concat(chunks).toString();
}
