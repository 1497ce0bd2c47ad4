/**
 * The orders API contract as one suite, run unchanged against the demo monolith and the extracted service
 * (orders-contract.test.ts). Whatever the gateway routes where, clients must not see a difference.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { uuidv7 } from '../../../services/example-orders/contract.ts';

export interface ContractTarget {
  /** Base URL of the running app, e.g. http://127.0.0.1:PORT */
  baseUrl: string;
  servedBy: 'legacy' | 'service';
}

interface Answer {
  status: number;
  headers: Headers;
  body: unknown;
  text: string;
}

async function call(target: ContractTarget, method: string, path: string, body?: unknown, rawBody?: { text: string; type?: string }): Promise<Answer> {
  const headers: Record<string, string> = {};
  let payload: string | undefined;
  if (rawBody) {
    payload = rawBody.text;
    if (rawBody.type) headers['content-type'] = rawBody.type;
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['content-type'] = 'application/json';
  }
  const res = await fetch(`${target.baseUrl}${path}`, { method, headers, ...(payload !== undefined ? { body: payload } : {}) });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, body: text ? JSON.parse(text) : undefined };
}

interface OrderBody {
  id: string;
  customerId: number;
  status: string;
  currency: string;
  totalCents: number;
  items: { productId: number; sku: string; quantity: number; unitPriceCents: number }[];
  notes: string | null;
  createdAt: string;
  updatedAt: string;
}

interface ErrorBody {
  error: { code: string; message: string; retriable: boolean; details?: { problems?: { path: string; message: string }[] } };
}

const UUIDV7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function assertError(answer: Answer, status: number, code: string, messageIncludes: string | RegExp): ErrorBody {
  assert.equal(answer.status, status, answer.text);
  const body = answer.body as ErrorBody;
  assert.equal(body.error.code, code, answer.text);
  if (typeof messageIncludes === 'string') assert.ok(body.error.message.includes(messageIncludes), `message ${JSON.stringify(body.error.message)} should mention ${messageIncludes}`);
  else assert.match(body.error.message, messageIncludes);
  return body;
}

/**
 * Registers the contract tests for one app. `getTarget` is called inside each test (the app starts in `before`).
 * Expects the demo reference data (customers 1..8, products 1..12 with REFERENCE_PRODUCTS prices) and that no
 * other writer touches customers 6 and 7 (this suite's own customers).
 */
export function ordersContractSuite(label: string, getTarget: () => ContractTarget): void {
  describe(`orders API contract: ${label}`, () => {
    test('POST /api/orders creates a pending order priced from the catalogue (201, Location, served-by)', async () => {
      const t = getTarget();
      const res = await call(t, 'POST', '/api/orders', { customerId: 6, items: [{ productId: 1, quantity: 2 }, { productId: 7, quantity: 3 }], notes: 'ring twice' });
      assert.equal(res.status, 201, res.text);
      assert.equal(res.headers.get('x-served-by'), t.servedBy);
      const order = res.body as OrderBody;
      assert.match(order.id, UUIDV7);
      assert.equal(res.headers.get('location'), `/api/orders/${order.id}`);
      assert.deepEqual(Object.keys(order), ['id', 'customerId', 'status', 'currency', 'totalCents', 'items', 'notes', 'createdAt', 'updatedAt']);
      assert.equal(order.customerId, 6);
      assert.equal(order.status, 'pending');
      assert.equal(order.currency, 'EUR');
      assert.deepEqual(order.items, [
        { productId: 1, sku: 'MUG-001', quantity: 2, unitPriceCents: 1299 },
        { productId: 7, sku: 'STK-007', quantity: 3, unitPriceCents: 350 },
      ]);
      assert.equal(order.totalCents, 2 * 1299 + 3 * 350);
      assert.equal(order.notes, 'ring twice');
      assert.equal(order.createdAt, order.updatedAt);
      assert.ok(Math.abs(Date.parse(order.createdAt) - Date.now()) < 60_000, 'createdAt is now');

      const read = await call(t, 'GET', `/api/orders/${order.id}`);
      assert.equal(read.status, 200);
      assert.equal(read.headers.get('x-served-by'), t.servedBy);
      assert.equal(read.text, res.text, 'GET answers exactly what POST answered');
    });

    test('POST with a client-supplied id keeps it; a retry of the same request answers that order (200), other content under the id is 409', async () => {
      const t = getTarget();
      const id = uuidv7();
      const request = { id, customerId: 6, items: [{ productId: 2, quantity: 1 }, { productId: 3, quantity: 2 }], notes: 'retry me' };
      const first = await call(t, 'POST', '/api/orders', request);
      assert.equal(first.status, 201, first.text);
      assert.equal((first.body as OrderBody).id, id);
      // A client that lost the 201 (timeout) retries: it gets its order, and the 409 no longer tells it to omit "id".
      const again = await call(t, 'POST', '/api/orders', request);
      assert.equal(again.status, 200, again.text);
      assert.equal(again.text, first.text, 'the retry answers the order the first POST created');
      assert.equal(again.headers.get('location'), `/api/orders/${id}`);
      assert.equal(again.headers.get('x-served-by'), t.servedBy);
      const listed = (await call(t, 'GET', '/api/orders?customerId=6&limit=200')).body as { orders: OrderBody[] };
      assert.equal(listed.orders.filter((o) => o.id === id).length, 1);
      for (const other of [{ ...request, customerId: 7 }, { ...request, items: [{ productId: 2, quantity: 2 }, { productId: 3, quantity: 2 }] }, { ...request, notes: null }]) {
        const conflict = assertError(await call(t, 'POST', '/api/orders', other), 409, 'DEMO_CONFLICT', `order ${id} already exists with other content`);
        assert.doesNotMatch(conflict.error.message, /omit/);
      }
    });

    test('requests body-parser or the router refuse (charset, Content-Encoding, undecodable body or path) are 400, not 500', async () => {
      const t = getTarget();
      const body = JSON.stringify({ customerId: 6, items: [{ productId: 1, quantity: 1 }] });
      const cases: [string, RequestInit & { path?: string }, string][] = [
        ['charset', { method: 'POST', headers: { 'content-type': 'application/json; charset=latin1' }, body }, 'unsupported charset'],
        ['encoding', { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': 'zstd' }, body }, 'unsupported content encoding'],
        ['gzip', { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, body }, 'request rejected'],
        ['path', { method: 'GET', path: '/api/orders/%zz' }, 'Failed to decode'],
      ];
      for (const [name, init, message] of cases) {
        const res = await fetch(`${t.baseUrl}${init.path ?? '/api/orders'}`, init);
        const text = await res.text();
        assertError({ status: res.status, headers: res.headers, text, body: JSON.parse(text) }, 400, 'DEMO_VALIDATION_FAILED', message);
        assert.equal((JSON.parse(text) as ErrorBody).error.retriable, false, name);
      }
    });

    test('an unpaired surrogate in notes (valid JSON, no UTF-8 form) is 400, not silently stored as U+FFFD', async () => {
      const t = getTarget();
      const text = '{"customerId":6,"items":[{"productId":1,"quantity":1}],"notes":"gift\\ud800wrap"}';
      assertError(await call(t, 'POST', '/api/orders', undefined, { text, type: 'application/json' }), 400, 'DEMO_VALIDATION_FAILED', 'notes: must be valid Unicode');
      const paired = await call(t, 'POST', '/api/orders', { customerId: 6, items: [{ productId: 1, quantity: 1 }], notes: 'gift 🎁' });
      assert.equal(paired.status, 201, paired.text);
      assert.equal((paired.body as OrderBody).notes, 'gift 🎁');
    });

    test('GET /api/orders?customerId= lists that customer\'s orders newest first, with status filter and limit', async () => {
      const t = getTarget();
      const created: OrderBody[] = [];
      for (const productId of [3, 4, 5]) {
        const res = await call(t, 'POST', '/api/orders', { customerId: 7, items: [{ productId, quantity: 1 }] });
        assert.equal(res.status, 201, res.text);
        created.push(res.body as OrderBody);
      }
      const paid = await call(t, 'PATCH', `/api/orders/${created[1]!.id}`, { status: 'paid' });
      assert.equal(paid.status, 200, paid.text);

      const list = await call(t, 'GET', '/api/orders?customerId=7');
      assert.equal(list.status, 200, list.text);
      assert.equal(list.headers.get('x-served-by'), t.servedBy);
      const orders = (list.body as { orders: OrderBody[] }).orders;
      assert.deepEqual(orders.map((o) => o.id).sort(), created.map((o) => o.id).sort());
      for (let i = 1; i < orders.length; i++) {
        const [a, b] = [orders[i - 1]!, orders[i]!];
        assert.ok(a.createdAt > b.createdAt || (a.createdAt === b.createdAt && a.id > b.id), 'newest first, ties by id descending');
      }
      assert.ok(orders.every((o) => o.customerId === 7));

      const onlyPaid = await call(t, 'GET', '/api/orders?customerId=7&status=paid');
      assert.deepEqual((onlyPaid.body as { orders: OrderBody[] }).orders.map((o) => o.id), [created[1]!.id]);
      const limited = await call(t, 'GET', '/api/orders?customerId=7&limit=2');
      assert.deepEqual((limited.body as { orders: OrderBody[] }).orders, orders.slice(0, 2));
      const nobody = await call(t, 'GET', '/api/orders?customerId=999999');
      assert.deepEqual(nobody.body, { orders: [] });
    });

    test('GET /api/orders without or with a bad customerId is 400 naming the parameter', async () => {
      const t = getTarget();
      assertError(await call(t, 'GET', '/api/orders'), 400, 'DEMO_VALIDATION_FAILED', 'customerId');
      assertError(await call(t, 'GET', '/api/orders?customerId=abc'), 400, 'DEMO_VALIDATION_FAILED', 'customerId: must be a positive integer');
      assertError(await call(t, 'GET', '/api/orders?customerId=1&limit=500'), 400, 'DEMO_VALIDATION_FAILED', 'limit');
      assertError(await call(t, 'GET', '/api/orders?customerId=1&status=lost'), 400, 'DEMO_VALIDATION_FAILED', 'status');
    });

    test('PATCH moves the status along allowed transitions and bumps updatedAt; others are 409', async () => {
      const t = getTarget();
      const order = (await call(t, 'POST', '/api/orders', { customerId: 6, items: [{ productId: 9, quantity: 1 }] })).body as OrderBody;
      const paid = await call(t, 'PATCH', `/api/orders/${order.id}`, { status: 'paid' });
      assert.equal(paid.status, 200, paid.text);
      assert.equal(paid.headers.get('x-served-by'), t.servedBy);
      const paidOrder = paid.body as OrderBody;
      assert.equal(paidOrder.status, 'paid');
      assert.equal(paidOrder.createdAt, order.createdAt);
      assert.ok(paidOrder.updatedAt >= order.updatedAt);
      assert.deepEqual({ ...paidOrder, status: order.status, updatedAt: order.updatedAt }, order, 'only status and updatedAt changed');

      const back = await call(t, 'PATCH', `/api/orders/${order.id}`, { status: 'pending' });
      const err = assertError(back, 409, 'DEMO_CONFLICT', `order ${order.id} is paid; it cannot become pending (allowed: shipped, cancelled)`);
      assert.deepEqual(err.error.details, { from: 'paid', to: 'pending', allowed: ['shipped', 'cancelled'] });

      const same = await call(t, 'PATCH', `/api/orders/${order.id}`, { status: 'paid' });
      assert.equal(same.status, 200);
      assert.equal(same.text, paid.text, 'same status again is a no-op');

      const noted = await call(t, 'PATCH', `/api/orders/${order.id}`, { notes: 'fragile' });
      assert.equal((noted.body as OrderBody).notes, 'fragile');
      assert.equal((noted.body as OrderBody).status, 'paid');
      const cancelled = await call(t, 'PATCH', `/api/orders/${order.id}`, { status: 'cancelled', notes: null });
      assert.equal((cancelled.body as OrderBody).status, 'cancelled');
      assert.equal((cancelled.body as OrderBody).notes, null);
      assertError(await call(t, 'PATCH', `/api/orders/${order.id}`, { status: 'shipped' }), 409, 'DEMO_CONFLICT', 'allowed: none, it is final');
      assert.equal(((await call(t, 'GET', `/api/orders/${order.id}`)).body as OrderBody).status, 'cancelled');
    });

    test('PATCH with an invalid body is 400 naming the field', async () => {
      const t = getTarget();
      const order = (await call(t, 'POST', '/api/orders', { customerId: 6, items: [{ productId: 9, quantity: 1 }] })).body as OrderBody;
      assertError(await call(t, 'PATCH', `/api/orders/${order.id}`, {}), 400, 'DEMO_VALIDATION_FAILED', 'give at least one of "status" or "notes"');
      assertError(await call(t, 'PATCH', `/api/orders/${order.id}`, { status: 'lost' }), 400, 'DEMO_VALIDATION_FAILED', 'status');
      assertError(await call(t, 'PATCH', `/api/orders/${order.id}`, { status: 'paid', totalCents: 1 }), 400, 'DEMO_VALIDATION_FAILED', 'totalCents');
    });

    test('a NUL character in notes (valid JSON, not storable in PostgreSQL text) is 400 naming the field, not 500', async () => {
      const t = getTarget();
      const created = assertError(await call(t, 'POST', '/api/orders', { customerId: 6, items: [{ productId: 9, quantity: 1 }], notes: 'gift\u0000wrap' }), 400, 'DEMO_VALIDATION_FAILED', 'notes: must not contain NUL');
      assert.equal(created.error.retriable, false);
      const order = (await call(t, 'POST', '/api/orders', { customerId: 6, items: [{ productId: 9, quantity: 1 }] })).body as OrderBody;
      assertError(await call(t, 'PATCH', `/api/orders/${order.id}`, { notes: '\u0000' }), 400, 'DEMO_VALIDATION_FAILED', 'notes: must not contain NUL');
    });

    test('POST validation errors are 400 DEMO_VALIDATION_FAILED with every problem and its path', async () => {
      const t = getTarget();
      const missing = assertError(await call(t, 'POST', '/api/orders', { items: [{ productId: 1, quantity: 1 }] }), 400, 'DEMO_VALIDATION_FAILED', 'customerId');
      assert.deepEqual(missing.error.details?.problems?.map((p) => p.path), ['customerId']);
      const several = assertError(await call(t, 'POST', '/api/orders', { customerId: -1, items: [{ productId: 1, quantity: 0 }] }), 400, 'DEMO_VALIDATION_FAILED', 'customerId');
      assert.deepEqual(several.error.details?.problems?.map((p) => p.path), ['customerId', 'items.0.quantity']);
      assertError(await call(t, 'POST', '/api/orders', { customerId: 1, items: [] }), 400, 'DEMO_VALIDATION_FAILED', 'items');
      assertError(await call(t, 'POST', '/api/orders', { customerId: 1, items: [{ productId: 1, quantity: 1 }], status: 'paid' }), 400, 'DEMO_VALIDATION_FAILED', 'status');
      assertError(await call(t, 'POST', '/api/orders', { id: 'ORDER-1', customerId: 1, items: [{ productId: 1, quantity: 1 }] }), 400, 'DEMO_VALIDATION_FAILED', 'id: must be a lower-case UUID');
      assertError(await call(t, 'POST', '/api/orders', { customerId: 999, items: [{ productId: 1, quantity: 1 }] }), 400, 'DEMO_VALIDATION_FAILED', 'customerId: customer 999 does not exist');
      const product = assertError(await call(t, 'POST', '/api/orders', { customerId: 1, items: [{ productId: 1, quantity: 1 }, { productId: 4242, quantity: 1 }] }), 400, 'DEMO_VALIDATION_FAILED', 'items.1.productId: product 4242 does not exist');
      assert.equal(product.error.retriable, false);
      assertError(await call(t, 'POST', '/api/orders', undefined, { text: '{"customerId": 1,', type: 'application/json' }), 400, 'DEMO_VALIDATION_FAILED', 'request body is not valid JSON');
      assertError(await call(t, 'POST', '/api/orders', undefined, { text: 'customerId=1', type: 'text/plain' }), 400, 'DEMO_VALIDATION_FAILED', 'Content-Type: application/json');
    });

    test('unknown ids are 404 DEMO_NOT_FOUND for GET, PATCH and DELETE; DELETE removes an order', async () => {
      const t = getTarget();
      const unknown = '01890000-0000-7000-8000-000000000000';
      for (const [method, body] of [['GET', undefined], ['PATCH', { status: 'paid' }], ['DELETE', undefined]] as const) {
        const res = await call(t, method, `/api/orders/${unknown}`, body);
        assertError(res, 404, 'DEMO_NOT_FOUND', `order "${unknown}" does not exist`);
        assert.equal(res.headers.get('x-served-by'), t.servedBy);
      }
      assertError(await call(t, 'GET', '/api/orders/not-a-uuid'), 404, 'DEMO_NOT_FOUND', 'order "not-a-uuid" does not exist');

      const order = (await call(t, 'POST', '/api/orders', { customerId: 6, items: [{ productId: 11, quantity: 2 }] })).body as OrderBody;
      const del = await call(t, 'DELETE', `/api/orders/${order.id}`);
      assert.equal(del.status, 204);
      assert.equal(del.text, '');
      assertError(await call(t, 'GET', `/api/orders/${order.id}`), 404, 'DEMO_NOT_FOUND', order.id);
      assertError(await call(t, 'DELETE', `/api/orders/${order.id}`), 404, 'DEMO_NOT_FOUND', order.id);
    });

    test('unknown endpoints are a JSON 404; /healthz answers ok with who served it', async () => {
      const t = getTarget();
      const res = await call(t, 'GET', '/api/nothing-here');
      assertError(res, 404, 'DEMO_ROUTE_NOT_FOUND', 'no endpoint GET /api/nothing-here');
      assert.equal(res.headers.get('x-served-by'), t.servedBy);
      const health = await call(t, 'GET', '/healthz');
      assert.equal(health.status, 200);
      assert.deepEqual(health.body, { status: 'ok', servedBy: t.servedBy });
    });
  });
}
