/**
 * The demo legacy monolith: customers, products and orders in one database. The orders endpoints are the contract
 * the extracted service (services/example-orders) takes over route by route; customers and products stay here.
 */
import type { Request, Response } from 'express';
import { StranglerError } from '../../../common/errors.ts';
import { silentLogger } from '../../../common/logger.ts';
import { createDemoRuntime, finishApp, type DemoApp, type DemoAppOptions } from '../../../services/example-orders/http.ts';
import { ORDERS_LOG } from '../../../services/example-orders/log-events.ts';
import { ordersRouter } from '../../../services/example-orders/orders-router.ts';
import { migrateMonolithSchema, seedMonolith } from './schema.ts';
import { legacyOrdersStore, legacyReferenceData } from './store.ts';

export interface MonolithOptions extends DemoAppOptions {
  /** Historical orders written by `seed()` on a fresh database (default 200). */
  seedOrders?: number;
}

export const DEFAULT_SEED_ORDERS = 200;

/** Builds the monolith (not yet listening). Call `migrate()` and `seed()` before serving. */
export function createMonolithApp(options: MonolithOptions): DemoApp {
  const log = (options.log ?? silentLogger).child({ servedBy: 'legacy' });
  const { app, pool, server, close } = createDemoRuntime('legacy', options, log);

  app.get('/api/customers/:id', async (req: Request<{ id: string }>, res: Response) => {
    const id = req.params.id;
    const { rows } = /^[1-9][0-9]{0,15}$/.test(id)
      ? await pool.query<{ id: string; email: string; full_name: string; created_at: Date }>('SELECT id, email, full_name, created_at FROM customers WHERE id = $1', [id])
      : { rows: [] };
    const row = rows[0];
    if (!row) throw new StranglerError('DEMO_NOT_FOUND', `customer ${JSON.stringify(id)} does not exist`);
    res.json({ id: Number(row.id), email: row.email, fullName: row.full_name, createdAt: row.created_at.toISOString() });
  });

  app.get('/api/products', async (_req: Request, res: Response) => {
    const { rows } = await pool.query<{ id: string; sku: string; name: string; price_cents: number; stock: number }>(
      'SELECT id, sku, name, price_cents, stock FROM products ORDER BY id',
    );
    res.json({ products: rows.map((r) => ({ id: Number(r.id), sku: r.sku, name: r.name, priceCents: r.price_cents, stock: r.stock })) });
  });

  app.use(ordersRouter(legacyOrdersStore(pool), legacyReferenceData(pool), log, options.clock));
  finishApp(app, log);

  return {
    servedBy: 'legacy',
    app,
    pool,
    async migrate() {
      await migrateMonolithSchema(pool);
      log.info(ORDERS_LOG.migrated);
    },
    async seed() {
      const result = await seedMonolith(pool, options.seedOrders ?? DEFAULT_SEED_ORDERS);
      log.info(result, result.seeded ? ORDERS_LOG.seeded : ORDERS_LOG.seedSkipped);
      return result;
    },
    listen: (port, host) => server.listen(port, host),
    close,
  };
}
