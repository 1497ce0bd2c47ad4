/**
 * The orders HTTP API contract that BOTH the demo legacy monolith (devstack/demo/monolith) and the extracted
 * orders service serve byte-for-byte: request validation, the order JSON, status transitions and error bodies.
 * The gateway may send any request to either side, so for the same stored order both must answer the same JSON.
 *
 * Storage differs (legacy `orders` in cents and lower-case statuses; service `order_records` in decimal and
 * upper-case states); each side maps its row to `OrderJson` here-bound types, never the other way round.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { StranglerError } from '../../common/errors.ts';

/** Order statuses as the API (and the legacy database) spells them. */
export const ORDER_STATUSES = ['pending', 'paid', 'shipped', 'delivered', 'cancelled'] as const;
export type OrderStatus = (typeof ORDER_STATUSES)[number];

/** Allowed status changes; `delivered` and `cancelled` are final. Same-status PATCH is a no-op, not an error. */
export const STATUS_TRANSITIONS: Readonly<Record<OrderStatus, readonly OrderStatus[]>> = {
  pending: ['paid', 'cancelled'],
  paid: ['shipped', 'cancelled'],
  shipped: ['delivered'],
  delivered: [],
  cancelled: [],
};

/** The one currency the demo shop sells in; the column exists in both schemas for realism and sync. */
export const SHOP_CURRENCY = 'EUR';

export interface OrderItemJson {
  productId: number;
  sku: string;
  quantity: number;
  unitPriceCents: number;
}

/** The order as both systems answer it. Field order is fixed by `toOrderJson` so bodies compare byte-for-byte. */
export interface OrderJson {
  id: string;
  customerId: number;
  status: OrderStatus;
  currency: string;
  totalCents: number;
  items: OrderItemJson[];
  notes: string | null;
  createdAt: string;
  updatedAt: string;
}

/** Builds the canonical JSON (field order, ms-precision UTC timestamps, items in stored order). */
export function toOrderJson(order: OrderJson): OrderJson {
  return {
    id: order.id,
    customerId: order.customerId,
    status: order.status,
    currency: order.currency,
    totalCents: order.totalCents,
    items: order.items.map((i) => ({ productId: i.productId, sku: i.sku, quantity: i.quantity, unitPriceCents: i.unitPriceCents })),
    notes: order.notes,
    createdAt: order.createdAt,
    updatedAt: order.updatedAt,
  };
}

/** Lower-case canonical UUID text: the order key in both databases (text, compared with COLLATE "C"). */
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * A UUIDv7 (RFC 9562): 48-bit Unix ms timestamp, then random bits. Both systems mint ids independently during a
 * canary; 74 random bits make a collision negligible, and the time prefix keeps new rows at the end of the PK index.
 */
export function uuidv7(nowMs: number = Date.now(), random: Buffer = randomBytes(10)): string {
  const bytes = Buffer.alloc(16);
  bytes.writeUIntBE(nowMs, 0, 6);
  random.copy(bytes, 6, 0, 10);
  bytes[6] = 0x70 | ((bytes[6] ?? 0) & 0x0f);
  bytes[8] = 0x80 | ((bytes[8] ?? 0) & 0x3f);
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const positiveId = z.int().positive().max(Number.MAX_SAFE_INTEGER);

const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Free text stored in PostgreSQL: JSON allows U+0000, a text column does not, so without this check a NUL in "notes"
 * reached the INSERT and came back as 500 DEMO_INTERNAL_ERROR (retriable, and a service error that trips the
 * gateway's breaker and guard) instead of 400.
 */
const storedText = z.string().max(1000)
  .refine((text) => !text.includes('\u0000'), 'must not contain NUL characters (\\u0000)')
  // A lone surrogate (JSON "\ud800") has no UTF-8 form: the driver wrote U+FFFD instead, so the order stored, answered
  // and synced other text than the client sent, without an error.
  .refine((text) => !LONE_SURROGATE.test(text), 'must be valid Unicode (no unpaired surrogate such as \\ud800)');

export const createOrderBody = z.strictObject({
  /** Optional client-chosen key (idempotent retries, or ids minted by a caller); must be a lower-case UUID. */
  id: z.string().regex(UUID_RE, 'must be a lower-case UUID such as 0190f7a4-5b2c-7d3e-8f00-123456789abc').optional(),
  customerId: positiveId,
  items: z.array(z.strictObject({ productId: positiveId, quantity: z.int().min(1).max(100) })).min(1).max(50),
  notes: storedText.nullable().optional(),
});
export type CreateOrderBody = z.infer<typeof createOrderBody>;

export const patchOrderBody = z
  .strictObject({
    status: z.enum(ORDER_STATUSES).optional(),
    notes: storedText.nullable().optional(),
  })
  .refine((b) => b.status !== undefined || b.notes !== undefined, { message: 'give at least one of "status" or "notes"' });
export type PatchOrderBody = z.infer<typeof patchOrderBody>;

export const listOrdersQuery = z.object({
  customerId: z.string({ error: 'is required (e.g. ?customerId=1)' }).regex(/^[1-9][0-9]{0,15}$/, 'must be a positive integer').transform(Number),
  status: z.enum(ORDER_STATUSES).optional(),
  limit: z.string().regex(/^[0-9]{1,3}$/, 'must be an integer from 1 to 200').transform(Number).pipe(z.int().min(1).max(200)).optional(),
});
export type ListOrdersQuery = z.infer<typeof listOrdersQuery>;

export const DEFAULT_LIST_LIMIT = 50;

/** Parses with a zod schema or throws DEMO_VALIDATION_FAILED naming every offending field. */
export function parseOrThrow<S extends z.ZodType>(schema: S, value: unknown, where: string): z.infer<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const path = issue.path.length ? issue.path.join('.') : '(root)';
    return { path, message: issue.message };
  });
  const text = problems.map((p) => `${p.path}: ${p.message}`).join('; ');
  throw new StranglerError('DEMO_VALIDATION_FAILED', `invalid ${where}: ${text}`, { details: { problems } });
}

/** Validates the :id path parameter; an id that is not a UUID cannot exist, so it is a 404 like any unknown id. */
export function orderIdOrThrow(id: string | undefined): string {
  if (id === undefined || !UUID_RE.test(id)) throw notFound(id ?? '');
  return id;
}

export function notFound(id: string): StranglerError {
  return new StranglerError('DEMO_NOT_FOUND', `order ${JSON.stringify(id)} does not exist`);
}

/** Throws DEMO_CONFLICT when `from → to` is not an allowed transition. */
export function assertTransition(id: string, from: OrderStatus, to: OrderStatus): void {
  if (from === to) return;
  if (!STATUS_TRANSITIONS[from].includes(to)) {
    const allowed = STATUS_TRANSITIONS[from];
    throw new StranglerError('DEMO_CONFLICT', `order ${id} is ${from}; it cannot become ${to} (allowed: ${allowed.length ? allowed.join(', ') : 'none, it is final'})`, {
      details: { from, to, allowed: [...allowed] },
    });
  }
}

/** Exact decimal text ("12.30", "-0.05", "7") → integer cents, without floating point. */
export function decimalToCents(text: string): number {
  const m = /^(-?)([0-9]+)(?:\.([0-9]{1,2}))?$/.exec(text.trim());
  if (!m) throw new Error(`not a 2-decimal amount: ${JSON.stringify(text)}`);
  const cents = Number(m[2]) * 100 + Number((m[3] ?? '').padEnd(2, '0'));
  return m[1] === '-' ? -cents : cents;
}

/** Integer cents → exact decimal text with 2 places ("1234" → "12.34"). */
export function centsToDecimal(cents: number): string {
  const sign = cents < 0 ? '-' : '';
  const abs = Math.abs(cents);
  return `${sign}${Math.trunc(abs / 100)}.${String(abs % 100).padStart(2, '0')}`;
}

/** Reference data an order needs at creation: who buys, and each product's SKU and current price. */
export interface OrderReferenceData {
  customerExists(customerId: number): Promise<boolean>;
  /** Products by id; missing ids are absent from the map. */
  products(ids: readonly number[]): Promise<Map<number, { sku: string; priceCents: number }>>;
}

/** Resolves the body's items against the catalogue; unknown customer or product → DEMO_VALIDATION_FAILED. */
export async function priceOrder(body: CreateOrderBody, refs: OrderReferenceData): Promise<{ items: OrderItemJson[]; totalCents: number }> {
  if (!(await refs.customerExists(body.customerId))) {
    throw new StranglerError('DEMO_VALIDATION_FAILED', `invalid request body: customerId: customer ${body.customerId} does not exist`, {
      details: { problems: [{ path: 'customerId', message: `customer ${body.customerId} does not exist` }] },
    });
  }
  const catalogue = await refs.products([...new Set(body.items.map((i) => i.productId))]);
  const missing = body.items.map((item, index) => ({ item, index })).filter(({ item }) => !catalogue.has(item.productId));
  if (missing.length) {
    const problems = missing.map(({ item, index }) => ({ path: `items.${index}.productId`, message: `product ${item.productId} does not exist` }));
    throw new StranglerError('DEMO_VALIDATION_FAILED', `invalid request body: ${problems.map((p) => `${p.path}: ${p.message}`).join('; ')}`, { details: { problems } });
  }
  const items = body.items.map((i) => {
    const product = catalogue.get(i.productId)!;
    return { productId: i.productId, sku: product.sku, quantity: i.quantity, unitPriceCents: product.priceCents };
  });
  return { items, totalCents: items.reduce((sum, i) => sum + i.quantity * i.unitPriceCents, 0) };
}

/** Items stored as JSON (jsonb) in both databases → validated API items. Throws on a corrupt row. */
export function itemsFromStored(value: unknown, orderId: string): OrderItemJson[] {
  const parsed = storedItems.safeParse(value);
  if (!parsed.success) throw new Error(`order ${orderId} has malformed stored items: ${parsed.error.message}`);
  return parsed.data;
}
const storedItems = z.array(z.object({ productId: z.number(), sku: z.string(), quantity: z.number(), unitPriceCents: z.number() }));
