/**
 * The demo monolith and the extracted orders service, each on its own embedded-PostgreSQL database, pass the same
 * contract suite; and the same logical order written straight into each database (in each one's own schema) is
 * answered with byte-identical JSON, which is what lets the gateway move traffic between them unnoticed.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres, type RunningPostgres } from '../../../devstack/postgres.ts';
import { createMonolithApp } from '../../../devstack/demo/monolith/index.ts';
import { createOrdersServiceApp, type DemoApp } from '../../../services/example-orders/index.ts';
import { ordersContractSuite, type ContractTarget } from './orders-contract.ts';

let dataDir: string;
let postgres: RunningPostgres;
let legacy: DemoApp;
let service: DemoApp;
const targets: Record<'legacy' | 'service', ContractTarget> = {
  legacy: { baseUrl: '', servedBy: 'legacy' },
  service: { baseUrl: '', servedBy: 'service' },
};

before(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'strangler-demo-contract-'));
  postgres = await startPostgres({ dataDir, databases: ['legacy_shop', 'orders_service'] });
  legacy = createMonolithApp({ databaseUrl: postgres.url('legacy_shop'), seedOrders: 0 });
  service = createOrdersServiceApp({ databaseUrl: postgres.url('orders_service') });
  for (const [name, app] of [['legacy', legacy], ['service', service]] as const) {
    await app.migrate();
    await app.seed();
    targets[name].baseUrl = `http://127.0.0.1:${await app.listen(0)}`;
  }
});

after(async () => {
  await legacy?.close();
  await service?.close();
  await postgres?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

ordersContractSuite('legacy monolith', () => targets.legacy);
ordersContractSuite('extracted orders service', () => targets.service);

describe('same logical order, two schemas, identical JSON', () => {
  // Rows as each side stores them: legacy in cents with lower-case statuses; service in decimal with upper-case
  // states. Timestamps carry microseconds, which both answer truncated to milliseconds.
  const cases = [
    { id: '01933b7e-1c00-7a00-8000-000000000001', customer: 3, status: 'pending', state: 'PENDING', cents: 1299, amount: '12.99', notes: null, created: '2026-11-01T10:00:00.123456Z', updated: '2026-11-01T10:00:00.123456Z' },
    { id: '01933b7e-1c00-7a00-8000-000000000002', customer: 3, status: 'cancelled', state: 'CANCELED', cents: 5, amount: '0.05', notes: 'Gift wrap, please', created: '2026-11-02T10:00:00.5Z', updated: '2026-11-03T08:30:00.999999Z' },
    { id: '01933b7e-1c00-7a00-8000-000000000003', customer: 3, status: 'delivered', state: 'DELIVERED', cents: 2147483647, amount: '21474836.47', notes: 'ü ✓ "quoted"', created: '2026-11-02T10:00:00.5Z', updated: '2026-11-04T00:00:00Z' },
    { id: '01933b7e-1c00-7a00-8000-000000000004', customer: 3, status: 'shipped', state: 'SHIPPED', cents: 100, amount: '1.00', notes: '', created: '2026-10-30T23:59:59.999Z', updated: '2026-10-31T00:00:00Z' },
    { id: '01933b7e-1c00-7a00-8000-000000000005', customer: 3, status: 'paid', state: 'PAID', cents: 0, amount: '0.00', notes: null, created: '2026-10-29T00:00:00Z', updated: '2026-10-29T00:00:01Z' },
  ] as const;
  const items = [{ productId: 1, sku: 'MUG-001', quantity: 1, unitPriceCents: 1299 }];

  before(async () => {
    for (const c of cases) {
      await legacy.pool.query(
        `INSERT INTO orders (id, customer_id, status, total_cents, currency, items, notes, created_at, updated_at)
         VALUES ($1, $2, $3, $4, 'EUR', $5::jsonb, $6, $7, $8)`,
        [c.id, c.customer, c.status, c.cents, JSON.stringify(items), c.notes, c.created, c.updated],
      );
      await service.pool.query(
        `INSERT INTO order_records (order_id, buyer_id, state, amount, currency_code, line_items, note, placed_at, modified_at)
         VALUES ($1, $2, $3, $4::numeric, 'EUR', $5::jsonb, $6, $7, $8)`,
        [c.id, c.customer, c.state, c.amount, JSON.stringify(items), c.notes, c.created, c.updated],
      );
    }
  });

  test('GET /api/orders/:id is byte-identical for every status, amount edge and notes value', async () => {
    for (const c of cases) {
      const [a, b] = await Promise.all([fetch(`${targets.legacy.baseUrl}/api/orders/${c.id}`), fetch(`${targets.service.baseUrl}/api/orders/${c.id}`)]);
      const [ta, tb] = [await a.text(), await b.text()];
      assert.equal(a.status, 200, ta);
      assert.equal(tb, ta, `order ${c.id}`);
      const parsed = JSON.parse(ta) as { status: string; totalCents: number; createdAt: string };
      assert.equal(parsed.status, c.status);
      assert.equal(parsed.totalCents, c.cents);
      assert.equal(parsed.createdAt, new Date(c.created).toISOString());
      assert.equal(a.headers.get('x-served-by'), 'legacy');
      assert.equal(b.headers.get('x-served-by'), 'service');
    }
  });

  test('GET /api/orders?customerId= lists them identically (order, ties by id)', async () => {
    for (const query of ['customerId=3', 'customerId=3&status=cancelled', 'customerId=3&limit=3']) {
      const [a, b] = await Promise.all([fetch(`${targets.legacy.baseUrl}/api/orders?${query}`), fetch(`${targets.service.baseUrl}/api/orders?${query}`)]);
      const ta = await a.text();
      assert.equal(await b.text(), ta, query);
      assert.ok((JSON.parse(ta) as { orders: unknown[] }).orders.length > 0, query);
    }
  });
});
