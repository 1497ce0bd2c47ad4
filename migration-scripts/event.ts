/**
 * The change event: the Kafka message value, JSON (documented in migration-scripts/README.md).
 *
 *   { "format": "strangler.change.v1", "source": "legacy", "table": "orders", "logical": "orders",
 *     "op": "c" | "u" | "d" | "r", "key": "[42]", "before": {...} | null, "after": {...} | null,
 *     "position": 1763702400123456, "version": { "legacy": 17, "service": 4 },
 *     "txId": "1234", "commitTs": "2026-11-21T05:30:00.123456+00:00", "origin": "legacy" }
 *
 * - key: canonical JSON array text of the primary-key values; also the Kafka message key.
 * - position: monotonic per source side in publish order (assigned by the relay); null for backfill/repair reads.
 * - version: the key's version vector after this change. version[source] is the source's change sequence, taken
 *   under the row lock, so it orders the changes of one key; version[other] is the last version of the other side
 *   the source had seen for this key (used to detect conflicts).
 * - op "r" is a snapshot read (backfill, repair); "d" carries only `before`.
 * - origin: the side where an application made the write (apply writes are never captured, so origin = source).
 *
 * JavaScript only reads the metadata; row images go from the message text straight to PostgreSQL as jsonb, so
 * numerics and timestamps never lose precision in a JavaScript number.
 */
import type { Side } from './config-schema.ts';

export const EVENT_FORMAT = 'strangler.change.v1';

/** Prefix of the transactional logical message apply writes (capture.mode logical), so the decoder drops its writes. */
export const SYNC_MESSAGE_PREFIX = 'strangler.sync';

export type Op = 'c' | 'u' | 'd' | 'r';

export interface ChangeEventMeta {
  format: string;
  source: Side;
  table: string;
  logical: string;
  op: Op;
  key: string;
  position: number | null;
  version: { legacy: number; service: number };
  txId: string | null;
  commitTs: string;
  origin: Side;
}

/** A consumed message: where it came from (topic/partition/offset, all null for backfill and repair) and its text. */
export interface ConsumedEvent {
  topic: string | null;
  partition: number | null;
  offset: string | null;
  value: string;
}

export function parseEventMeta(value: string): ChangeEventMeta {
  const m = JSON.parse(value) as ChangeEventMeta;
  if (m.format !== EVENT_FORMAT) throw new Error(`not a ${EVENT_FORMAT} event (format ${String(m.format)})`);
  return m;
}

/** An ISO timestamp (microsecond precision) as microseconds since the epoch; comparable without Date's ms rounding. */
export function isoToMicros(iso: string): number {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)$/.exec(iso);
  if (!m) return Date.parse(iso) * 1000;
  const whole = Date.parse(`${m[1]}${m[3] || 'Z'}`);
  const frac = (m[2] ?? '').padEnd(6, '0').slice(0, 6);
  return whole * 1000 + Number(frac);
}

/** SQL building one event's JSON text from a changelog row `c` (used by the relay). */
export function changelogEventSql(stateSchemaSide: Side, tablesParam: string): string {
  return `jsonb_build_object(
    'format', '${EVENT_FORMAT}', 'source', '${stateSchemaSide}', 'origin', '${stateSchemaSide}',
    'table', ${tablesParam}::jsonb->>c.tbl, 'logical', c.tbl, 'op', c.op, 'key', c.pk,
    'before', c.before, 'after', c.after, 'position', c.pos,
    'version', jsonb_build_object('legacy', c.lv, 'service', c.sv),
    'txId', c.xid::text, 'commitTs', c.ts)::text`;
}
