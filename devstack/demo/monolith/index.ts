/** Public surface of the demo legacy monolith. */
export { createMonolithApp, DEFAULT_SEED_ORDERS, type MonolithOptions } from './app.ts';
export { migrateMonolithSchema, seedMonolith, generateSeedOrders } from './schema.ts';
export { legacyOrderToJson } from './store.ts';
export { spawnDemoApp, DEMO_APP_SCRIPTS, type DemoAppKind, type DemoProcess, type SpawnDemoOptions } from './spawn.ts';
