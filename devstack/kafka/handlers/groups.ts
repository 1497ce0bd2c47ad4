/** Group membership APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup (state in GroupCoordinator). */
import { KafkaError } from '../protocol/error-codes.ts';
import { Writer } from '../protocol/writer.ts';
import type { Handler } from '../server/context.ts';

export const handleFindCoordinator: Handler = (broker, header, r) => {
  const v = header.apiVersion;
  r.string(); // key: one node coordinates every group (and transactional id)
  if (v >= 1) r.int8();
  const w = new Writer(64);
  if (v >= 1) w.int32(0);
  if (broker.clock.now() < broker.coordinatorReadyAt) {
    // Still "loading __consumer_offsets" (coordinatorLoadMs): Kafka answers no node.
    w.int16(KafkaError.COORDINATOR_NOT_AVAILABLE);
    if (v >= 1) w.nullableString('the group coordinator is loading');
    return w.int32(-1).string('').int32(-1);
  }
  w.int16(0);
  if (v >= 1) w.nullableString(null);
  w.int32(broker.nodeId).string(broker.advertisedHost).int32(broker.advertisedPort);
  return w;
};

export const handleJoinGroup: Handler = async (broker, header, r) => {
  const v = header.apiVersion;
  const groupId = r.string();
  const sessionTimeoutMs = r.int32();
  const rebalanceTimeoutMs = v >= 1 ? r.int32() : sessionTimeoutMs;
  const memberId = r.string();
  const groupInstanceId = v >= 5 ? r.nullableString() : null; // static membership (librdkafka's group.instance.id)
  const protocolType = r.string();
  const protocols = r.array((p) => ({ name: p.string(), metadata: Buffer.from(p.bytes()) }));
  const res = await broker.groups.join({
    groupId, sessionTimeoutMs, rebalanceTimeoutMs, memberId, protocolType, protocols,
    clientId: header.clientId ?? '', clientHost: header.clientHost, requireKnownMemberId: v >= 4, groupInstanceId,
  });
  const w = new Writer(256);
  if (v >= 2) w.int32(0);
  w.int16(res.error).int32(res.generationId).string(res.protocolName).string(res.leader).string(res.memberId);
  w.array(res.members, (w, m) => {
    w.string(m.memberId);
    if (v >= 5) w.nullableString(m.instanceId);
    w.bytes(m.metadata);
  });
  return w;
};

export const handleSyncGroup: Handler = async (broker, header, r) => {
  const v = header.apiVersion;
  const groupId = r.string();
  const generationId = r.int32();
  const memberId = r.string();
  const instanceId = v >= 3 ? r.nullableString() : null;
  const assignments = r.array((a) => ({ memberId: a.string(), assignment: Buffer.from(a.bytes()) }));
  const res = await broker.groups.sync(groupId, generationId, memberId, assignments, instanceId);
  const w = new Writer(128);
  if (v >= 1) w.int32(0);
  w.int16(res.error).bytes(res.assignment); // empty bytes, never null: kafkajs cannot decode null
  return w;
};

export const handleHeartbeat: Handler = (broker, header, r) => {
  const v = header.apiVersion;
  const groupId = r.string();
  const generationId = r.int32();
  const memberId = r.string();
  const instanceId = v >= 3 ? r.nullableString() : null;
  const w = new Writer(16);
  if (v >= 1) w.int32(0);
  return w.int16(broker.groups.heartbeat(groupId, generationId, memberId, instanceId));
};

export const handleLeaveGroup: Handler = (broker, header, r) => {
  const groupId = r.string();
  const memberId = r.string();
  const w = new Writer(16);
  if (header.apiVersion >= 1) w.int32(0);
  return w.int16(broker.groups.leave(groupId, memberId));
};
