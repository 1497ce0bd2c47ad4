import { createServer } from 'node:net';
import { StranglerError } from './errors.ts';

/**
 * A port the OS considers free right now. Only for child processes that cannot bind port 0 and report back
 * (PostgreSQL); our own servers bind port 0 and read the address.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() => (address && typeof address === 'object' ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** Fails with PORT_IN_USE naming the port and how to change it, when `port` cannot be bound on `host`. */
export async function assertPortFree(host: string, port: number, howToChange: string): Promise<void> {
  if (port === 0) return;
  await new Promise<void>((resolve, reject) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'EADDRINUSE'
        ? new StranglerError('PORT_IN_USE', `port ${port} on ${host} is already in use; ${howToChange}`)
        : err);
    });
    server.listen(port, host, () => server.close(() => resolve()));
  });
}
