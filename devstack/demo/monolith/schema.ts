/**
 * The demo legacy monolith's schema: a shop with customers, products and orders. Orders live in ONE table so the
 * data sync replicates a single table (line items are a jsonb array on the order, as many monoliths keep them).
 *
 * Order ids are lower-case UUIDv7 text minted by whichever system accepts the write (or supplied by the client),
 * so the monolith and the extracted service can both take writes during a canary without colliding; bigserial ids
 * would need disjoint sequences on both sides and a mapping for every future system. Text (not uuid) because the
 * sync compares primary keys in byte order (COLLATE "C") on both sides.
 */
import type pg from 'pg';
import { inTransaction, migrateOnce } from '../../../common/pg.ts';
import { seededRandom } from '../../../common/random.ts';
import { REFERENCE_CUSTOMERS, REFERENCE_PRODUCTS } from '../../../services/example-orders/reference-data.ts';
import { ORDER_STATUSES, SHOP_CURRENCY, uuidv7, type OrderItemJson, type OrderStatus } from '../../../services/example-orders/contract.ts';

const SCHEMA_LOCK = 0x5e41_0001; // advisory lock key: concurrent starts migrate and seed one at a time

const DDL = `
CREATE TABLE IF NOT EXISTS customers (
  id         bigserial PRIMARY KEY,
  email      text NOT NULL UNIQUE,
  full_name  text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS products (
  id          bigserial PRIMARY KEY,
  sku         text NOT NULL UNIQUE,
  name        text NOT NULL,
  price_cents integer NOT NULL CHECK (price_cents >= 0),
  stock       integer NOT NULL DEFAULT 0 CHECK (stock >= 0)
);
CREATE TABLE IF NOT EXISTS orders (
  id          text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'),
  customer_id bigint NOT NULL REFERENCES customers (id),
  status      text NOT NULL CHECK (status IN (${ORDER_STATUSES.map((s) => `'${s}'`).join(', ')})),
  total_cents integer NOT NULL CHECK (total_cents >= 0),
  currency    char(3) NOT NULL DEFAULT '${SHOP_CURRENCY}',
  items       jsonb NOT NULL DEFAULT '[]',
  notes       text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS orders_customer_created_idx ON orders (customer_id, created_at DESC);
`;

/** Creates the schema if missing; safe on every start and from several processes at once. */
export async function migrateMonolithSchema(pool: pg.Pool): Promise<void> {
  await migrateOnce(pool, SCHEMA_LOCK, DDL);
}


export interface SeedOrder {
  id: string;
  customerId: number;
  status: OrderStatus;
  totalCents: number;
  items: OrderItemJson[];
  notes: string | null;
  createdAt: Date;
  updatedAt: Date;
}

/** `count` plausible historical orders over the 30 days before `nowMs`; older orders are further along. */
export function generateSeedOrders(count: number, nowMs: number, seed = 42): SeedOrder[] {
  const rand = seededRandom(seed);
  const pick = (n: number) => Math.floor(rand() * n);
  const orders: SeedOrder[] = [];
  for (let i = 0; i < count; i++) {
    const ageMs = Math.floor(rand() * 30 * 24 * 3600 * 1000);
    const createdMs = nowMs - ageMs;
    const customer = REFERENCE_CUSTOMERS[pick(REFERENCE_CUSTOMERS.length)]!;
    const lineCount = 1 + pick(3);
    const products = [...REFERENCE_PRODUCTS].sort(() => rand() - 0.5).slice(0, lineCount);
    const items = products.map((p) => ({ productId: p.id, sku: p.sku, quantity: 1 + pick(3), unitPriceCents: p.priceCents }));
    const ageDays = ageMs / 86_400_000;
    const roll = rand();
    const status: OrderStatus = roll < 0.08 ? 'cancelled'
      : ageDays > 7 ? 'delivered'
      : ageDays > 3 ? (roll < 0.5 ? 'shipped' : 'delivered')
      : ageDays > 1 ? (roll < 0.5 ? 'paid' : 'shipped')
      : roll < 0.6 ? 'pending' : 'paid';
    const updatedMs = status === 'pending' ? createdMs : Math.min(nowMs, createdMs + Math.floor(rand() * Math.min(ageMs, 5 * 86_400_000)));
    const random = Buffer.from(Array.from({ length: 10 }, () => pick(256)));
    orders.push({
      id: uuidv7(createdMs, random),
      customerId: customer.id,
      status,
      totalCents: items.reduce((s, it) => s + it.quantity * it.unitPriceCents, 0),
      items,
      notes: rand() < 0.15 ? ['Leave at the door', 'Gift wrap, please', 'Call before delivery'][pick(3)]! : null,
      createdAt: new Date(createdMs),
      updatedAt: new Date(updatedMs),
    });
  }
  return orders;
}

/**
 * First start only (no customers yet): customers, products and `orders` historical orders. Later starts change
 * nothing, so a restarted monolith keeps what the demo wrote.
 */
export async function seedMonolith(pool: pg.Pool, orders: number, nowMs = Date.now()): Promise<{ seeded: boolean; customers: number; products: number; orders: number }> {
  return inTransaction(pool, async (client) => {
    await client.query('SELECT pg_advisory_xact_lock($1)', [SCHEMA_LOCK]);
    const existing = await client.query('SELECT 1 FROM customers LIMIT 1');
    if ((existing.rowCount ?? 0) > 0) return { seeded: false, customers: 0, products: 0, orders: 0 };
    await client.query(
      `INSERT INTO customers (id, email, full_name, created_at)
       SELECT id, email, full_name, now() - interval '400 days' + id * interval '9 days'
       FROM unnest($1::bigint[], $2::text[], $3::text[]) AS t(id, email, full_name)`,
      [REFERENCE_CUSTOMERS.map((c) => c.id), REFERENCE_CUSTOMERS.map((c) => c.email), REFERENCE_CUSTOMERS.map((c) => c.fullName)],
    );
    await client.query(
      `INSERT INTO products (id, sku, name, price_cents, stock)
       SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::int[])`,
      [REFERENCE_PRODUCTS.map((p) => p.id), REFERENCE_PRODUCTS.map((p) => p.sku), REFERENCE_PRODUCTS.map((p) => p.name),
        REFERENCE_PRODUCTS.map((p) => p.priceCents), REFERENCE_PRODUCTS.map((p) => p.stock)],
    );
    // Explicit ids above: move the sequences past them so later inserts do not collide.
    await client.query(`SELECT setval(pg_get_serial_sequence('customers', 'id'), (SELECT max(id) FROM customers))`);
    await client.query(`SELECT setval(pg_get_serial_sequence('products', 'id'), (SELECT max(id) FROM products))`);
    const rows = generateSeedOrders(orders, nowMs);
    if (rows.length) {
      await client.query(
        `INSERT INTO orders (id, customer_id, status, total_cents, currency, items, notes, created_at, updated_at)
         SELECT id, customer_id, status, total_cents, $5, items, notes, created_at, updated_at
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[], $6::jsonb[], $7::text[], $8::timestamptz[], $9::timestamptz[])
           AS t(id, customer_id, status, total_cents, items, notes, created_at, updated_at)`,
        [rows.map((o) => o.id), rows.map((o) => o.customerId), rows.map((o) => o.status), rows.map((o) => o.totalCents), SHOP_CURRENCY,
          rows.map((o) => JSON.stringify(o.items)), rows.map((o) => o.notes), rows.map((o) => o.createdAt), rows.map((o) => o.updatedAt)],
      );
    }
    return { seeded: true, customers: REFERENCE_CUSTOMERS.length, products: REFERENCE_PRODUCTS.length, orders: rows.length };
  });
}
