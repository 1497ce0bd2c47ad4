/** API key → handler. Only advertised keys are here; anything else is closed by the connection. */
import { handleCreateTopics, handleDeleteGroups, handleDescribeConfigs, handleDeleteTopics, handleDescribeGroups, handleInitProducerId, handleListGroups } from '../handlers/admin.ts';
import { handleApiVersions } from '../handlers/api-versions.ts';
import { handleFetch } from '../handlers/fetch.ts';
import { handleFindCoordinator, handleHeartbeat, handleJoinGroup, handleLeaveGroup, handleSyncGroup } from '../handlers/groups.ts';
import { handleListOffsets } from '../handlers/list-offsets.ts';
import { handleMetadata } from '../handlers/metadata.ts';
import { handleOffsetCommit, handleOffsetFetch } from '../handlers/offsets.ts';
import { handleProduce } from '../handlers/produce.ts';
import { ApiKey } from '../protocol/api-keys.ts';
import type { Handler } from './context.ts';

export const HANDLERS: ReadonlyMap<number, Handler> = new Map<number, Handler>([
  [ApiKey.Produce, handleProduce],
  [ApiKey.Fetch, handleFetch],
  [ApiKey.ListOffsets, handleListOffsets],
  [ApiKey.Metadata, handleMetadata],
  [ApiKey.OffsetCommit, handleOffsetCommit],
  [ApiKey.OffsetFetch, handleOffsetFetch],
  [ApiKey.FindCoordinator, handleFindCoordinator],
  [ApiKey.JoinGroup, handleJoinGroup],
  [ApiKey.Heartbeat, handleHeartbeat],
  [ApiKey.LeaveGroup, handleLeaveGroup],
  [ApiKey.SyncGroup, handleSyncGroup],
  [ApiKey.DescribeGroups, handleDescribeGroups],
  [ApiKey.ListGroups, handleListGroups],
  [ApiKey.ApiVersions, handleApiVersions],
  [ApiKey.CreateTopics, handleCreateTopics],
  [ApiKey.DeleteTopics, handleDeleteTopics],
  [ApiKey.InitProducerId, handleInitProducerId],
  [ApiKey.DescribeConfigs, handleDescribeConfigs],
  [ApiKey.DeleteGroups, handleDeleteGroups],
]);
