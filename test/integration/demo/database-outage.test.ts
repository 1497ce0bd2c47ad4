/**
 * When its database goes away, a demo app answers 503 DEMO_DATABASE_UNAVAILABLE (retriable) and /healthz says so,
 * instead of crashing or hanging; when the database is back it serves again without a restart. The gateway's
 * breaker and fallback tests lean on this behaviour.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import pg from 'pg';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres, type RunningPostgres } from '../../../devstack/postgres.ts';
import { createOrdersServiceApp, type DemoApp } from '../../../services/example-orders/index.ts';
import { createMonolithApp } from '../../../devstack/demo/monolith/index.ts';

let dataDir: string;
let postgres: RunningPostgres | undefined;
const apps: DemoApp[] = [];

before(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'strangler-demo-outage-'));
  postgres = await startPostgres({ dataDir, databases: ['legacy_shop', 'orders_service'] });
});

after(async () => {
  for (const app of apps) await app.close();
  await postgres?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

test('database down → 503 DEMO_DATABASE_UNAVAILABLE on both apps; back up → serving again', async () => {
  const pg1 = postgres!;
  const legacy = createMonolithApp({ databaseUrl: pg1.url('legacy_shop'), seedOrders: 1 });
  const service = createOrdersServiceApp({ databaseUrl: pg1.url('orders_service') });
  apps.push(legacy, service);
  const bases: string[] = [];
  for (const app of [legacy, service]) {
    await app.migrate();
    await app.seed();
    bases.push(`http://127.0.0.1:${await app.listen(0)}`);
  }
  const created = await fetch(`${bases[1]}/api/orders`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ customerId: 1, items: [{ productId: 1, quantity: 1 }] }),
  });
  const { id } = (await created.json()) as { id: string };

  await pg1.stop();
  postgres = undefined;
  for (const base of bases) {
    const health = await fetch(`${base}/healthz`);
    assert.equal(health.status, 503);
    const healthText = await health.text();
    assert.equal((JSON.parse(healthText) as { status: string }).status, 'unavailable');
    const res = await fetch(`${base}/api/orders/${id}`);
    assert.equal(res.status, 503);
    const text = await res.text();
    const body = JSON.parse(text) as { error: { code: string; retriable: boolean; message: string } };
    assert.equal(body.error.code, 'DEMO_DATABASE_UNAVAILABLE');
    assert.equal(body.error.retriable, true);
    assert.match(body.error.message, /ECONNREFUSED/, 'the class of failure');
    // The driver's text names the database's address (and, for other failures, user and database names): it stays in
    // the log, never in what a client (through the gateway) or a probe reads.
    for (const answer of [text, healthText]) assert.ok(!answer.includes(`:${pg1.port}`), `database address leaked: ${answer}`);
  }

  postgres = await startPostgres({ dataDir, port: pg1.port });
  assert.equal((await fetch(`${bases[0]}/healthz`)).status, 200);
  const again = await fetch(`${bases[1]}/api/orders/${id}`);
  assert.equal(again.status, 200);
});

test('a statement stuck behind a lock answers 503 after queryTimeoutMs (not a request hung forever), and close() still finishes', async () => {
  const pg1 = postgres!;
  const service = createOrdersServiceApp({ databaseUrl: pg1.url('orders_service'), queryTimeoutMs: 300 });
  apps.push(service);
  await service.migrate();
  await service.seed();
  const base = `http://127.0.0.1:${await service.listen(0)}`;
  // What a schema migration (ALTER TABLE) or a stuck batch job does to the table while the service serves.
  const locker = new pg.Client({ connectionString: pg1.url('orders_service') });
  await locker.connect();
  try {
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE order_records IN ACCESS EXCLUSIVE MODE');
    const started = Date.now();
    const res = await fetch(`${base}/api/orders?customerId=1`, { signal: AbortSignal.timeout(10_000) });
    const body = (await res.json()) as { error: { code: string; retriable: boolean } };
    assert.equal(res.status, 503, JSON.stringify(body));
    assert.equal(body.error.code, 'DEMO_DATABASE_UNAVAILABLE');
    assert.equal(body.error.retriable, true);
    assert.ok(Date.now() - started < 5_000, `answered after ${Date.now() - started} ms`);
  } finally {
    await locker.query('ROLLBACK');
    await locker.end();
  }
  assert.equal((await fetch(`${base}/api/orders?customerId=1`)).status, 200, 'serves again once the lock is gone');
  await service.close();
});

test('a database host that does not resolve (DNS) is 503 DEMO_DATABASE_UNAVAILABLE, not 500', async () => {
  const service = createOrdersServiceApp({ databaseUrl: 'postgres://orders:pw@db.invalid:5432/orders_service' });
  apps.push(service);
  const base = `http://127.0.0.1:${await service.listen(0)}`;
  const res = await fetch(`${base}/api/orders?customerId=1`);
  const body = (await res.json()) as { error: { code: string; retriable: boolean } };
  assert.equal(res.status, 503, JSON.stringify(body));
  assert.equal(body.error.code, 'DEMO_DATABASE_UNAVAILABLE');
  const health = await fetch(`${base}/healthz`);
  assert.equal(health.status, 503);
  for (const answer of [JSON.stringify(body), await health.text()]) assert.ok(!answer.includes('db.invalid'), `database host leaked: ${answer}`);
});

/**
 * A TCP proxy that holds bytes in both directions while stalled (they wait in the kernel's buffers) and delivers
 * them on resume: a network blip that TCP recovers from, unlike a partition that loses the connection.
 */
class StallProxy {
  readonly #server = createServer((client) => this.#accept(client));
  readonly #sockets = new Set<Socket>();
  port = 0;
  constructor(readonly targetPort: number) {}
  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.port = (this.#server.address() as AddressInfo).port;
  }
  #accept(client: Socket): void {
    const upstream = connect(this.targetPort, '127.0.0.1');
    for (const socket of [client, upstream]) {
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
      socket.on('error', () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
  stall(): void { for (const socket of this.#sockets) socket.pause(); }
  resume(): void { for (const socket of this.#sockets) socket.resume(); }
  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

test('a PATCH whose BEGIN times out during a network stall does not leave a pooled connection in an open transaction that swallows later writes', async () => {
  const pg1 = postgres!;
  const proxy = new StallProxy(pg1.port);
  await proxy.start();
  const url = new URL(pg1.url('orders_service'));
  url.port = String(proxy.port);
  // One connection, so the request after the stall provably gets the connection the PATCH used.
  const service = createOrdersServiceApp({ databaseUrl: url.toString(), queryTimeoutMs: 200, poolSize: 1 });
  apps.push(service);
  const direct = new pg.Client({ connectionString: pg1.url('orders_service') });
  await direct.connect();
  try {
    await service.migrate();
    await service.seed();
    const base = `http://127.0.0.1:${await service.listen(0)}`;
    const post = (body: unknown) => fetch(`${base}/api/orders`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const { id } = (await (await post({ customerId: 1, items: [{ productId: 1, quantity: 1 }] })).json()) as { id: string };

    proxy.stall();
    const patch = await fetch(`${base}/api/orders/${id}`, { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ status: 'paid' }) });
    assert.equal(patch.status, 503, await patch.text());
    // The BEGIN the service gave up on now reaches the server and opens a transaction on that connection.
    proxy.resume();

    const created = await post({ customerId: 2, items: [{ productId: 2, quantity: 1 }] });
    const text = await created.text();
    assert.equal(created.status, 201, text);
    const seen = await direct.query('SELECT 1 FROM order_records WHERE order_id = $1', [(JSON.parse(text) as { id: string }).id]);
    assert.equal(seen.rowCount, 1, 'an order answered 201 is committed: another connection sees it');
    const open = await direct.query(`SELECT 1 FROM pg_stat_activity WHERE datname = 'orders_service' AND state = 'idle in transaction'`);
    assert.equal(open.rowCount, 0, 'no connection is left idle inside a transaction');
  } finally {
    await direct.end();
    await service.close();
    await proxy.close();
  }
});
