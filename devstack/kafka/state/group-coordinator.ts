/**
 * Consumer-group coordinator for one node: the Empty → PreparingRebalance → CompletingRebalance → Stable state
 * machine of Kafka's GroupCoordinator, with the rules real clients depend on (reference §8):
 * - JoinGroup v4+ with an empty member id gets MEMBER_ID_REQUIRED and a minted id (held as pending).
 * - A rebalance completes when every member has a parked JoinGroup, or the rebalance timer fires; members that
 *   did not rejoin are dropped. Only the leader gets the member list.
 * - Followers' SyncGroups are parked until the leader's arrives; assignments are never null (empty bytes).
 * - Heartbeat answers REBALANCE_IN_PROGRESS during PreparingRebalance; commits are accepted then too.
 * - Session timers run for every member without a parked Join/Sync; TCP disconnects do not remove members.
 * - Static members (KIP-345, JoinGroup v5 group_instance_id): a restarted instance takes over its old member (and
 *   assignment) without a rebalance when the group is Stable; the replaced member id is fenced (FENCED_INSTANCE_ID).
 * All timers come from the injected clock.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from '../../../common/logger.ts';
import { KAFKA_LOG } from '../log-events.ts';
import type { OffsetsStore } from '../persistence/offsets-store.ts';
import { KafkaError } from '../protocol/error-codes.ts';
import type { Clock, TimerHandle } from './clock.ts';

export type GroupState = 'Empty' | 'PreparingRebalance' | 'CompletingRebalance' | 'Stable' | 'Dead';

export interface GroupProtocol { readonly name: string; readonly metadata: Buffer }

export interface JoinRequest {
  readonly groupId: string;
  readonly sessionTimeoutMs: number;
  readonly rebalanceTimeoutMs: number;
  readonly memberId: string;
  readonly protocolType: string;
  readonly protocols: readonly GroupProtocol[];
  readonly clientId: string;
  readonly clientHost: string;
  /** JoinGroup v4+: an empty member id is answered with MEMBER_ID_REQUIRED first. */
  readonly requireKnownMemberId: boolean;
  /** JoinGroup v5 group_instance_id (static membership); null or absent for dynamic members. */
  readonly groupInstanceId?: string | null;
}

export interface JoinResponse {
  readonly error: number;
  readonly generationId: number;
  readonly protocolName: string;
  readonly leader: string;
  readonly memberId: string;
  readonly members: readonly { memberId: string; instanceId: string | null; metadata: Buffer }[];
}

export interface SyncResponse { readonly error: number; readonly assignment: Buffer }

export interface CommitEntry { readonly topic: string; readonly partition: number; readonly offset: number; readonly metadata: string | null }

export interface GroupDescription {
  readonly groupId: string;
  readonly state: GroupState;
  readonly protocolType: string;
  readonly protocol: string;
  readonly members: readonly { memberId: string; clientId: string; clientHost: string; metadata: Buffer; assignment: Buffer }[];
}

interface Member {
  readonly id: string;
  readonly instanceId: string | null;
  clientId: string;
  clientHost: string;
  sessionTimeoutMs: number;
  rebalanceTimeoutMs: number;
  protocols: readonly GroupProtocol[];
  assignment: Buffer;
  join: ((r: JoinResponse) => void) | undefined;
  sync: ((r: SyncResponse) => void) | undefined;
  timer: TimerHandle | undefined;
}

class Group {
  state: GroupState = 'Empty';
  generationId = 0;
  protocolType: string | null = null;
  protocol: string | null = null;
  leaderId: string | null = null;
  readonly members = new Map<string, Member>();
  readonly pending = new Map<string, TimerHandle>();
  /** Static members: group_instance_id → current member id. */
  readonly instances = new Map<string, string>();
  rebalanceTimer: TimerHandle | undefined;
  initialDelayActive = false;
  constructor(readonly id: string) {}
}

const EMPTY = Buffer.alloc(0);

function failJoin(error: number, memberId = ''): JoinResponse {
  return { error, generationId: -1, protocolName: '', leader: '', memberId, members: [] };
}

function sameProtocols(a: readonly GroupProtocol[], b: readonly GroupProtocol[]): boolean {
  return a.length === b.length && a.every((p, i) => p.name === b[i]!.name && p.metadata.equals(b[i]!.metadata));
}

export interface GroupCoordinatorOptions {
  clock: Clock;
  logger: Logger;
  offsets: OffsetsStore;
  minSessionTimeoutMs: number;
  maxSessionTimeoutMs: number;
  initialRebalanceDelayMs: number;
}

export class GroupCoordinator {
  readonly #groups = new Map<string, Group>();
  readonly #o: GroupCoordinatorOptions;

  constructor(options: GroupCoordinatorOptions) {
    this.#o = options;
  }

  // ── membership ────────────────────────────────────────────────────────────

  join(req: JoinRequest): Promise<JoinResponse> | JoinResponse {
    if (!req.groupId) return failJoin(KafkaError.INVALID_GROUP_ID, req.memberId);
    if (req.sessionTimeoutMs < this.#o.minSessionTimeoutMs || req.sessionTimeoutMs > this.#o.maxSessionTimeoutMs) {
      return failJoin(KafkaError.INVALID_SESSION_TIMEOUT, req.memberId);
    }
    let group = this.#groups.get(req.groupId);
    if (!group) this.#groups.set(req.groupId, (group = new Group(req.groupId)));
    if (!this.#protocolsCompatible(group, req)) return failJoin(KafkaError.INCONSISTENT_GROUP_PROTOCOL, req.memberId);

    const instanceId = req.groupInstanceId ?? null;
    if (instanceId !== null) {
      // Static members skip the MEMBER_ID_REQUIRED round trip, as on Kafka.
      const known = group.instances.get(instanceId);
      if (req.memberId === '') return known === undefined ? this.#joinAsNew(group, `${instanceId}-${randomUUID()}`, req) : this.#replaceStatic(group, known, req);
      if (known !== undefined && known !== req.memberId) return failJoin(KafkaError.FENCED_INSTANCE_ID, req.memberId);
    }
    if (req.memberId === '') {
      const id = `${req.clientId}-${randomUUID()}`;
      if (req.requireKnownMemberId) {
        const g = group;
        g.pending.set(id, this.#o.clock.setTimeout(() => g.pending.delete(id), req.sessionTimeoutMs));
        return failJoin(KafkaError.MEMBER_ID_REQUIRED, id);
      }
      return this.#joinAsNew(group, id, req);
    }
    const pendingTimer = group.pending.get(req.memberId);
    if (pendingTimer) {
      pendingTimer.cancel();
      group.pending.delete(req.memberId);
      return this.#joinAsNew(group, req.memberId, req);
    }
    const member = group.members.get(req.memberId);
    if (!member) return failJoin(KafkaError.UNKNOWN_MEMBER_ID, req.memberId);

    const unchanged = sameProtocols(member.protocols, req.protocols);
    this.#update(member, req);
    if (group.state === 'Stable' && unchanged && member.id !== group.leaderId) return this.#currentJoin(group, member);
    if (group.state === 'CompletingRebalance' && unchanged) return this.#currentJoin(group, member);
    if (group.state !== 'PreparingRebalance') this.#prepareRebalance(group, `member ${member.id} rejoined`);
    return this.#park(group, member);
  }

  #protocolsCompatible(group: Group, req: JoinRequest): boolean {
    const others = [...group.members.values()].filter((m) => m.id !== req.memberId);
    if (others.length === 0) return req.protocols.length > 0;
    if (group.protocolType !== req.protocolType) return false;
    return req.protocols.some((p) => others.every((m) => m.protocols.some((q) => q.name === p.name)));
  }

  #update(member: Member, req: JoinRequest): void {
    member.clientId = req.clientId;
    member.clientHost = req.clientHost;
    member.sessionTimeoutMs = req.sessionTimeoutMs;
    member.rebalanceTimeoutMs = req.rebalanceTimeoutMs;
    member.protocols = req.protocols.map((p) => ({ name: p.name, metadata: Buffer.from(p.metadata) }));
  }

  #joinAsNew(group: Group, id: string, req: JoinRequest): Promise<JoinResponse> {
    const member: Member = {
      id, instanceId: req.groupInstanceId ?? null, clientId: req.clientId, clientHost: req.clientHost, sessionTimeoutMs: req.sessionTimeoutMs,
      rebalanceTimeoutMs: req.rebalanceTimeoutMs, protocols: [], assignment: EMPTY, join: undefined, sync: undefined, timer: undefined,
    };
    this.#update(member, req);
    if (group.members.size === 0) group.protocolType = req.protocolType;
    group.members.set(id, member);
    if (member.instanceId !== null) group.instances.set(member.instanceId, id);
    if (group.state !== 'PreparingRebalance') this.#prepareRebalance(group, `member ${id} joined`);
    return this.#park(group, member);
  }

  /**
   * A known static instance joins with an empty member id (it restarted): it takes over the old member under a new
   * id, keeping its assignment, and the old id is fenced. In a Stable group with unchanged protocols that is all
   * (no rebalance; the answer names the previous leader, so the member does not assign); otherwise it rebalances.
   */
  #replaceStatic(group: Group, oldId: string, req: JoinRequest): JoinResponse | Promise<JoinResponse> {
    const old = group.members.get(oldId)!;
    const id = `${old.instanceId!}-${randomUUID()}`;
    const previousLeader = group.leaderId;
    old.timer?.cancel();
    const fencedJoin = old.join;
    const fencedSync = old.sync;
    const member: Member = { ...old, id, join: undefined, sync: undefined, timer: undefined };
    old.join = undefined;
    old.sync = undefined;
    fencedJoin?.(failJoin(KafkaError.FENCED_INSTANCE_ID, oldId));
    fencedSync?.({ error: KafkaError.FENCED_INSTANCE_ID, assignment: EMPTY });
    group.members.delete(oldId);
    group.members.set(id, member);
    group.instances.set(member.instanceId!, id);
    if (group.leaderId === oldId) group.leaderId = id;
    this.#o.logger.info({ groupId: group.id, groupInstanceId: member.instanceId, memberId: id, replaced: oldId }, KAFKA_LOG.staticMemberReplaced);
    const unchanged = sameProtocols(old.protocols, req.protocols);
    this.#update(member, req);
    if (group.state === 'Stable' && unchanged) {
      this.#touch(member, group);
      return { error: 0, generationId: group.generationId, protocolName: group.protocol ?? '', leader: previousLeader ?? '', memberId: id, members: [] };
    }
    if (group.state !== 'PreparingRebalance') this.#prepareRebalance(group, `static member ${member.instanceId!} rejoined as ${id}`);
    return this.#park(group, member);
  }

  /** A request naming a static instance whose member id has since been replaced (another process took it over). */
  #fenced(group: Group | undefined, memberId: string, instanceId: string | null): boolean {
    if (!group || instanceId === null) return false;
    const current = group.instances.get(instanceId);
    return current !== undefined && current !== memberId;
  }

  #park(group: Group, member: Member): Promise<JoinResponse> {
    const promise = new Promise<JoinResponse>((resolve) => {
      member.join?.(failJoin(KafkaError.REBALANCE_IN_PROGRESS, member.id));
      member.join = resolve;
    });
    this.#touch(member, group);
    this.#maybeCompleteJoin(group);
    return promise;
  }

  #currentJoin(group: Group, member: Member): JoinResponse {
    this.#touch(member, group);
    return {
      error: 0, generationId: group.generationId, protocolName: group.protocol ?? '', leader: group.leaderId ?? '', memberId: member.id,
      members: member.id === group.leaderId ? this.#memberList(group) : [],
    };
  }

  #memberList(group: Group): JoinResponse['members'][number][] {
    return [...group.members.values()].map((m) => ({ memberId: m.id, instanceId: m.instanceId, metadata: m.protocols.find((p) => p.name === group.protocol)?.metadata ?? EMPTY }));
  }

  #prepareRebalance(group: Group, reason: string): void {
    if (group.state === 'CompletingRebalance') {
      for (const m of group.members.values()) {
        const sync = m.sync;
        m.sync = undefined;
        sync?.({ error: KafkaError.REBALANCE_IN_PROGRESS, assignment: EMPTY });
        this.#touch(m, group);
      }
    }
    const wasEmpty = group.state === 'Empty';
    group.state = 'PreparingRebalance';
    group.rebalanceTimer?.cancel();
    const rebalanceMs = Math.max(0, ...[...group.members.values()].map((m) => m.rebalanceTimeoutMs));
    group.initialDelayActive = wasEmpty && this.#o.initialRebalanceDelayMs > 0;
    if (group.initialDelayActive) {
      group.rebalanceTimer = this.#o.clock.setTimeout(() => {
        group.initialDelayActive = false;
        group.rebalanceTimer = this.#o.clock.setTimeout(() => this.#completeJoin(group), rebalanceMs);
        this.#maybeCompleteJoin(group);
      }, this.#o.initialRebalanceDelayMs);
    } else {
      group.rebalanceTimer = this.#o.clock.setTimeout(() => this.#completeJoin(group), rebalanceMs);
    }
    this.#o.logger.info({ groupId: group.id, generationId: group.generationId, reason }, KAFKA_LOG.groupRebalancing);
  }

  #maybeCompleteJoin(group: Group): void {
    if (group.state !== 'PreparingRebalance' || group.initialDelayActive) return;
    for (const m of group.members.values()) if (!m.join) return;
    this.#completeJoin(group);
  }

  #completeJoin(group: Group): void {
    if (group.state !== 'PreparingRebalance') return;
    group.rebalanceTimer?.cancel();
    group.rebalanceTimer = undefined;
    for (const m of [...group.members.values()]) if (!m.join) this.#dropMember(group, m);
    group.generationId++;
    if (group.members.size === 0) {
      this.#toEmpty(group);
      return;
    }
    group.protocol = this.#chooseProtocol(group);
    if (!group.leaderId || !group.members.has(group.leaderId)) group.leaderId = group.members.keys().next().value ?? null;
    group.state = 'CompletingRebalance';
    this.#o.logger.info({ groupId: group.id, generationId: group.generationId, members: group.members.size, protocol: group.protocol }, KAFKA_LOG.groupStable);
    for (const m of group.members.values()) {
      const join = m.join;
      m.join = undefined;
      m.assignment = EMPTY;
      this.#touch(m, group);
      join?.({
        error: 0, generationId: group.generationId, protocolName: group.protocol, leader: group.leaderId ?? '', memberId: m.id,
        members: m.id === group.leaderId ? this.#memberList(group) : [],
      });
    }
  }

  #chooseProtocol(group: Group): string {
    const members = [...group.members.values()];
    const first = members[0]!;
    const candidates = first.protocols.map((p) => p.name).filter((name) => members.every((m) => m.protocols.some((p) => p.name === name)));
    const votes = new Map<string, number>(candidates.map((c) => [c, 0]));
    for (const m of members) {
      const vote = m.protocols.find((p) => votes.has(p.name));
      if (vote) votes.set(vote.name, votes.get(vote.name)! + 1);
    }
    let best = candidates[0] ?? '';
    for (const [name, n] of votes) if (n > (votes.get(best) ?? -1)) best = name;
    return best;
  }

  #toEmpty(group: Group): void {
    group.rebalanceTimer?.cancel();
    group.rebalanceTimer = undefined;
    group.state = 'Empty';
    group.protocol = null;
    group.leaderId = null;
    group.protocolType = null;
  }

  /** (Re)starts the member's session timer; members with a parked Join or Sync do not expire. */
  #touch(member: Member, group: Group): void {
    member.timer?.cancel();
    member.timer = undefined;
    if (member.join || member.sync) return;
    member.timer = this.#o.clock.setTimeout(() => {
      if (group.members.get(member.id) !== member) return;
      this.#o.logger.info({ groupId: group.id, memberId: member.id, sessionTimeoutMs: member.sessionTimeoutMs }, KAFKA_LOG.memberExpired);
      this.#removeMember(group, member, 'session expired');
    }, member.sessionTimeoutMs);
  }

  #dropMember(group: Group, member: Member): void {
    member.timer?.cancel();
    group.members.delete(member.id);
    if (member.instanceId !== null && group.instances.get(member.instanceId) === member.id) group.instances.delete(member.instanceId);
    const join = member.join;
    const sync = member.sync;
    member.join = undefined;
    member.sync = undefined;
    join?.(failJoin(KafkaError.UNKNOWN_MEMBER_ID, member.id));
    sync?.({ error: KafkaError.UNKNOWN_MEMBER_ID, assignment: EMPTY });
  }

  #removeMember(group: Group, member: Member, reason: string): void {
    this.#dropMember(group, member);
    if (group.members.size === 0 && group.state !== 'Empty') {
      group.generationId++;
      this.#toEmpty(group);
    } else if (group.state === 'Stable' || group.state === 'CompletingRebalance') {
      this.#prepareRebalance(group, `member ${member.id}: ${reason}`);
    } else {
      this.#maybeCompleteJoin(group);
    }
  }

  sync(groupId: string, generationId: number, memberId: string, assignments: readonly { memberId: string; assignment: Buffer }[], instanceId: string | null = null): Promise<SyncResponse> | SyncResponse {
    const group = this.#groups.get(groupId);
    if (this.#fenced(group, memberId, instanceId)) return { error: KafkaError.FENCED_INSTANCE_ID, assignment: EMPTY };
    const member = group?.members.get(memberId);
    if (!group || !member) return { error: KafkaError.UNKNOWN_MEMBER_ID, assignment: EMPTY };
    if (generationId !== group.generationId) return { error: KafkaError.ILLEGAL_GENERATION, assignment: EMPTY };
    if (group.state === 'PreparingRebalance') return { error: KafkaError.REBALANCE_IN_PROGRESS, assignment: EMPTY };
    if (group.state === 'Stable') {
      this.#touch(member, group);
      return { error: 0, assignment: member.assignment };
    }
    if (group.state !== 'CompletingRebalance') return { error: KafkaError.UNKNOWN_MEMBER_ID, assignment: EMPTY };
    const promise = new Promise<SyncResponse>((resolve) => {
      member.sync?.({ error: KafkaError.REBALANCE_IN_PROGRESS, assignment: EMPTY });
      member.sync = resolve;
    });
    this.#touch(member, group);
    if (member.id === group.leaderId) {
      const given = new Map(assignments.map((a) => [a.memberId, a.assignment]));
      group.state = 'Stable';
      for (const m of group.members.values()) {
        m.assignment = Buffer.from(given.get(m.id) ?? EMPTY);
        const sync = m.sync;
        m.sync = undefined;
        this.#touch(m, group);
        sync?.({ error: 0, assignment: m.assignment });
      }
    }
    return promise;
  }

  heartbeat(groupId: string, generationId: number, memberId: string, instanceId: string | null = null): number {
    const group = this.#groups.get(groupId);
    if (this.#fenced(group, memberId, instanceId)) return KafkaError.FENCED_INSTANCE_ID;
    const member = group?.members.get(memberId);
    if (!group || !member) return KafkaError.UNKNOWN_MEMBER_ID;
    if (generationId !== group.generationId) return KafkaError.ILLEGAL_GENERATION;
    this.#touch(member, group);
    return group.state === 'PreparingRebalance' ? KafkaError.REBALANCE_IN_PROGRESS : 0;
  }

  leave(groupId: string, memberId: string): number {
    const group = this.#groups.get(groupId);
    const member = group?.members.get(memberId);
    if (!group || !member) return KafkaError.UNKNOWN_MEMBER_ID;
    this.#o.logger.info({ groupId, memberId }, KAFKA_LOG.memberLeft);
    this.#removeMember(group, member, 'left the group');
    return 0;
  }

  // ── offsets ───────────────────────────────────────────────────────────────

  /** Validates a commit's group membership; returns the error code for every partition (0 = stored). */
  commit(groupId: string, generationId: number, memberId: string, entries: readonly CommitEntry[]): number {
    if (!groupId) return KafkaError.INVALID_GROUP_ID;
    const group = this.#groups.get(groupId);
    if (generationId < 0 && memberId === '') {
      if (group && group.state !== 'Empty') return KafkaError.UNKNOWN_MEMBER_ID;
    } else {
      const member = group?.members.get(memberId);
      if (!group || !member) return KafkaError.UNKNOWN_MEMBER_ID;
      if (generationId !== group.generationId) return KafkaError.ILLEGAL_GENERATION;
      if (group.state === 'CompletingRebalance') return KafkaError.REBALANCE_IN_PROGRESS;
      this.#touch(member, group);
    }
    this.#o.offsets.commit(groupId, entries);
    return 0;
  }

  // ── admin ─────────────────────────────────────────────────────────────────

  describe(groupId: string): GroupDescription {
    const group = this.#groups.get(groupId);
    if (!group) return { groupId, state: this.#o.offsets.hasGroup(groupId) ? 'Empty' : 'Dead', protocolType: this.#o.offsets.hasGroup(groupId) ? 'consumer' : '', protocol: '', members: [] };
    return {
      groupId,
      state: group.state,
      protocolType: group.protocolType ?? (this.#o.offsets.hasGroup(groupId) ? 'consumer' : ''),
      protocol: group.state === 'Stable' || group.state === 'CompletingRebalance' ? group.protocol ?? '' : '',
      members: [...group.members.values()].map((m) => ({
        memberId: m.id, clientId: m.clientId, clientHost: m.clientHost,
        metadata: m.protocols.find((p) => p.name === group.protocol)?.metadata ?? EMPTY,
        assignment: group.state === 'Stable' ? m.assignment : EMPTY,
      })),
    };
  }

  list(): { groupId: string; protocolType: string }[] {
    const ids = new Set([...this.#groups.keys(), ...this.#o.offsets.groups()]);
    return [...ids].map((groupId) => ({ groupId, protocolType: this.#groups.get(groupId)?.protocolType ?? 'consumer' }));
  }

  delete(groupId: string): number {
    const group = this.#groups.get(groupId);
    if (group && group.members.size > 0) return KafkaError.NON_EMPTY_GROUP;
    if (!group && !this.#o.offsets.hasGroup(groupId)) return KafkaError.GROUP_ID_NOT_FOUND;
    if (group) {
      for (const t of group.pending.values()) t.cancel();
      group.rebalanceTimer?.cancel();
      this.#groups.delete(groupId);
    }
    this.#o.offsets.deleteGroup(groupId);
    return 0;
  }

  /** Cancels every timer and answers parked requests; the broker is going away. */
  close(): void {
    for (const group of this.#groups.values()) {
      group.rebalanceTimer?.cancel();
      for (const t of group.pending.values()) t.cancel();
      for (const m of group.members.values()) {
        m.timer?.cancel();
        m.join?.(failJoin(KafkaError.COORDINATOR_NOT_AVAILABLE, m.id));
        m.sync?.({ error: KafkaError.COORDINATOR_NOT_AVAILABLE, assignment: EMPTY });
        m.join = undefined;
        m.sync = undefined;
      }
    }
    this.#groups.clear();
  }
}
