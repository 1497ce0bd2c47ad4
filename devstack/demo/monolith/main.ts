/** Process entry of the demo legacy monolith; see services/example-orders/process-main.ts for the stdout protocol. */
import { runDemoProcess } from '../../../services/example-orders/process-main.ts';
import { DEFAULT_SEED_ORDERS, createMonolithApp } from './app.ts';

await runDemoProcess({
  name: 'devstack/demo/monolith/main.ts',
  extraHelp: `  --seed-orders N       historical orders written on a fresh database (default ${DEFAULT_SEED_ORDERS})\n`,
  create: (options) => createMonolithApp(options),
}, process.argv.slice(2));
