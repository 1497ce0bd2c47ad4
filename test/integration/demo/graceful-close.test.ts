/**
 * close() (what SIGTERM calls) lets a request that is already in flight finish and refuses new connections,
 * so a rolling restart of either demo app does not fail acknowledged-in-progress writes.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres, type RunningPostgres } from '../../../devstack/postgres.ts';
import { createOrdersServiceApp, type DemoApp } from '../../../services/example-orders/index.ts';
import { createMonolithApp } from '../../../devstack/demo/monolith/index.ts';

let dataDir: string;
let postgres: RunningPostgres;
const apps: DemoApp[] = [];

before(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'strangler-demo-close-'));
  postgres = await startPostgres({ dataDir, databases: ['legacy_shop', 'orders_service'] });
});

after(async () => {
  for (const app of apps) await app.close();
  await postgres?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

for (const kind of ['legacy', 'service'] as const) {
  test(`${kind}: a POST whose body is still arriving when close() starts completes with 201 and Connection: close; new connections are refused`, async () => {
    const app = kind === 'legacy'
      ? createMonolithApp({ databaseUrl: postgres.url('legacy_shop'), seedOrders: 0 })
      : createOrdersServiceApp({ databaseUrl: postgres.url('orders_service') });
    apps.push(app);
    await app.migrate();
    await app.seed();
    const port = await app.listen(0);

    const body = JSON.stringify({ customerId: 5, items: [{ productId: 2, quantity: 1 }] });
    let refused: Promise<string> | undefined;
    let closing: Promise<void> | undefined;
    const answer = new Promise<{ status: number; text: string; connection: string | undefined }>((resolve, reject) => {
      // Expect: 100-continue makes the server acknowledge the parsed request line and headers before the body is
      // sent, so close() starts while this request is provably in flight.
      const req = request({
        host: '127.0.0.1', port, method: 'POST', path: '/api/orders',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), expect: '100-continue' },
      }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => { text += c; }).on('end', () => resolve({ status: res.statusCode ?? 0, text, connection: res.headers.connection }));
      });
      req.on('error', reject);
      req.once('continue', () => {
        closing = app.close();
        // close() stops the listener synchronously: a new connection now fails.
        refused = fetch(`http://127.0.0.1:${port}/healthz`).then(() => 'connected', () => 'refused');
        req.end(body);
      });
      req.flushHeaders();
    });
    const { status, text, connection } = await answer;
    assert.equal(status, 201, text);
    // A keep-alive client (the gateway's pool) must not send its next request on a connection that is about to close.
    assert.equal(connection, 'close');
    assert.equal((JSON.parse(text) as { customerId: number }).customerId, 5);
    assert.equal(await refused, 'refused');
    await closing;
  });
}
