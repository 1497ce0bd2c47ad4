import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KafkaError } from '../../../devstack/kafka/protocol/error-codes.ts';
import { ProducerStates } from '../../../devstack/kafka/state/producer-state.ts';

const f = (producerId: bigint, epoch: number, baseSequence: number, count = 1) => ({ producerId, epoch, baseSequence, lastOffsetDelta: count - 1 });

test('idempotent producers: duplicates answered with the original offset, gaps and stale epochs refused, pid −1 unchecked', () => {
  const s = new ProducerStates();
  assert.deepEqual(s.check(f(7n, 0, 0, 3)), { kind: 'append' }, 'a new producer starts anywhere');
  s.record(f(7n, 0, 0, 3), 100);
  assert.deepEqual(s.check(f(7n, 0, 0, 3)), { kind: 'duplicate', baseOffset: 100 });
  assert.deepEqual(s.check(f(7n, 0, 3, 2)), { kind: 'append' });
  s.record(f(7n, 0, 3, 2), 103);
  assert.equal(s.check(f(7n, 0, 9)).kind, 'reject');
  assert.equal((s.check(f(7n, 0, 9)) as { error: number }).error, KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER);
  assert.deepEqual(s.check(f(7n, 1, 42)), { kind: 'append' }, 'a new epoch starts anywhere');
  s.record(f(7n, 1, 42), 105);
  assert.equal((s.check(f(7n, 0, 5)) as { error: number }).error, KafkaError.INVALID_PRODUCER_EPOCH);
  assert.deepEqual(s.check(f(-1n, -1, -1)), { kind: 'append' });
  for (let i = 0; i < 6; i++) s.record(f(8n, 0, i), 200 + i);
  assert.equal(s.check(f(8n, 0, 0)).kind, 'reject', 'only the last 5 batches are remembered');
  assert.deepEqual(s.check(f(8n, 0, 1)), { kind: 'duplicate', baseOffset: 201 });
});
