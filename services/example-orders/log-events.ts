/** Log event names of the demo orders apps (the extracted service and, through the shared plumbing, the monolith). */
export const ORDERS_LOG = {
  migrated: 'orders-demo: schema migrated',
  seeded: 'orders-demo: seed data written',
  seedSkipped: 'orders-demo: seed data already present',
  listening: 'orders-demo: listening',
  request: 'orders-demo: request',
  requestFailed: 'orders-demo: request failed',
  orderCreated: 'orders-demo: order created',
  orderUpdated: 'orders-demo: order updated',
  orderDeleted: 'orders-demo: order deleted',
  poolError: 'orders-demo: idle database connection failed',
  healthFailed: 'orders-demo: /healthz could not reach the database',
  closing: 'orders-demo: closing',
  closed: 'orders-demo: closed',
  signal: 'orders-demo: signal received; shutting down',
} as const;

/** Field names used in these log lines. */
export const ORDERS_LOG_FIELDS = {
  servedBy: 'servedBy',
  orderId: 'orderId',
  reqId: 'reqId',
} as const;
