/** The extracted orders service: the orders API over its own database (`order_records`). */
import { silentLogger } from '../../common/logger.ts';
import { createDemoRuntime, finishApp, type DemoApp, type DemoAppOptions } from './http.ts';
import { ORDERS_LOG } from './log-events.ts';
import { ordersRouter } from './orders-router.ts';
import { migrateServiceSchema, seedServiceReference } from './schema.ts';
import { serviceOrdersStore, serviceReferenceData } from './store.ts';

export type OrdersServiceOptions = DemoAppOptions;

/** Builds the service (not yet listening). Call `migrate()` (and `seed()` for the reference copy) before serving. */
export function createOrdersServiceApp(options: OrdersServiceOptions): DemoApp {
  const log = (options.log ?? silentLogger).child({ servedBy: 'service' });
  const { app, pool, server, close } = createDemoRuntime('service', options, log);
  app.use(ordersRouter(serviceOrdersStore(pool), serviceReferenceData(pool), log, options.clock));
  finishApp(app, log);
  return {
    servedBy: 'service',
    app,
    pool,
    async migrate() {
      await migrateServiceSchema(pool);
      log.info(ORDERS_LOG.migrated);
    },
    async seed() {
      const counts = await seedServiceReference(pool);
      log.info(counts, ORDERS_LOG.seeded);
      return counts;
    },
    listen: (port, host) => server.listen(port, host),
    close,
  };
}
