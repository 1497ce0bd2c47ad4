/** `OrdersStore` over the service's `order_records` table, plus reference data from `buyers` / `catalog_items`. */
import type pg from 'pg';
import { centsToDecimal, decimalToCents, itemsFromStored, toOrderJson, type OrderJson, type OrderReferenceData, type OrderStatus } from './contract.ts';
import type { NewOrder, OrdersStore } from './orders-router.ts';
import { STATE_BY_STATUS, type OrderState } from './schema.ts';
import { inTransaction } from '../../common/pg.ts';

const STATUS_BY_STATE = Object.fromEntries(Object.entries(STATE_BY_STATUS).map(([status, state]) => [state, status])) as Record<OrderState, OrderStatus>;

interface OrderRecordRow {
  order_id: string;
  buyer_id: string;
  state: OrderState;
  amount: string;
  currency_code: string;
  line_items: unknown;
  note: string | null;
  placed_at: Date;
  modified_at: Date;
}

const COLUMNS = 'order_id, buyer_id, state, amount, currency_code, line_items, note, placed_at, modified_at';

/** One `order_records` row → the API JSON (decimal → cents, upper-case state → API status). */
export function orderRecordToJson(row: OrderRecordRow): OrderJson {
  const status = STATUS_BY_STATE[row.state];
  if (!status) throw new Error(`order_records ${row.order_id} has unknown state ${JSON.stringify(row.state)}`);
  return toOrderJson({
    id: row.order_id,
    customerId: Number(row.buyer_id),
    status,
    currency: row.currency_code,
    totalCents: decimalToCents(row.amount),
    items: itemsFromStored(row.line_items, row.order_id),
    notes: row.note,
    createdAt: row.placed_at.toISOString(),
    updatedAt: row.modified_at.toISOString(),
  });
}

export function serviceOrdersStore(pool: pg.Pool): OrdersStore {
  return {
    async get(id) {
      const { rows } = await pool.query<OrderRecordRow>(`SELECT ${COLUMNS} FROM order_records WHERE order_id = $1`, [id]);
      return rows[0] ? orderRecordToJson(rows[0]) : undefined;
    },
    async list({ customerId, status, limit }) {
      const { rows } = await pool.query<OrderRecordRow>(
        `SELECT ${COLUMNS} FROM order_records
         WHERE buyer_id = $1 AND ($2::text IS NULL OR state = $2)
         ORDER BY placed_at DESC, order_id COLLATE "C" DESC LIMIT $3`,
        [customerId, status ? STATE_BY_STATUS[status] : null, limit],
      );
      return rows.map(orderRecordToJson);
    },
    async insert(order: NewOrder) {
      const { rows } = await pool.query<OrderRecordRow>(
        `INSERT INTO order_records (order_id, buyer_id, state, amount, currency_code, line_items, note)
         VALUES ($1, $2, $3, $4::numeric, $5, $6::jsonb, $7)
         ON CONFLICT (order_id) DO NOTHING RETURNING ${COLUMNS}`,
        [order.id, order.customerId, STATE_BY_STATUS[order.status], centsToDecimal(order.totalCents), order.currency, JSON.stringify(order.items), order.notes],
      );
      return rows[0] ? orderRecordToJson(rows[0]) : undefined;
    },
    async update(id, change, check) {
      return inTransaction(pool, async (client) => {
        const current = await client.query<OrderRecordRow>(`SELECT ${COLUMNS} FROM order_records WHERE order_id = $1 FOR UPDATE`, [id]);
        const row = current.rows[0];
        if (!row) return undefined;
        const before = orderRecordToJson(row);
        check(before);
        const status = change.status ?? before.status;
        const notes = change.notes === undefined ? before.notes : change.notes;
        if (status === before.status && notes === before.notes) return before;
        const updated = await client.query<OrderRecordRow>(
          `UPDATE order_records SET state = $2, note = $3, modified_at = now() WHERE order_id = $1 RETURNING ${COLUMNS}`,
          [id, STATE_BY_STATUS[status], notes],
        );
        return orderRecordToJson(updated.rows[0]!);
      });
    },
    async delete(id) {
      const { rowCount } = await pool.query('DELETE FROM order_records WHERE order_id = $1', [id]);
      return (rowCount ?? 0) > 0;
    },
  };
}

/** Reference data from the read-only copy. */
export function serviceReferenceData(pool: pg.Pool): OrderReferenceData {
  return {
    async customerExists(customerId) {
      const { rowCount } = await pool.query('SELECT 1 FROM buyers WHERE buyer_id = $1', [customerId]);
      return (rowCount ?? 0) > 0;
    },
    async products(ids) {
      const { rows } = await pool.query<{ item_id: string; sku: string; unit_price: string }>(
        'SELECT item_id, sku, unit_price FROM catalog_items WHERE item_id = ANY($1::bigint[])', [ids],
      );
      return new Map(rows.map((r) => [Number(r.item_id), { sku: r.sku, priceCents: decimalToCents(r.unit_price) }]));
    },
  };
}
