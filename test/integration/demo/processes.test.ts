/**
 * Both demo apps as child processes, the form `npm start` and the end-to-end tests use: the {"port":N} line on
 * stdout, seeding once on first start, SIGTERM → graceful exit 0, and a kill -9 followed by a restart on the same
 * database losing nothing that was acknowledged.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { startPostgres, type RunningPostgres } from '../../../devstack/postgres.ts';

const MONOLITH = 'devstack/demo/monolith/main.ts';
const SERVICE = 'services/example-orders/main.ts';

let dataDir: string;
let postgres: RunningPostgres;
const children = new Set<ChildProcess>();

interface Started { child: ChildProcess; port: number; base: string; stderr: () => string }

/** Spawns a demo app and resolves once it printed its port; rejects with its stderr if it exits first. */
async function startApp(script: string, args: string[]): Promise<Started> {
  const child = spawn(process.execPath, ['--import', 'tsx', script, '--port', '0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, STRANGLER_LOG_LEVEL: 'warn' },
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  const lines = createInterface({ input: child.stdout! });
  const port = await new Promise<number>((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`${script} exited with ${code} before printing its port:\n${stderr}`));
    child.once('exit', onExit);
    lines.once('line', (line) => {
      child.off('exit', onExit);
      const parsed = JSON.parse(line) as { port?: unknown };
      if (typeof parsed.port === 'number') resolve(parsed.port);
      else reject(new Error(`unexpected first stdout line: ${line}`));
    });
  });
  return { child, port, base: `http://127.0.0.1:${port}`, stderr: () => stderr };
}

async function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return { code: child.exitCode, signal: child.signalCode };
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  return { code, signal };
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
  for (const child of children) {
    child.kill('SIGKILL');
    await exitOf(child);
  }
  await postgres?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe('demo monolith process', () => {
  let seededIds: string[] = [];

  test('first start migrates, seeds 200 orders over 8 customers and 12 products, prints its port', async () => {
    const app = await startApp(MONOLITH, ['--database-url', postgres.url('legacy_shop')]);
    const health = await fetch(`${app.base}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(health.headers.get('x-served-by'), 'legacy');
    seededIds = await allOrderIds(app.base);
    assert.equal(seededIds.length, 200);
    assert.equal(new Set(seededIds).size, 200);
    const products = (await (await fetch(`${app.base}/api/products`)).json()) as { products: { sku: string }[] };
    assert.equal(products.products.length, 12);
    const customer = await fetch(`${app.base}/api/customers/2`);
    assert.deepEqual({ ...((await customer.json()) as object), createdAt: 'x' }, { id: 2, email: 'grace.hopper@example.com', fullName: 'Grace Hopper', createdAt: 'x' });
    assert.equal((await fetch(`${app.base}/api/customers/99`)).status, 404);

    app.child.kill('SIGTERM');
    assert.deepEqual(await exitOf(app.child), { code: 0, signal: null }, app.stderr());
  });

  test('a restart does not seed again; kill -9 loses no acknowledged write', async () => {
    const app = await startApp(MONOLITH, ['--database-url', postgres.url('legacy_shop')]);
    assert.deepEqual(await allOrderIds(app.base), seededIds, 'same 200 orders, none added');
    const created = await fetch(`${app.base}/api/orders`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ customerId: 4, items: [{ productId: 10, quantity: 1 }] }),
    });
    assert.equal(created.status, 201);
    const order = (await created.json()) as { id: string };
    app.child.kill('SIGKILL');
    assert.equal((await exitOf(app.child)).signal, 'SIGKILL');

    const again = await startApp(MONOLITH, ['--database-url', postgres.url('legacy_shop')]);
    const read = await fetch(`${again.base}/api/orders/${order.id}`);
    assert.equal(read.status, 200);
    assert.equal((await allOrderIds(again.base)).length, 201);
    again.child.kill('SIGTERM');
    assert.equal((await exitOf(again.child)).code, 0);
  });

  test('a bad command line exits 1 with a message naming the option', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', MONOLITH, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DATABASE_URL: '' } });
    children.add(child);
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    assert.equal((await exitOf(child)).code, 1);
    assert.match(stderr, /--database-url/);
  });
});

describe('extracted orders service process', () => {
  test('starts empty apart from its reference copy, serves orders, SIGTERM exits 0', async () => {
    const app = await startApp(SERVICE, ['--database-url', postgres.url('orders_service')]);
    assert.equal((await fetch(`${app.base}/healthz`)).headers.get('x-served-by'), 'service');
    assert.deepEqual(await allOrderIds(app.base), []);
    const created = await fetch(`${app.base}/api/orders`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ customerId: 1, items: [{ productId: 1, quantity: 1 }] }),
    });
    assert.equal(created.status, 201);
    app.child.kill('SIGTERM');
    assert.deepEqual(await exitOf(app.child), { code: 0, signal: null }, app.stderr());
  });
});
