/**
 * The extracted service's own schema. Deliberately shaped differently from the monolith's `orders` table so the
 * data sync has real mapping work (see devstack/demo/README.md for the column-by-column mapping):
 *   orders.id → order_id, customer_id → buyer_id, status 'cancelled' → state 'CANCELED' (upper-case enum),
 *   total_cents integer → amount numeric(12,2), currency char(3) → currency_code, items → line_items,
 *   notes → note, created_at → placed_at, updated_at → modified_at.
 * `buyers` and `catalog_items` are a read-only copy of the monolith's reference data (see reference-data.ts).
 */
import type pg from 'pg';
import { centsToDecimal } from './contract.ts';
import { REFERENCE_CUSTOMERS, REFERENCE_PRODUCTS } from './reference-data.ts';
import { migrateOnce } from '../../common/pg.ts';

/** Service state spelling ↔ API/legacy status spelling: a 1:1 map the sync mapping declares too. */
export const STATE_BY_STATUS = { pending: 'PENDING', paid: 'PAID', shipped: 'SHIPPED', delivered: 'DELIVERED', cancelled: 'CANCELED' } as const;
export type OrderState = (typeof STATE_BY_STATUS)[keyof typeof STATE_BY_STATUS];

const SCHEMA_LOCK = 0x5e41_0002; // advisory lock key: concurrent starts migrate one at a time

const DDL = `
CREATE TABLE IF NOT EXISTS buyers (
  buyer_id     bigint PRIMARY KEY,
  email        text NOT NULL,
  display_name text NOT NULL
);
CREATE TABLE IF NOT EXISTS catalog_items (
  item_id    bigint PRIMARY KEY,
  sku        text NOT NULL UNIQUE,
  title      text NOT NULL,
  unit_price numeric(12,2) NOT NULL CHECK (unit_price >= 0)
);
-- No foreign key to buyers: rows arrive from the data sync too, and the reference copy may lag behind legacy.
CREATE TABLE IF NOT EXISTS order_records (
  order_id      text PRIMARY KEY CHECK (order_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'),
  buyer_id      bigint NOT NULL,
  state         text NOT NULL CHECK (state IN ('PENDING', 'PAID', 'SHIPPED', 'DELIVERED', 'CANCELED')),
  amount        numeric(12,2) NOT NULL CHECK (amount >= 0),
  currency_code text NOT NULL CHECK (currency_code ~ '^[A-Z]{3}$'),
  line_items    jsonb NOT NULL,
  note          text,
  placed_at     timestamptz NOT NULL DEFAULT now(),
  modified_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS order_records_buyer_placed_idx ON order_records (buyer_id, placed_at DESC);
`;

/** Creates the schema if missing; safe to run on every start and from several processes at once. */
export async function migrateServiceSchema(pool: pg.Pool): Promise<void> {
  await migrateOnce(pool, SCHEMA_LOCK, DDL);
}

/**
 * Fills the read-only reference copy (buyers, catalog) from the shared demo list when it is empty (first start), like
 * the monolith's seed: a rerun (every start) never reverts what a one-way customers/products mapping replicated
 * since. An upsert here undid each price change and re-added each deleted product on every restart, so new orders
 * were priced from the stale list. Concurrent first starts: ON CONFLICT keeps the second a no-op.
 */
export async function seedServiceReference(pool: pg.Pool): Promise<{ buyers: number; catalogItems: number }> {
  await pool.query(
    `INSERT INTO buyers (buyer_id, email, display_name)
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]) WHERE NOT EXISTS (SELECT 1 FROM buyers)
     ON CONFLICT DO NOTHING`,
    [REFERENCE_CUSTOMERS.map((c) => c.id), REFERENCE_CUSTOMERS.map((c) => c.email), REFERENCE_CUSTOMERS.map((c) => c.fullName)],
  );
  await pool.query(
    `INSERT INTO catalog_items (item_id, sku, title, unit_price)
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::numeric[]) WHERE NOT EXISTS (SELECT 1 FROM catalog_items)
     ON CONFLICT DO NOTHING`,
    [REFERENCE_PRODUCTS.map((p) => p.id), REFERENCE_PRODUCTS.map((p) => p.sku), REFERENCE_PRODUCTS.map((p) => p.name), REFERENCE_PRODUCTS.map((p) => centsToDecimal(p.priceCents))],
  );
  return { buyers: REFERENCE_CUSTOMERS.length, catalogItems: REFERENCE_PRODUCTS.length };
}
