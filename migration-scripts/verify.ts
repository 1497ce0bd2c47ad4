/**
 * Verify: compares the two sides table by table through the mapping, without copying rows.
 *
 * Each row's canonical text is the service-shaped row (legacy rows are mapped with the same SQL expressions apply
 * uses), each value cast to the service column type and printed in UTC; its hash is PostgreSQL's 64-bit hashtextextended. Per key range:
 * count and sum of hashes on both sides, in parallel, one scan per side. Mismatched ranges are split again (factor
 * 32, on the side holding more rows) until they hold at most `leafRows` rows; then key hashes are compared to name the
 * keys, and a leaf with differences is read once more: only keys that differ in both reads are reported (a key live
 * sync applied in between was in flight). Run it with the pipeline drained (lag 0) all the same: a key whose change is
 * still in flight during both reads is reported.
 */
import type { Pool } from 'pg';
import { StranglerError } from '../common/errors.ts';
import type { Side, SyncConfig } from './config-schema.ts';
import { unbounded, type Pools } from './db.ts';
import type { CompiledTable } from './mapping.ts';
import { q } from './mapping.ts';

export type DiffKind = 'missing-on-legacy' | 'missing-on-service' | 'different';
export interface KeyDiff { key: string; kind: DiffKind }
export interface VerifyTableResult {
  table: string; legacyRows: number; serviceRows: number; chunks: number; mismatchedChunks: number; match: boolean;
  /** How many keys differ, in all and per kind (results stored before these fields existed: `diffs.length`). */
  diffCount?: number; counts?: DiffCounts;
  /** More keys differ than `diffs` lists (`verify.maxKeys`); repair then finds the rest by comparing the table again. */
  truncated?: boolean;
  diffs: KeyDiff[]; ms: number;
}

/** Keys listed per table when `verify.maxKeys` is not set. */
export const DEFAULT_MAX_KEYS = 10_000;

/** The number of differing keys of a table result (older stored results list every key they counted). */
export function diffCountOf(t: Pick<VerifyTableResult, 'diffCount' | 'diffs'>): number { return t.diffCount ?? t.diffs.length; }
export interface VerifyResult { ok: boolean; at: string; ms: number; tables: VerifyTableResult[] }

interface Range { lo: string | null; hi: string | null }

class TableVerifier {
  readonly #t: CompiledTable;
  readonly #pools: Pools;
  readonly #keyType: string;
  readonly #textKey: boolean;
  constructor(t: CompiledTable, pools: Pools) {
    this.#t = t;
    this.#pools = pools;
    const sk = t.key('service')[0] as string;
    this.#keyType = t.table('service').columns.get(sk)?.type ?? 'text';
    this.#textKey = t.table('service').columns.get(sk)?.collatable === true;
  }
  /**
   * Text keys compare in byte order (COLLATE "C") on both sides, whatever each database's default collation. An enum
   * key takes no collation (PostgreSQL refuses one) and orders the same on both sides by its declared order.
   */
  #k(side: Side): string { return `(t.${q(this.#t.key(side)[0] as string)}::${this.#keyType})${this.#textKey ? ' COLLATE "C"' : ''}`; }
  #hash(side: Side): string { return `hashtextextended(${this.#t.canonicalText(side, '@t')}, 0)`; }
  #from(side: Side): string { return `${this.#t.qualified(side)} t`; }
  #where(side: Side, first: number): string {
    return `($${first}::${this.#keyType} IS NULL OR ${this.#k(side)} >= $${first}::${this.#keyType}) AND ($${first + 1}::${this.#keyType} IS NULL OR ${this.#k(side)} < $${first + 1}::${this.#keyType})`;
  }
  async count(side: Side, r: Range): Promise<number> {
    // (Whole-table scans: not bounded by queryTimeoutMs.)
    const res = await this.#pools[side].query<{ n: string }>(unbounded(`SELECT count(*) AS n FROM ${this.#t.qualified(side)} t WHERE ${this.#where(side, 1)}`, [r.lo, r.hi]));
    return Number(res.rows[0]?.n ?? 0);
  }
  /** Every `step`-th key in the range, as text: chunk boundaries. */
  async boundaries(side: Side, r: Range, step: number): Promise<string[]> {
    const res = await this.#pools[side].query<{ kt: string }>(
      unbounded(`SELECT x.k::text AS kt FROM (SELECT ${this.#k(side)} AS k, row_number() OVER (ORDER BY ${this.#k(side)}) AS rn FROM ${this.#t.qualified(side)} t WHERE ${this.#where(side, 1)}) x WHERE x.rn % $3 = 0 ORDER BY x.k`,
        [r.lo, r.hi, step]));
    return res.rows.map((x) => x.kt);
  }
  async aggregate(side: Side, r: Range, bounds: string[]): Promise<Map<number, { n: number; sum: string }>> {
    const res = await this.#pools[side].query<{ b: number; n: string; sum: string }>(
      unbounded(`SELECT CASE WHEN cardinality($3::${this.#keyType}[]) = 0 THEN 0 ELSE width_bucket(${this.#k(side)}, $3::${this.#keyType}[]) END AS b,
              count(*) AS n, sum(${this.#hash(side)})::text AS sum
         FROM ${this.#from(side)} WHERE ${this.#where(side, 1)} GROUP BY 1`, [r.lo, r.hi, bounds]));
    return new Map(res.rows.map((x) => [x.b, { n: Number(x.n), sum: x.sum }]));
  }
  async leaf(side: Side, r: Range): Promise<Map<string, string>> {
    const res = await this.#pools[side].query<{ key: string; h: string }>(
      unbounded(`SELECT ${this.#t.keyText(side, 't')} AS key, ${this.#hash(side)}::text AS h FROM ${this.#from(side)} WHERE ${this.#where(side, 1)}`, [r.lo, r.hi]));
    return new Map(res.rows.map((x) => [x.key, x.h]));
  }
}

/** Receives each leaf range's differing keys as they are found (at most `leafRows` per side at a time). */
export type DiffSink = (diffs: KeyDiff[]) => Promise<void> | void;

interface Counted { r: Range; legacy: number; service: number }

interface Ctx { v: TableVerifier; chunkRows: number; leafRows: number; sink: DiffSink; stats: { chunks: number; mismatched: number }; recheck: boolean }

async function leafDiffs(v: TableVerifier, r: Range): Promise<KeyDiff[]> {
  const [l, s] = await Promise.all([v.leaf('legacy', r), v.leaf('service', r)]);
  const diffs: KeyDiff[] = [];
  for (const [k, h] of l) {
    const other = s.get(k);
    if (other === undefined) diffs.push({ key: k, kind: 'missing-on-service' });
    else if (other !== h) diffs.push({ key: k, kind: 'different' });
  }
  for (const k of s.keys()) if (!l.has(k)) diffs.push({ key: k, kind: 'missing-on-legacy' });
  return diffs;
}

async function compare(ctx: Ctx, c: Counted, splittable = true): Promise<void> {
  const { v, chunkRows, leafRows, stats } = ctx;
  const { r } = c;
  const n = Math.max(c.legacy, c.service);
  if (n <= leafRows || !splittable) {
    let diffs = await leafDiffs(v, r);
    if (diffs.length > 0 && ctx.recheck) {
      // Read the leaf once more (as Ghostferry and pt-table-checksum re-check): a key that live sync was applying
      // between the two reads is in flight, not different. Only keys that differ in both reads are reported.
      const again = new Map((await leafDiffs(v, r)).map((d) => [d.key, d]));
      diffs = diffs.flatMap((d) => again.get(d.key) ?? []);
    }
    if (diffs.length > 0) await ctx.sink(diffs);
    return;
  }
  // Boundaries from the side holding more rows in this range: split on the other (a wiped or half-copied side), every
  // bucket would hold the whole range and its leaf would read all of it into memory at once.
  const bigger: Side = c.legacy >= c.service ? 'legacy' : 'service';
  const bounds = await v.boundaries(bigger, r, Math.max(1, n > chunkRows * 32 ? chunkRows : Math.ceil(n / 32)));
  const [la, sa] = await Promise.all([v.aggregate('legacy', r, bounds), v.aggregate('service', r, bounds)]);
  const buckets = new Set([...la.keys(), ...sa.keys()]);
  stats.chunks += buckets.size;
  const sub: Counted[] = [];
  for (const b of [...buckets].sort((a, x) => a - x)) {
    const x = la.get(b);
    const y = sa.get(b);
    if (x && y && x.n === y.n && x.sum === y.sum) continue;
    stats.mismatched += 1;
    const lo = b === 0 ? r.lo : (bounds[b - 1] as string);
    const hi = b >= bounds.length ? r.hi : (bounds[b] as string);
    sub.push({ r: { lo, hi }, legacy: x?.n ?? 0, service: y?.n ?? 0 });
  }
  for (const s of sub) {
    // A range that cannot be split further (one key value per boundary) goes straight to the leaf comparison.
    await compare(ctx, s, Math.max(s.legacy, s.service) < n);
  }
}

/** Differing keys per kind, and the first `maxKeys` of them (the rest are counted, not held). */
export interface DiffCounts { 'missing-on-legacy': number; 'missing-on-service': number; different: number }

/**
 * Compares one table. `onDiffs` (repair) receives every differing key, leaf by leaf; the result lists at most
 * `maxKeys` of them (`diffs`), with the true number in `diffCount` and `counts`, so memory, the printed result and the
 * stored run stay bounded however many rows differ.
 */
export async function verifyTable(pools: Pools, t: CompiledTable, options: { chunkRows: number; leafRows: number; maxKeys?: number; recheck?: boolean }, onDiffs?: DiffSink): Promise<VerifyTableResult> {
  const started = Date.now();
  const v = new TableVerifier(t, pools);
  const whole: Range = { lo: null, hi: null };
  const [legacyRows, serviceRows] = await Promise.all([v.count('legacy', whole), v.count('service', whole)]);
  const maxKeys = options.maxKeys ?? DEFAULT_MAX_KEYS;
  const diffs: KeyDiff[] = [];
  const counts: DiffCounts = { 'missing-on-legacy': 0, 'missing-on-service': 0, different: 0 };
  const stats = { chunks: 0, mismatched: 0 };
  const sink: DiffSink = async (batch) => {
    for (const d of batch) {
      counts[d.kind] += 1;
      if (diffs.length < maxKeys) diffs.push(d);
    }
    if (onDiffs) await onDiffs(batch);
  };
  await compare({ v, chunkRows: options.chunkRows, leafRows: options.leafRows, sink, stats, recheck: options.recheck ?? true }, { r: whole, legacy: legacyRows, service: serviceRows });
  const diffCount = counts['missing-on-legacy'] + counts['missing-on-service'] + counts.different;
  return {
    table: t.name, legacyRows, serviceRows, chunks: stats.chunks, mismatchedChunks: stats.mismatched, match: diffCount === 0,
    diffCount, counts, truncated: diffCount > diffs.length, diffs, ms: Date.now() - started,
  };
}

export async function verifyTables(config: SyncConfig, pools: Pools, tables: readonly CompiledTable[], only?: string): Promise<VerifyResult> {
  const started = Date.now();
  const chosen = only === undefined ? tables : tables.filter((t) => t.name === only);
  // A misspelt --table compares nothing, and nothing compared must never read as "identical" (exit 0, status ok).
  if (chosen.length === 0) {
    throw new StranglerError('CLI_USAGE', `sync verify: ${only === undefined ? 'no tables to compare' : `unknown table "${only}"`}; configured: ${tables.map((t) => t.name).join(', ') || 'none'}`);
  }
  const results: VerifyTableResult[] = [];
  for (const t of chosen) results.push(await verifyTable(pools, t, config.verify));
  const result: VerifyResult = { ok: results.every((r) => r.match), at: new Date().toISOString(), ms: Date.now() - started, tables: results };
  await recordVerify(config, pools, result);
  return result;
}

async function recordVerify(config: SyncConfig, pools: Pools, result: VerifyResult): Promise<void> {
  const s = q(config.stateSchema);
  await Promise.all((['legacy', 'service'] as const).map((side) => recordOn(pools[side], s, result)));
}

async function recordOn(pool: Pool, s: string, result: VerifyResult): Promise<void> {
  await pool.query(`INSERT INTO ${s}.verify_runs (ok, result) VALUES ($1, $2::jsonb)`, [result.ok, JSON.stringify(result)]).catch(() => {});
}

export async function lastVerify(config: SyncConfig, pool: Pool): Promise<VerifyResult | null> {
  const r = await pool.query<{ result: VerifyResult }>(`SELECT result FROM ${q(config.stateSchema)}.verify_runs ORDER BY id DESC LIMIT 1`).catch(() => ({ rows: [] as { result: VerifyResult }[] }));
  return r.rows[0]?.result ?? null;
}

/**
 * The last run without its key lists, for `status` and the dashboard (polled every second): the keys stay in the
 * database, only the figures cross the wire.
 */
export async function lastVerifySummary(config: SyncConfig, pool: Pool): Promise<VerifyResult | null> {
  const r = await pool.query<{ result: VerifyResult }>(
    `SELECT result || jsonb_build_object('tables', (SELECT coalesce(jsonb_agg(x - 'diffs' || jsonb_build_object('diffs', '[]'::jsonb,
              'diffCount', coalesce(x->'diffCount', to_jsonb(jsonb_array_length(x->'diffs'))))), '[]'::jsonb)
              FROM jsonb_array_elements(result->'tables') x)) AS result
       FROM ${q(config.stateSchema)}.verify_runs ORDER BY id DESC LIMIT 1`).catch(() => ({ rows: [] as { result: VerifyResult }[] }));
  return r.rows[0]?.result ?? null;
}

/** The on-screen table of a verify result. */
export function formatVerify(result: VerifyResult): string {
  const head = ['table', 'legacy rows', 'service rows', 'chunks', 'mismatched', 'missing L', 'missing S', 'different', 'ms', 'result'];
  const kind = (t: VerifyTableResult, k: DiffKind): string => String(t.counts?.[k] ?? t.diffs.filter((d) => d.kind === k).length);
  const rows = result.tables.map((t) => [
    t.table, String(t.legacyRows), String(t.serviceRows), String(t.chunks), String(t.mismatchedChunks),
    kind(t, 'missing-on-legacy'), kind(t, 'missing-on-service'), kind(t, 'different'), String(t.ms), t.match ? 'identical' : 'DIFFERENT',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] as number)).join('  ');
  const out = [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
  for (const t of result.tables) {
    for (const d of t.diffs.slice(0, 20)) out.push(`  ${t.table} ${d.key}: ${d.kind}`);
    const rest = diffCountOf(t) - Math.min(20, t.diffs.length);
    if (rest > 0) out.push(`  ${t.table}: ${rest} more keys differ${t.truncated ? ` (${t.diffs.length} listed in --json and the stored run, verify.maxKeys)` : ' (all listed in --json)'}`);
  }
  out.push(result.ok ? 'all tables identical' : 'differences found: run `strangler sync repair` to re-sync exactly these keys');
  return out.join('\n');
}
