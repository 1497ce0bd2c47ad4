/**
 * API keys and the version ranges we advertise. The low ends matter: librdkafka 2.0.2 enables a feature only if
 * the advertised range overlaps its fixed list (MsgVer2 needs Produce 3 / Fetch 4; `-G` needs JoinGroup 0, …).
 * kafkajs uses min(its max, our max) and never looks at our min. See README.md and the reference §3.
 */
export const ApiKey = {
  Produce: 0,
  Fetch: 1,
  ListOffsets: 2,
  Metadata: 3,
  OffsetCommit: 8,
  OffsetFetch: 9,
  FindCoordinator: 10,
  JoinGroup: 11,
  Heartbeat: 12,
  LeaveGroup: 13,
  SyncGroup: 14,
  DescribeGroups: 15,
  ListGroups: 16,
  SaslHandshake: 17,
  ApiVersions: 18,
  CreateTopics: 19,
  DeleteTopics: 20,
  InitProducerId: 22,
  DescribeConfigs: 32,
  SaslAuthenticate: 36,
  DeleteGroups: 42,
} as const;

export type ApiKeyValue = (typeof ApiKey)[keyof typeof ApiKey];

export interface VersionRange { readonly min: number; readonly max: number }

/** Advertised in ApiVersions; anything else is closed as unsupported. */
export const ADVERTISED: ReadonlyMap<number, VersionRange> = new Map<number, VersionRange>([
  [ApiKey.Produce, { min: 3, max: 7 }],
  [ApiKey.Fetch, { min: 4, max: 11 }],
  [ApiKey.ListOffsets, { min: 1, max: 3 }],
  [ApiKey.Metadata, { min: 0, max: 4 }],
  [ApiKey.OffsetCommit, { min: 2, max: 5 }],
  [ApiKey.OffsetFetch, { min: 1, max: 4 }],
  [ApiKey.FindCoordinator, { min: 0, max: 2 }],
  [ApiKey.JoinGroup, { min: 0, max: 5 }],
  [ApiKey.Heartbeat, { min: 0, max: 3 }],
  [ApiKey.LeaveGroup, { min: 0, max: 1 }],
  [ApiKey.SyncGroup, { min: 0, max: 3 }],
  [ApiKey.DescribeGroups, { min: 0, max: 2 }],
  [ApiKey.ListGroups, { min: 0, max: 2 }],
  [ApiKey.ApiVersions, { min: 0, max: 3 }],
  [ApiKey.CreateTopics, { min: 0, max: 4 }],
  [ApiKey.DeleteTopics, { min: 0, max: 1 }],
  [ApiKey.InitProducerId, { min: 0, max: 1 }],
  [ApiKey.DescribeConfigs, { min: 0, max: 1 }],
  [ApiKey.DeleteGroups, { min: 0, max: 1 }],
]);

/**
 * Advertised only by a broker with SASL configured (as Kafka lists them only on SASL listeners' ApiVersions):
 * SaslHandshake v0 (raw tokens follow) and v1 (SaslAuthenticate follows), SaslAuthenticate v0–2 (v2 flexible).
 */
export const SASL_ADVERTISED: ReadonlyMap<number, VersionRange> = new Map<number, VersionRange>([
  [ApiKey.SaslHandshake, { min: 0, max: 1 }],
  [ApiKey.SaslAuthenticate, { min: 0, max: 2 }],
]);

const ADVERTISED_WITH_SASL: ReadonlyMap<number, VersionRange> = new Map([...ADVERTISED, ...SASL_ADVERTISED].sort(([a], [b]) => a - b));

/** The ApiVersions list of a broker with or without SASL, in key order. */
export function advertised(sasl: boolean): ReadonlyMap<number, VersionRange> {
  return sasl ? ADVERTISED_WITH_SASL : ADVERTISED;
}

export function isAdvertised(key: number, version: number, sasl = false): boolean {
  const range = advertised(sasl).get(key);
  return range !== undefined && version >= range.min && version <= range.max;
}

/** Request header v2 (a tagged-field section after client_id): flexible versions of the APIs we serve. */
export function hasFlexibleHeader(key: number, version: number): boolean {
  return (key === ApiKey.ApiVersions && version >= 3) || (key === ApiKey.SaslAuthenticate && version >= 2);
}
