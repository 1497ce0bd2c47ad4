/**
 * When its database goes away, a demo app answers 503 DEMO_DATABASE_UNAVAILABLE (retriable) and /healthz says so,
 * instead of crashing or hanging; when the database is back it serves again without a restart. The gateway's
 * breaker and fallback tests lean on this behaviour.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import pg from 'pg';
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
    assert.equal(((await health.json()) as { status: string }).status, 'unavailable');
    const res = await fetch(`${base}/api/orders/${id}`);
    assert.equal(res.status, 503);
    const body = (await res.json()) as { error: { code: string; retriable: boolean } };
    assert.equal(body.error.code, 'DEMO_DATABASE_UNAVAILABLE');
    assert.equal(body.error.retriable, true);
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
  assert.equal((await fetch(`${base}/healthz`)).status, 503);
});
