/**
 * Both demo apps as child processes (through spawnDemoApp, the form `npm start` and the end-to-end tests use): the
 * {"port":N} line on stdout, seeding once on first start, SIGTERM → graceful exit 0, and a kill -9 followed by a
 * restart on the same database losing nothing that was acknowledged.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { startPostgres, type RunningPostgres } from '../../../devstack/postgres.ts';
import { spawnDemoApp, type DemoProcess } from '../../../devstack/demo/monolith/index.ts';
import { processAlive } from '../../../common/process.ts';

let dataDir: string;
let postgres: RunningPostgres;
const started = new Set<DemoProcess>();

async function start(kind: 'legacy' | 'service', database: string): Promise<DemoProcess> {
  const app = await spawnDemoApp(kind, { databaseUrl: postgres.url(database), logLevel: 'warn' });
  started.add(app);
  return app;
}

async function allOrderIds(base: string): Promise<string[]> {
  const ids: string[] = [];
  for (let customerId = 1; customerId <= 8; customerId++) {
    const res = await fetch(`${base}/api/orders?customerId=${customerId}&limit=200`);
    assert.equal(res.status, 200);
    ids.push(...((await res.json()) as { orders: { id: string }[] }).orders.map((o) => o.id));
  }
  return ids.sort();
}

before(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'strangler-demo-proc-'));
  postgres = await startPostgres({ dataDir, databases: ['legacy_shop', 'orders_service'] });
});

after(async () => {
  for (const app of started) await app.kill();
  await postgres?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe('demo monolith process', () => {
  let seededIds: string[] = [];

  test('first start migrates, seeds 200 orders over 8 customers and 12 products, prints its port', async () => {
    const app = await start('legacy', 'legacy_shop');
    assert.ok(app.port > 0);
    const health = await fetch(`${app.url}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(health.headers.get('x-served-by'), 'legacy');
    seededIds = await allOrderIds(app.url);
    assert.equal(seededIds.length, 200);
    assert.equal(new Set(seededIds).size, 200);
    const products = (await (await fetch(`${app.url}/api/products`)).json()) as { products: { sku: string }[] };
    assert.equal(products.products.length, 12);
    const customer = await fetch(`${app.url}/api/customers/2`);
    assert.deepEqual({ ...((await customer.json()) as object), createdAt: 'x' }, { id: 2, email: 'grace.hopper@example.com', fullName: 'Grace Hopper', createdAt: 'x' });
    assert.equal((await fetch(`${app.url}/api/customers/99`)).status, 404);

    assert.deepEqual(await app.stop(), { code: 0, signal: null }, 'SIGTERM is a clean exit');
  });

  test('a restart does not seed again; kill -9 loses no acknowledged write', async () => {
    const app = await start('legacy', 'legacy_shop');
    assert.deepEqual(await allOrderIds(app.url), seededIds, 'same 200 orders, none added');
    const created = await fetch(`${app.url}/api/orders`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ customerId: 4, items: [{ productId: 10, quantity: 1 }] }),
    });
    assert.equal(created.status, 201);
    const order = (await created.json()) as { id: string };
    assert.equal((await app.kill()).signal, 'SIGKILL');

    const again = await start('legacy', 'legacy_shop');
    const read = await fetch(`${again.url}/api/orders/${order.id}`);
    assert.equal(read.status, 200);
    assert.equal((await allOrderIds(again.url)).length, 201);
    assert.equal((await again.stop()).code, 0);
  });

  test('a bad command line exits 1 with a message naming the option', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'devstack/demo/monolith/main.ts', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DATABASE_URL: '' } });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 1);
    assert.match(stderr, /--database-url/);
  });

  test('spawnDemoApp rejects with the child\'s stderr when the app cannot start', async () => {
    await assert.rejects(spawnDemoApp('legacy', { databaseUrl: postgres.url('no_such_database') }), /exited \(1\) before printing its port:[\s\S]*no_such_database/);
  });
});

describe('parent death', () => {
  test('both apps exit when the process that spawned them is killed (kill -9), instead of keeping their port and pool', async () => {
    const file = join(dataDir, 'parent.mts');
    const spawnModule = pathToFileURL(join(dirname(fileURLToPath(import.meta.url)), '../../../devstack/demo/monolith/spawn.ts')).href;
    await writeFile(file, `
import { spawnDemoApp } from ${JSON.stringify(spawnModule)};
const apps = await Promise.all([
  spawnDemoApp('legacy', { databaseUrl: ${JSON.stringify(postgres.url('legacy_shop'))}, logLevel: 'warn' }),
  spawnDemoApp('service', { databaseUrl: ${JSON.stringify(postgres.url('orders_service'))}, logLevel: 'warn' }),
]);
console.log(JSON.stringify(apps.map((a) => ({ pid: a.child.pid, url: a.url }))));
setInterval(() => {}, 1000);
`);
    const parent = spawn(process.execPath, ['--import', 'tsx', file], { stdio: ['ignore', 'pipe', 'inherit'] });
    const [line] = (await once(createInterface({ input: parent.stdout }), 'line')) as [string];
    const apps = JSON.parse(line) as { pid: number; url: string }[];
    for (const app of apps) assert.equal((await fetch(`${app.url}/healthz`)).status, 200);
    parent.kill('SIGKILL');
    await once(parent, 'exit');
    const deadline = Date.now() + 20_000;
    const running = () => apps.filter(({ pid }) => processAlive(pid));
    while (running().length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const left = running();
    for (const { pid } of left) process.kill(pid, 'SIGKILL');
    assert.deepEqual(left, [], 'apps still running 20 s after their parent was killed');
  });
});

describe('extracted orders service process', () => {
  test('starts empty apart from its reference copy, serves orders, SIGTERM exits 0', async () => {
    const app = await start('service', 'orders_service');
    assert.equal((await fetch(`${app.url}/healthz`)).headers.get('x-served-by'), 'service');
    assert.deepEqual(await allOrderIds(app.url), []);
    const created = await fetch(`${app.url}/api/orders`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ customerId: 1, items: [{ productId: 1, quantity: 1 }] }),
    });
    assert.equal(created.status, 201);
    assert.deepEqual(await app.stop(), { code: 0, signal: null });
  });

  test('a restart keeps reference data replicated since the first start (seeding fills an empty copy only)', async () => {
    assert.equal((await (await start('service', 'orders_service')).stop()).code, 0);
    // What the one-way customers/products mapping of a real migration does to the read-only copy while the service runs.
    // One client, not a pool: its end() resolves once the connection is closed, whereas a pool's end() can resolve
    // first, and the server's stop in after() then reached the closing connection as an uncaught 'error'.
    const db = new pg.Client({ connectionString: postgres.url('orders_service') });
    await db.connect();
    try {
      await db.query(`UPDATE catalog_items SET unit_price = 14.99, title = 'Enamel mug, large' WHERE item_id = 1`);
      await db.query(`UPDATE buyers SET email = 'ada@example.org' WHERE buyer_id = 1`);
      await db.query(`DELETE FROM catalog_items WHERE item_id = 12`);
      const app = await start('service', 'orders_service');
      const post = (productId: number) => fetch(`${app.url}/api/orders`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ customerId: 1, items: [{ productId, quantity: 1 }] }),
      });
      const created = await post(1);
      const order = (await created.json()) as { items: { unitPriceCents: number }[] };
      assert.equal(created.status, 201, JSON.stringify(order));
      assert.equal(order.items[0]?.unitPriceCents, 1499, 'the replicated price, not the seed list\'s 1299');
      const removed = await post(12);
      assert.equal(removed.status, 400, 'a product removed since is not seeded back');
      const { rows } = await db.query<{ email: string }>('SELECT email FROM buyers WHERE buyer_id = 1');
      assert.equal(rows[0]?.email, 'ada@example.org');
      assert.deepEqual(await app.stop(), { code: 0, signal: null });
    } finally {
      await db.end();
    }
  });
});
