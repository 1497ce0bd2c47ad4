/** Public surface of the demo's extracted orders service. */
export { createOrdersServiceApp, type OrdersServiceOptions } from './app.ts';
export type { DemoApp, DemoAppOptions, ServedBy } from './http.ts';
export { SERVED_BY_HEADER } from './http.ts';
export { migrateServiceSchema, seedServiceReference, STATE_BY_STATUS, type OrderState } from './schema.ts';
export { orderRecordToJson } from './store.ts';
export * from './contract.ts';
export { REFERENCE_CUSTOMERS, REFERENCE_PRODUCTS } from './reference-data.ts';
export { runDemoProcess } from './process-main.ts';
