/** The group state machine on a fake clock: the rules real clients depend on (reference §8), no sleeps. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { silentLogger } from '../../../common/logger.ts';
import { OffsetsStore } from '../../../devstack/kafka/persistence/offsets-store.ts';
import { KafkaError } from '../../../devstack/kafka/protocol/error-codes.ts';
import type { Clock, TimerHandle } from '../../../devstack/kafka/state/clock.ts';
import { GroupCoordinator, type JoinRequest, type JoinResponse } from '../../../devstack/kafka/state/group-coordinator.ts';

class FakeClock implements Clock {
  #now = 0;
  #timers: { at: number; fn: () => void; cancelled: boolean }[] = [];
  now(): number { return this.#now; }
  setTimeout(fn: () => void, ms: number): TimerHandle {
    const t = { at: this.#now + ms, fn, cancelled: false };
    this.#timers.push(t);
    return { cancel: () => { t.cancelled = true; } };
  }
  /** Moves time forward, firing due timers in order. */
  advance(ms: number): void {
    const target = this.#now + ms;
    for (;;) {
      const due = this.#timers.filter((t) => !t.cancelled && t.at <= target).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      due.cancelled = true;
      this.#now = due.at;
      due.fn();
    }
    this.#now = target;
  }
}

function setup(): { clock: FakeClock; groups: GroupCoordinator; offsets: OffsetsStore } {
  const clock = new FakeClock();
  const offsets = new OffsetsStore(undefined, silentLogger);
  const groups = new GroupCoordinator({ clock, logger: silentLogger, offsets, minSessionTimeoutMs: 1000, maxSessionTimeoutMs: 60_000, initialRebalanceDelayMs: 0 });
  return { clock, groups, offsets };
}

const meta = (s: string): Buffer => Buffer.from(s);
function req(memberId: string, overrides: Partial<JoinRequest> = {}): JoinRequest {
  return {
    groupId: 'g', sessionTimeoutMs: 3000, rebalanceTimeoutMs: 10_000, memberId, protocolType: 'consumer',
    protocols: [{ name: 'RoundRobinAssigner', metadata: meta('m') }], clientId: 'c', clientHost: '/127.0.0.1', requireKnownMemberId: true, ...overrides,
  };
}

/** Joins a new member through the MEMBER_ID_REQUIRED round trip; returns its id and the parked join. */
async function newMember(groups: GroupCoordinator, overrides: Partial<JoinRequest> = {}): Promise<{ id: string; join: Promise<JoinResponse> }> {
  const first = await groups.join(req('', overrides));
  assert.equal(first.error, KafkaError.MEMBER_ID_REQUIRED);
  assert.ok(first.memberId.startsWith('c-'));
  return { id: first.memberId, join: Promise.resolve(groups.join(req(first.memberId, overrides))) };
}

const settled = async <T>(p: Promise<T>): Promise<boolean> => {
  let done = false;
  void p.then(() => { done = true; });
  await new Promise((r) => setImmediate(r));
  return done;
};

describe('group coordinator', () => {
  test('JoinGroup v4+: MEMBER_ID_REQUIRED then a generation; v0–3 joins directly', async () => {
    const { groups } = setup();
    const a = await newMember(groups);
    const res = await a.join;
    assert.equal(res.error, 0);
    assert.equal(res.generationId, 1);
    assert.equal(res.leader, a.id);
    assert.deepEqual(res.members.map((m) => m.memberId), [a.id]);
    const old = await groups.join(req('', { groupId: 'old', requireKnownMemberId: false }));
    assert.equal(old.error, 0);
    assert.equal(old.generationId, 1);
  });

  test('only the leader gets the member list; followers\' syncs wait for the leader; omitted members get empty bytes', async () => {
    const { groups } = setup();
    const a = await newMember(groups);
    await a.join;
    const sa = await groups.sync('g', 1, a.id, []);
    assert.equal(sa.error, 0);
    const b = await newMember(groups);
    assert.equal(groups.heartbeat('g', 1, a.id), KafkaError.REBALANCE_IN_PROGRESS, 'heartbeat 27 during rebalance');
    assert.equal(await settled(b.join), false, 'B waits for A to rejoin');
    const ra = await groups.join(req(a.id));
    const rb = await b.join;
    assert.equal(ra.generationId, 2);
    assert.equal(rb.generationId, 2);
    assert.equal(ra.leader, a.id, 'the old leader stays leader');
    assert.equal(ra.members.length, 2);
    assert.equal(rb.members.length, 0);
    const followerSync = Promise.resolve(groups.sync('g', 2, b.id, []));
    assert.equal(await settled(followerSync), false, 'follower sync parked');
    const leaderSync = await groups.sync('g', 2, a.id, [{ memberId: a.id, assignment: meta('A') }]);
    assert.equal(leaderSync.assignment.toString(), 'A');
    const fs = await followerSync;
    assert.equal(fs.error, 0);
    assert.equal(fs.assignment.length, 0, 'empty bytes, never null');
    assert.equal(groups.describe('g').state, 'Stable');
  });

  test('static members (group.instance.id): a restarted instance takes its member and assignment back without a rebalance; the old id is fenced', async () => {
    const { groups, clock } = setup();
    const staticReq = (memberId: string, instance: string): JoinRequest => req(memberId, { groupInstanceId: instance, sessionTimeoutMs: 30_000 });
    const a = groups.join(staticReq('', 'i-a'));
    const ra = await a;
    assert.equal(ra.error, 0, 'no MEMBER_ID_REQUIRED round trip for a static member');
    assert.ok(ra.memberId.startsWith('i-a-'));
    assert.deepEqual(ra.members.map((m) => m.instanceId), ['i-a'], 'the leader sees instance ids');
    await groups.sync('g', 1, ra.memberId, [{ memberId: ra.memberId, assignment: meta('A') }]);
    const b = Promise.resolve(groups.join(staticReq('', 'i-b')));
    assert.equal(groups.heartbeat('g', 1, ra.memberId, 'i-a'), KafkaError.REBALANCE_IN_PROGRESS);
    const ra2 = await groups.join(staticReq(ra.memberId, 'i-a'));
    const rb = await b;
    await groups.sync('g', 2, ra2.memberId, [{ memberId: ra.memberId, assignment: meta('A') }, { memberId: rb.memberId, assignment: meta('B') }]);
    assert.equal(groups.describe('g').state, 'Stable');

    // B's process is killed and restarted (no LeaveGroup): it comes back with an empty member id and its instance id.
    clock.advance(5000);
    assert.equal(groups.heartbeat('g', 2, ra.memberId, 'i-a'), 0);
    const back = await groups.join(staticReq('', 'i-b'));
    assert.equal(back.error, 0);
    assert.equal(back.generationId, 2, 'same generation: no rebalance');
    assert.notEqual(back.memberId, rb.memberId);
    assert.equal(back.leader, ra.memberId);
    assert.equal(groups.describe('g').state, 'Stable');
    const synced = await groups.sync('g', 2, back.memberId, [], 'i-b');
    assert.equal(synced.assignment.toString(), 'B', 'keeps its assignment');
    assert.equal(groups.heartbeat('g', 2, ra.memberId, 'i-a'), 0, 'the other member sees no rebalance');
    assert.equal(groups.heartbeat('g', 2, rb.memberId, 'i-b'), KafkaError.FENCED_INSTANCE_ID, 'the replaced member id is fenced');
    assert.equal((await groups.join(staticReq(rb.memberId, 'i-b'))).error, KafkaError.FENCED_INSTANCE_ID);
    assert.equal((await groups.sync('g', 2, rb.memberId, [], 'i-b')).error, KafkaError.FENCED_INSTANCE_ID);
    clock.advance(29_000);
    assert.equal(groups.heartbeat('g', 2, back.memberId, 'i-b'), 0, 'the old member\'s session timer no longer runs');
    assert.equal(groups.describe('g').members.length, 2);
  });

  test('commits: stored in PreparingRebalance, refused with 27 in CompletingRebalance; unknown member 25; stale generation 22; negatives verbatim', async () => {
    const { groups, offsets } = setup();
    const a = await newMember(groups);
    await a.join;
    const entry = [{ topic: 't', partition: 0, offset: 5, metadata: null }];
    assert.equal(groups.commit('g', 1, a.id, entry), KafkaError.REBALANCE_IN_PROGRESS, 'CompletingRebalance');
    await groups.sync('g', 1, a.id, []);
    assert.equal(groups.commit('g', 1, a.id, entry), 0, 'Stable');
    const b = await newMember(groups);
    assert.equal(groups.describe('g').state, 'PreparingRebalance');
    assert.equal(groups.commit('g', 1, a.id, [{ topic: 't', partition: 0, offset: 6, metadata: 'm' }]), 0, 'PreparingRebalance stores');
    assert.equal(offsets.get('g', 't', 0)?.offset, 6);
    assert.equal(groups.commit('g', 1, 'nobody', entry), KafkaError.UNKNOWN_MEMBER_ID);
    assert.equal(groups.commit('g', 0, a.id, entry), KafkaError.ILLEGAL_GENERATION);
    assert.equal(groups.commit('g', -1, '', entry), KafkaError.UNKNOWN_MEMBER_ID, 'admin commit to an active group');
    assert.equal(groups.commit('other', -1, '', [{ topic: 't', partition: 1, offset: -2, metadata: null }]), 0, 'admin commit to an absent group');
    assert.equal(offsets.get('other', 't', 1)?.offset, -2, 'negative offsets stored as given');
    void b.join;
  });

  test('members that do not rejoin expire by session timeout during PreparingRebalance; parked members do not', async () => {
    const { groups, clock } = setup();
    const a = await newMember(groups);
    await a.join;
    await groups.sync('g', 1, a.id, []);
    const b = await newMember(groups, { rebalanceTimeoutMs: 300_000 });
    clock.advance(2999);
    assert.equal(await settled(b.join), false);
    clock.advance(2);
    const rb = await b.join;
    assert.equal(rb.error, 0, 'A expired after 3 s, not the 300 s rebalance timeout');
    assert.deepEqual(groups.describe('g').members.map((m) => m.memberId), [b.id]);
    assert.equal(rb.leader, b.id);
    clock.advance(100_000);
    // B sat in CompletingRebalance without syncing or heartbeating: its session expired and the group is Empty.
    assert.equal(groups.describe('g').state, 'Empty');
  });

  test('heartbeats keep a member; a parked SyncGroup does not expire', async () => {
    const { groups, clock } = setup();
    const a = await newMember(groups);
    await a.join;
    await groups.sync('g', 1, a.id, []);
    for (let i = 0; i < 10; i++) {
      clock.advance(2000);
      assert.equal(groups.heartbeat('g', 1, a.id), 0);
    }
    const b = await newMember(groups);
    await groups.join(req(a.id));
    await b.join;
    const parked = Promise.resolve(groups.sync('g', 2, b.id, []));
    clock.advance(2500);
    assert.equal(groups.heartbeat('g', 2, a.id), 0);
    clock.advance(2500);
    assert.equal(await settled(parked), false, 'B is parked and has not expired');
    const leader = await groups.sync('g', 2, a.id, []);
    assert.equal(leader.error, 0);
    assert.equal((await parked).error, 0);
  });

  test('LeaveGroup rebalances the rest; the last member leaving empties the group', async () => {
    const { groups } = setup();
    const a = await newMember(groups);
    await a.join;
    await groups.sync('g', 1, a.id, []);
    const b = await newMember(groups);
    await groups.join(req(a.id));
    await b.join;
    await Promise.all([groups.sync('g', 2, b.id, []), groups.sync('g', 2, a.id, [])]);
    assert.equal(groups.leave('g', b.id), 0);
    assert.equal(groups.heartbeat('g', 2, a.id), KafkaError.REBALANCE_IN_PROGRESS);
    const again = await groups.join(req(a.id));
    assert.equal(again.generationId, 3);
    assert.equal(groups.leave('g', a.id), 0);
    assert.equal(groups.describe('g').state, 'Empty');
    assert.equal(groups.leave('g', a.id), KafkaError.UNKNOWN_MEMBER_ID);
  });

  test('protocol, session timeout and group id errors', async () => {
    const { groups } = setup();
    const a = await newMember(groups);
    await a.join;
    const rdk = await groups.join(req('', { protocols: [{ name: 'range', metadata: meta('') }], requireKnownMemberId: false }));
    assert.equal(rdk.error, KafkaError.INCONSISTENT_GROUP_PROTOCOL, 'a kafkajs group rejects a range-only member, as Kafka does');
    assert.equal((await groups.join(req('', { sessionTimeoutMs: 10 }))).error, KafkaError.INVALID_SESSION_TIMEOUT);
    assert.equal((await groups.join(req('', { groupId: '' }))).error, KafkaError.INVALID_GROUP_ID);
    assert.equal((await groups.join(req('ghost'))).error, KafkaError.UNKNOWN_MEMBER_ID);
    assert.equal(groups.heartbeat('nope', 1, 'x'), KafkaError.UNKNOWN_MEMBER_ID);
  });

  test('protocol choice: most first-choice votes among protocols every member supports', async () => {
    const { groups } = setup();
    const both = [{ name: 'range', metadata: meta('r') }, { name: 'roundrobin', metadata: meta('rr') }];
    const a = await newMember(groups, { protocols: both });
    await a.join;
    await groups.sync('g', 1, a.id, []);
    const b = await newMember(groups, { protocols: [both[1]!] });
    const ra = await groups.join(req(a.id, { protocols: both }));
    await b.join;
    assert.equal(ra.protocolName, 'roundrobin');
    assert.deepEqual(ra.members.map((m) => m.metadata.toString()).sort(), ['rr', 'rr']);
  });

  test('describe, list and delete', async () => {
    const { groups } = setup();
    assert.equal(groups.describe('missing').state, 'Dead');
    groups.commit('committed-only', -1, '', [{ topic: 't', partition: 0, offset: 1, metadata: null }]);
    assert.equal(groups.describe('committed-only').state, 'Empty');
    const a = await newMember(groups);
    await a.join;
    assert.deepEqual(groups.list().map((g) => g.groupId).sort(), ['committed-only', 'g']);
    assert.equal(groups.delete('g'), KafkaError.NON_EMPTY_GROUP);
    assert.equal(groups.delete('missing'), KafkaError.GROUP_ID_NOT_FOUND);
    assert.equal(groups.delete('committed-only'), 0);
    assert.equal(groups.describe('committed-only').state, 'Dead');
  });
});

describe('offsets store', () => {
  const dirs: string[] = [];
  after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

  test('replays commits and deletions after a restart and ignores a torn last line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'strangler-offsets-'));
    dirs.push(dir);
    const a = new OffsetsStore(dir, silentLogger);
    a.commit('g', [{ topic: 't', partition: 0, offset: 10, metadata: 'x' }, { topic: 't', partition: 1, offset: -1, metadata: null }]);
    a.commit('g', [{ topic: 't', partition: 0, offset: 12, metadata: null }]);
    a.commit('gone', [{ topic: 't', partition: 0, offset: 1, metadata: null }]);
    a.deleteGroup('gone');
    a.close();
    appendFileSync(join(dir, 'offsets.log'), '{"g":"g","t":"t","p":0,"o":99');
    const b = new OffsetsStore(dir, silentLogger);
    assert.deepEqual(b.get('g', 't', 0), { offset: 12, metadata: null });
    assert.deepEqual(b.get('g', 't', 1), { offset: -1, metadata: null });
    assert.equal(b.hasGroup('gone'), false);
    b.close();
  });

  test('a deleted topic takes every group\'s offsets for it, also after a restart; offsets of topics missing at start are dropped', () => {
    const dir = mkdtempSync(join(tmpdir(), 'strangler-offsets-'));
    dirs.push(dir);
    const a = new OffsetsStore(dir, silentLogger);
    a.commit('g', [{ topic: 'deleted', partition: 0, offset: 5, metadata: null }, { topic: 'kept', partition: 0, offset: 7, metadata: null }]);
    a.commit('only-deleted', [{ topic: 'deleted', partition: 0, offset: 3, metadata: null }]);
    a.commit('g', [{ topic: 'vanished', partition: 0, offset: 9, metadata: null }]);
    a.deleteTopic('deleted');
    assert.equal(a.get('g', 'deleted', 0), undefined);
    assert.equal(a.hasGroup('only-deleted'), false, 'a group with no offsets left is gone (Dead)');
    a.close();
    const b = new OffsetsStore(dir, silentLogger, (topic) => topic !== 'vanished');
    assert.equal(b.get('g', 'deleted', 0), undefined);
    assert.equal(b.get('g', 'vanished', 0), undefined, 'the topic no longer exists');
    assert.deepEqual(b.get('g', 'kept', 0), { offset: 7, metadata: null });
    assert.equal(b.hasGroup('only-deleted'), false);
    b.close();
  });
});
