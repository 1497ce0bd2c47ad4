/** `OrdersStore` over the monolith's `orders` table, and the reference data (customers, products) it owns. */
import type pg from 'pg';
import { itemsFromStored, toOrderJson, type OrderJson, type OrderReferenceData, type OrderStatus } from '../../../services/example-orders/contract.ts';
import type { NewOrder, OrdersStore } from '../../../services/example-orders/orders-router.ts';
import { inTransaction } from '../../../common/pg.ts';

interface OrderRow {
  id: string;
  customer_id: string;
  status: OrderStatus;
  total_cents: number;
  currency: string;
  items: unknown;
  notes: string | null;
  created_at: Date;
  updated_at: Date;
}

const COLUMNS = 'id, customer_id, status, total_cents, currency, items, notes, created_at, updated_at';

/** One `orders` row → the API JSON. */
export function legacyOrderToJson(row: OrderRow): OrderJson {
  return toOrderJson({
    id: row.id,
    customerId: Number(row.customer_id),
    status: row.status,
    currency: row.currency,
    totalCents: row.total_cents,
    items: itemsFromStored(row.items, row.id),
    notes: row.notes,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  });
}

export function legacyOrdersStore(pool: pg.Pool): OrdersStore {
  return {
    async get(id) {
      const { rows } = await pool.query<OrderRow>(`SELECT ${COLUMNS} FROM orders WHERE id = $1`, [id]);
      return rows[0] ? legacyOrderToJson(rows[0]) : undefined;
    },
    async list({ customerId, status, limit }) {
      const { rows } = await pool.query<OrderRow>(
        `SELECT ${COLUMNS} FROM orders
         WHERE customer_id = $1 AND ($2::text IS NULL OR status = $2)
         ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT $3`,
        [customerId, status ?? null, limit],
      );
      return rows.map(legacyOrderToJson);
    },
    async insert(order: NewOrder) {
      const { rows } = await pool.query<OrderRow>(
        `INSERT INTO orders (id, customer_id, status, total_cents, currency, items, notes)
         VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
         ON CONFLICT (id) DO NOTHING RETURNING ${COLUMNS}`,
        [order.id, order.customerId, order.status, order.totalCents, order.currency, JSON.stringify(order.items), order.notes],
      );
      return rows[0] ? legacyOrderToJson(rows[0]) : undefined;
    },
    async update(id, change, check) {
      return inTransaction(pool, async (client) => {
        const current = await client.query<OrderRow>(`SELECT ${COLUMNS} FROM orders WHERE id = $1 FOR UPDATE`, [id]);
        const row = current.rows[0];
        if (!row) return undefined;
        const before = legacyOrderToJson(row);
        check(before);
        const status = change.status ?? before.status;
        const notes = change.notes === undefined ? before.notes : change.notes;
        if (status === before.status && notes === before.notes) return before;
        const updated = await client.query<OrderRow>(
          `UPDATE orders SET status = $2, notes = $3, updated_at = now() WHERE id = $1 RETURNING ${COLUMNS}`,
          [id, status, notes],
        );
        return legacyOrderToJson(updated.rows[0]!);
      });
    },
    async delete(id) {
      const { rowCount } = await pool.query('DELETE FROM orders WHERE id = $1', [id]);
      return (rowCount ?? 0) > 0;
    },
  };
}

export function legacyReferenceData(pool: pg.Pool): OrderReferenceData {
  return {
    async customerExists(customerId) {
      const { rowCount } = await pool.query('SELECT 1 FROM customers WHERE id = $1', [customerId]);
      return (rowCount ?? 0) > 0;
    },
    async products(ids) {
      const { rows } = await pool.query<{ id: string; sku: string; price_cents: number }>(
        'SELECT id, sku, price_cents FROM products WHERE id = ANY($1::bigint[])', [ids],
      );
      return new Map(rows.map((r) => [Number(r.id), { sku: r.sku, priceCents: r.price_cents }]));
    },
  };
}
