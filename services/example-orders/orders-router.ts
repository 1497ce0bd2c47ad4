/**
 * The orders endpoints, written once against `OrdersStore`. The monolith mounts it over its `orders` table and the
 * extracted service over `order_records`; only the stores differ, so the contract tests exercise each store's
 * mapping between its columns and `OrderJson`.
 */
import { Router, type Request, type Response } from 'express';
import { StranglerError } from '../../common/errors.ts';
import type { Logger } from '../../common/logger.ts';
import {
  DEFAULT_LIST_LIMIT, SHOP_CURRENCY, assertTransition, createOrderBody, listOrdersQuery, notFound, orderIdOrThrow, parseOrThrow, patchOrderBody, priceOrder, uuidv7,
  type CreateOrderBody, type OrderJson, type OrderReferenceData, type OrderStatus,
} from './contract.ts';
import { jsonBody } from './http.ts';
import { ORDERS_LOG } from './log-events.ts';

/** An order as written: the API shape before the database stamps its times. */
export type NewOrder = Omit<OrderJson, 'createdAt' | 'updatedAt'>;

/** Storage of orders in one system's own schema. Every method answers API-shaped `OrderJson`. */
export interface OrdersStore {
  get(id: string): Promise<OrderJson | undefined>;
  list(query: { customerId: number; status?: OrderStatus; limit: number }): Promise<OrderJson[]>;
  /** Inserts; resolves undefined when the id already exists (the caller answers 409). */
  insert(order: NewOrder): Promise<OrderJson | undefined>;
  /**
   * Changes status and/or notes under a row lock. `check` runs with the locked current row and may throw
   * (invalid transition). Resolves undefined when the id does not exist.
   */
  update(id: string, change: { status?: OrderStatus; notes?: string | null }, check: (current: OrderJson) => void): Promise<OrderJson | undefined>;
  /** Resolves false when the id does not exist. */
  delete(id: string): Promise<boolean>;
}

/** Whether `order` is what `body` asks for: the same customer, lines (product and quantity, in order) and notes. */
function sameOrderRequest(order: OrderJson, body: CreateOrderBody): boolean {
  return order.customerId === body.customerId && order.notes === (body.notes ?? null) && order.items.length === body.items.length
    && order.items.every((item, i) => item.productId === body.items[i]!.productId && item.quantity === body.items[i]!.quantity);
}

export function ordersRouter(store: OrdersStore, refs: OrderReferenceData, log: Logger, clock: () => number = Date.now): Router {
  const router = Router();

  router.get('/api/orders', async (req: Request, res: Response) => {
    const query = parseOrThrow(listOrdersQuery, req.query, 'query');
    const orders = await store.list({ customerId: query.customerId, limit: query.limit ?? DEFAULT_LIST_LIMIT, ...(query.status ? { status: query.status } : {}) });
    res.json({ orders });
  });

  router.get('/api/orders/:id', async (req: Request<{ id: string }>, res: Response) => {
    const id = orderIdOrThrow(req.params.id);
    const order = await store.get(id);
    if (!order) throw notFound(id);
    res.json(order);
  });

  router.post('/api/orders', async (req: Request, res: Response) => {
    const body = parseOrThrow(createOrderBody, jsonBody(req), 'request body');
    const { items, totalCents } = await priceOrder(body, refs);
    const id = body.id ?? uuidv7(clock());
    const order = await store.insert({ id, customerId: body.customerId, status: 'pending', currency: SHOP_CURRENCY, totalCents, items, notes: body.notes ?? null });
    if (!order) {
      // A client (or the gateway's fallback on a route declared idempotent) retrying a POST whose answer it lost:
      // the order it asked for exists, so answer it (200) rather than 409, which told the client to omit "id" and
      // so to place the order twice. Another order under this id is still a conflict.
      const existing = await store.get(id);
      if (existing && sameOrderRequest(existing, body)) {
        res.status(200).location(`/api/orders/${id}`).json(existing);
        return;
      }
      throw new StranglerError('DEMO_CONFLICT', `order ${id} already exists with other content; a retry must repeat the same customerId, items and notes, and a new order needs a new id`, { details: { id } });
    }
    log.info({ orderId: id, customerId: body.customerId, totalCents }, ORDERS_LOG.orderCreated);
    res.status(201).location(`/api/orders/${id}`).json(order);
  });

  router.patch('/api/orders/:id', async (req: Request<{ id: string }>, res: Response) => {
    const id = orderIdOrThrow(req.params.id);
    const body = parseOrThrow(patchOrderBody, jsonBody(req), 'request body');
    const change = { ...(body.status !== undefined ? { status: body.status } : {}), ...(body.notes !== undefined ? { notes: body.notes } : {}) };
    const order = await store.update(id, change, (current) => {
      if (body.status !== undefined) assertTransition(id, current.status, body.status);
    });
    if (!order) throw notFound(id);
    log.info({ orderId: id, ...change }, ORDERS_LOG.orderUpdated);
    res.json(order);
  });

  router.delete('/api/orders/:id', async (req: Request<{ id: string }>, res: Response) => {
    const id = orderIdOrThrow(req.params.id);
    if (!(await store.delete(id))) throw notFound(id);
    log.info({ orderId: id }, ORDERS_LOG.orderDeleted);
    res.status(204).end();
  });

  return router;
}
