import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ORDER_STATUSES, STATUS_TRANSITIONS, assertTransition, centsToDecimal, createOrderBody, decimalToCents, listOrdersQuery, parseOrThrow, uuidv7,
} from '../../../services/example-orders/contract.ts';
import { STATE_BY_STATUS } from '../../../services/example-orders/schema.ts';
import { generateSeedOrders } from '../../../devstack/demo/monolith/schema.ts';
import { StranglerError } from '../../../common/errors.ts';

describe('uuidv7', () => {
  test('golden value: timestamp in the first 48 bits, version 7, RFC variant', () => {
    assert.equal(uuidv7(0x0190f7a45b2c, Buffer.from('00112233445566778899', 'hex')), '0190f7a4-5b2c-7011-a233-445566778899');
  });
  test('ids minted later sort later in byte order (new rows append to the PK index)', () => {
    const a = uuidv7(1_700_000_000_000);
    const b = uuidv7(1_700_000_000_001);
    assert.ok(a < b);
    assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});

describe('cents ↔ decimal', () => {
  test('boundary pairs convert exactly both ways', () => {
    const pairs: [number, string][] = [[0, '0.00'], [5, '0.05'], [10, '0.10'], [99, '0.99'], [100, '1.00'], [1299, '12.99'], [2147483647, '21474836.47'], [-5, '-0.05']];
    for (const [cents, text] of pairs) {
      assert.equal(centsToDecimal(cents), text);
      assert.equal(decimalToCents(text), cents);
    }
    assert.equal(decimalToCents('7'), 700);
    assert.equal(decimalToCents('7.5'), 750);
    assert.throws(() => decimalToCents('1.234'), /not a 2-decimal amount/);
  });
});

describe('status transitions', () => {
  test('every status has a service spelling, and the map is 1:1', () => {
    assert.deepEqual(Object.keys(STATE_BY_STATUS).sort(), [...ORDER_STATUSES].sort());
    assert.equal(new Set(Object.values(STATE_BY_STATUS)).size, ORDER_STATUSES.length);
    assert.equal(STATE_BY_STATUS.cancelled, 'CANCELED');
  });
  test('allowed moves pass, others throw DEMO_CONFLICT, staying put is fine', () => {
    for (const from of ORDER_STATUSES) {
      for (const to of ORDER_STATUSES) {
        const allowed = from === to || STATUS_TRANSITIONS[from].includes(to);
        if (allowed) assert.doesNotThrow(() => assertTransition('x', from, to));
        else assert.throws(() => assertTransition('x', from, to), (e: unknown) => e instanceof StranglerError && e.code === 'DEMO_CONFLICT');
      }
    }
  });
});

describe('request validation', () => {
  test('every problem is reported with its path', () => {
    assert.throws(() => parseOrThrow(createOrderBody, { customerId: 0, items: [{ productId: 1, quantity: 101 }], extra: 1 }, 'request body'), (e: unknown) => {
      assert.ok(e instanceof StranglerError);
      assert.equal(e.code, 'DEMO_VALIDATION_FAILED');
      const paths = (e.details?.problems as { path: string }[]).map((p) => p.path).sort();
      assert.deepEqual(paths, ['(root)', 'customerId', 'items.0.quantity']);
      assert.match(e.message, /^invalid request body: /);
      return true;
    });
  });
  test('list query: customerId required, limit 1..200', () => {
    assert.deepEqual(parseOrThrow(listOrdersQuery, { customerId: '12', limit: '200' }, 'query'), { customerId: 12, limit: 200 });
    assert.throws(() => parseOrThrow(listOrdersQuery, {}, 'query'), /customerId: is required/);
    assert.throws(() => parseOrThrow(listOrdersQuery, { customerId: '1', limit: '0' }, 'query'), /limit/);
    assert.throws(() => parseOrThrow(listOrdersQuery, { customerId: '1', limit: '201' }, 'query'), /limit/);
  });
});

describe('seed orders', () => {
  test('deterministic for the same seed and clock; totals match their items; ids unique and time-ordered with createdAt', () => {
    const now = Date.UTC(2026, 10, 21);
    const a = generateSeedOrders(200, now);
    assert.deepEqual(generateSeedOrders(200, now), a);
    assert.equal(new Set(a.map((o) => o.id)).size, 200);
    for (const o of a) {
      assert.equal(o.totalCents, o.items.reduce((s, i) => s + i.quantity * i.unitPriceCents, 0));
      assert.ok(o.updatedAt >= o.createdAt && o.createdAt.getTime() <= now && o.createdAt.getTime() > now - 31 * 86_400_000);
      assert.equal(parseInt(o.id.replace(/-/g, '').slice(0, 12), 16), o.createdAt.getTime());
    }
    assert.ok(new Set(a.map((o) => o.status)).size >= 4, 'a realistic spread of statuses');
  });
});
