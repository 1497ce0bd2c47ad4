/** Process entry of the extracted orders service; see process-main.ts for options and the stdout protocol. */
import { createOrdersServiceApp } from './app.ts';
import { runDemoProcess } from './process-main.ts';

await runDemoProcess({
  name: 'services/example-orders/main.ts',
  extraHelp: '\nSeeding writes only the read-only reference copy (buyers, catalog_items); orders arrive through the API and the data sync.\n',
  create: (options) => createOrdersServiceApp(options),
}, process.argv.slice(2));
