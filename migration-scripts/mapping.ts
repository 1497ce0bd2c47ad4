/**
 * Declared mappings between a legacy table and a service table, compiled into SQL expressions.
 *
 * Every expression reads a row image `s` (the jsonb from `to_jsonb(row)` on the source side) and yields a value of
 * the target column's type. Images never pass through JavaScript numbers, so numerics, timestamps and large text
 * keep their exact value. The same expressions serve apply (writes), backfill and verify (canonical hashes).
 *
 * Invariants checked by `compileMappings` against the real schemas (fail closed, nothing installed otherwise):
 * - every table and column exists; key columns form a primary key or unique index on each side, are NOT NULL, and
 *   their uniqueness is checked at once (not DEFERRABLE);
 * - key columns map one to one with the identity codec (keys must compare and hash the same on both sides);
 * - each codec fits the column types on both sides; arrays are refused (their jsonb form does not cast back).
 */
import pg from 'pg';
import type { Pool, PoolClient } from 'pg';
import { StranglerError } from '../common/errors.ts';
import type { ColumnMappingConfig, Side, SyncConfig, TableMappingConfig } from './config-schema.ts';
import { otherSide } from './config-schema.ts';

export const q = (ident: string): string => pg.escapeIdentifier(ident);
export const lit = (text: string): string => pg.escapeLiteral(text);

type Family = 'int' | 'dec' | 'text' | 'json' | 'timestamptz' | 'timestamp' | 'date' | 'time' | 'interval' | 'bool' | 'uuid' | 'bytea' | 'other' | 'array';

/** `collatable`: the type takes a collation (text types, domains over them; not an enum). */
export interface ColumnInfo { name: string; type: string; family: Family; notNull: boolean; hasDefault: boolean; collatable: boolean }
/** A unique index over plain columns; `immediate` false for a DEFERRABLE constraint (checked at the end of the statement or transaction). */
export interface UniqueKey { name: string; columns: string[]; immediate: boolean }
export interface TableInfo { schema: string; name: string; columns: Map<string, ColumnInfo>; uniqueKeys: UniqueKey[] }

function familyOf(typname: string, typcategory: string, typtype: string): Family {
  if (typcategory === 'A') return 'array';
  if (typtype === 'e') return 'text';
  switch (typname) {
    case 'int2': case 'int4': case 'int8': return 'int';
    case 'numeric': case 'float4': case 'float8': return 'dec';
    case 'text': case 'varchar': case 'bpchar': case 'name': case 'citext': return 'text';
    case 'json': case 'jsonb': return 'json';
    case 'timestamptz': case 'timestamp': case 'date': case 'interval': case 'bool': case 'uuid': case 'bytea': return typname;
    case 'time': case 'timetz': return 'time';
    default: return 'other';
  }
}

/** Reads the columns and unique keys of every table in `schema`. */
export async function readSchema(db: Pool | PoolClient, schema: string): Promise<Map<string, TableInfo>> {
  const cols = await db.query<{ relname: string; attname: string; type: string; typname: string; typcategory: string; typtype: string; attnotnull: boolean; atthasdef: boolean; collatable: boolean }>(
    `SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS type, t.typname, t.typcategory, t.typtype, a.attnotnull, a.atthasdef, t.typcollation <> 0 AS collatable
       FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_type t ON t.oid = a.atttypid
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped ORDER BY c.relname, a.attnum`, [schema]);
  // Partial and expression indexes do not make their plain columns unique (an expression's column would simply be
  // missing from the list); an invalid one (failed CREATE INDEX CONCURRENTLY) cannot serve ON CONFLICT.
  const keys = await db.query<{ relname: string; index: string; cols: string[]; immediate: boolean }>(
    `SELECT c.relname, coalesce(con.conname, ic.relname) AS index, array_agg(a.attname ORDER BY k.ord)::text[] AS cols, i.indimmediate AS immediate
       FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_class ic ON ic.oid = i.indexrelid
       LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = c.oid AND con.contype IN ('p', 'u')
       CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
      WHERE n.nspname = $1 AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
      GROUP BY c.relname, i.indexrelid, con.conname, ic.relname, i.indimmediate`, [schema]);
  const tables = new Map<string, TableInfo>();
  for (const r of cols.rows) {
    let t = tables.get(r.relname);
    if (!t) { t = { schema, name: r.relname, columns: new Map(), uniqueKeys: [] }; tables.set(r.relname, t); }
    t.columns.set(r.attname, { name: r.attname, type: r.type, family: familyOf(r.typname, r.typcategory, r.typtype), notNull: r.attnotnull, hasDefault: r.atthasdef, collatable: r.collatable });
  }
  for (const k of keys.rows) tables.get(k.relname)?.uniqueKeys.push({ name: k.index, columns: k.cols, immediate: k.immediate });
  return tables;
}

/**
 * One target column and how to compute it from a source image `s`. `fits`, where the value could lose precision in the
 * target type (a smaller numeric scale or timestamp precision, real, time without the zone), is SQL that is true when
 * it does not: `expr` alone would round it without a word. `unfit` is SQL text describing such a value.
 */
export interface ColumnExpr { column: string; expr: string; fits?: string; unfit?: string }

/** A table mapping compiled for both directions. */
export interface CompiledTable {
  readonly name: string;
  readonly config: TableMappingConfig;
  readonly owner: Side;
  table(side: Side): TableInfo;
  /** Qualified table name on one side. */
  qualified(side: Side): string;
  key(side: Side): readonly string[];
  /** Columns written on `target` when applying an image from the other side (only mapped columns). */
  writeExprs(target: Side): readonly ColumnExpr[];
  /**
   * The same columns computed from a row of the other side read in place (row alias `alias`, backfill's staging
   * rows) rather than from a jsonb image: each value is read as the image would hold it, and a column of the same
   * plain type on both sides with the identity codec is copied directly (the same value, without the text round trip).
   */
  rowWriteExprs(target: Side, alias: string): readonly ColumnExpr[];
  /**
   * SQL yielding the image of row variable `row` of `side` in the capture trigger and decode functions: `to_jsonb(row)`,
   * with a float -0 as "-0" (the state schema's row_image, which reads the row without naming a column, so DDL on the
   * table never breaks the application's writes).
   */
  captureImage(side: Side, row: string): string;
  /** SQL yielding the image of row alias `alias` of `side` in a snapshot read (backfill, repair): also marks JSON nulls (JSON_NULLS). */
  readImage(side: Side, alias: string): string;
  /** SQL yielding the canonical key text (`[v1, v2]`) of a row alias on one side. */
  keyText(side: Side, alias: string): string;
  /** SQL yielding the canonical text of a row (service shape) from the jsonb image `img` (or `@alias`) of a row on `side`. */
  canonicalText(side: Side, img: string): string;
}

export function topicFor(config: SyncConfig, source: Side, logical: string): string {
  return config.topics.pattern.replaceAll('{side}', source).replaceAll('{table}', logical);
}

interface Problem { path: string; message: string }

/**
 * The type a value is cast to before it is written into `c`: an explicit cast to varchar(n) or char(n) cuts a longer
 * text without a word, so text is cast without the length and the column's own check refuses a value that does not
 * fit (the event is parked, a backfill chunk fails, verify sees the difference) instead of storing a truncated one.
 */
function castType(c: ColumnInfo): string {
  if (c.family !== 'text') return c.type;
  return c.type.replace(/^character varying\(\d+\)$/, 'character varying').replace(/^character\(\d+\)$/, 'bpchar');
}

/** `valueJson` must already be SQL NULL for SQL NULL (sourceJson of a json column is; a json member is not: NULLIF it). */
function castExpr(valueText: string, valueJson: string, target: ColumnInfo): string {
  if (target.family === 'json') return `(${valueJson})::${target.type}`;
  return `(${valueText})::${castType(target)}`;
}

/** Families a cast can round in silence (a typmod's scale or precision, real, time without its zone). */
const ROUNDING: ReadonlySet<Family> = new Set(['dec', 'timestamptz', 'timestamp', 'time', 'interval']);

/** A column's type without its typmod: what a value is before the column's precision, scale or fields cut it. */
function baseType(c: ColumnInfo): string {
  return c.family === 'interval' ? 'interval' : c.type.replace(/\(\d+(,\d+)?\)/, '');
}

/**
 * SQL true when the value with text `valueText` (of column `src`, or of a json member when null) keeps its value once
 * cast into `dst` (printed back and compared in numeric or the source's own type); null when no cast can round it.
 */
function fitsExpr(valueText: string, dst: ColumnInfo, src: ColumnInfo | null): string | null {
  if (!ROUNDING.has(dst.family) || (src !== null && src.type === dst.type)) return null;
  if (src?.family === 'int' && dst.type.startsWith('numeric')) return null;
  const domain = dst.family === 'dec' ? 'numeric' : baseType(src ?? dst);
  return `(((${valueText})::${castType(dst)})::text::${domain} IS NOT DISTINCT FROM (${valueText})::${domain})`;
}

/** SQL text naming a value that does not fit its target column (the write error and verify's canonical text). */
function unfitText(valueText: string, what: string, into: string): string {
  return `('strangler sync: value ' || (${valueText}) || ${lit(` of ${what} does not fit ${into} without rounding (refused, not stored rounded): give both columns the same type`)})`;
}

/**
 * An expression for writing: a value that does not fit fails its write (the event is parked with the reason, a
 * backfill chunk fails naming it) instead of being stored rounded. PostgreSQL has no raise function in plain SQL:
 * the reason is cast to the column's type, which no such text is valid input for, so the error carries it.
 */
function guarded(e: ColumnExpr, dst: TableInfo): ColumnExpr {
  if (e.fits === undefined || e.unfit === undefined) return e;
  const c = dst.columns.get(e.column) as ColumnInfo;
  return { column: e.column, expr: `(CASE WHEN ${e.fits} THEN ${e.expr} ELSE (${e.unfit})::${castType(c)} END)` };
}

/**
 * How an expression reads source column `col`: from a jsonb image (`img` is a SQL expression), or, when `img` is
 * `@alias`, straight from a row alias with the exact text the image would hold (verify reads rows in place; the
 * per-column to_jsonb is much cheaper than building and probing a whole-row image).
 */
const sourceText = (img: string, c: ColumnInfo) => (img.startsWith('@') ? `(${memberJson(img.slice(1), c)} #>> '{}')` : `(${img}->>${lit(c.name)})`);
/**
 * The jsonb value of source column `c`; for a json/jsonb column SQL NULL when the column is SQL NULL and `'null'`
 * when it holds JSON null. A row read in place tells them apart; an image only through its JSON_NULLS member (see
 * there): without it (every image live capture writes), `null` in an image is read as SQL NULL.
 */
const sourceJson = (img: string, c: ColumnInfo) => {
  if (img.startsWith('@')) return memberJson(img.slice(1), c);
  const v = `(${img}->${lit(c.name)})`;
  return c.family === 'json' ? `(CASE WHEN coalesce(${img}->${lit(JSON_NULLS)} ? ${lit(c.name)}, false) THEN 'null'::jsonb ELSE NULLIF(${v}, 'null'::jsonb) END)` : v;
};

/** float4/float8: the types with a negative zero (numeric has none). */
const isFloat = (c: ColumnInfo): boolean => c.type === 'double precision' || c.type === 'real';

/**
 * SQL true when float column `c` of row alias `alias` holds -0. `to_jsonb` turns a float into a jsonb number, which
 * (a numeric) has no negative zero: -0 would arrive as 0. Images therefore hold -0 as the string "-0", as they hold
 * NaN and ±Infinity (strings in to_jsonb too); `s->>'c'` then casts back to -0.
 */
const negativeZero = (alias: string, c: ColumnInfo) => `(${alias}.${q(c.name)} = 0 AND ${alias}.${q(c.name)}::text = '-0')`;

/** The image member of column `c` of row alias `alias`, as a snapshot image holds it (SQL NULL for SQL NULL). */
function memberJson(alias: string, c: ColumnInfo): string {
  const v = `to_jsonb(${alias}.${q(c.name)})`;
  return isFloat(c) ? `(CASE WHEN ${negativeZero(alias, c)} THEN '"-0"'::jsonb ELSE ${v} END)` : v;
}

/**
 * Image member listing the json/jsonb columns that hold JSON null: in `to_jsonb(row)` both JSON null and SQL NULL
 * are `null`. Snapshot reads (backfill, repair) write it; live capture cannot (its trigger and decode functions read
 * the row without naming columns, so DDL on a synced table never breaks the application's writes), so live sync
 * writes SQL NULL for JSON null, and verify reports the row (see README, limits).
 */
export const JSON_NULLS = '__strangler_json_null';

/** Families whose values survive the image's text round trip unchanged, so a same-type column can be copied as is (json is normalised by the image, so it is not). */
const COPYABLE: ReadonlySet<Family> = new Set(['int', 'dec', 'text', 'timestamptz', 'timestamp', 'date', 'time', 'interval', 'bool', 'uuid']);

function identityCompatible(a: Family, b: Family): boolean {
  if (a === 'array' || b === 'array' || a === 'other' || b === 'other') return a === b && a === 'other';
  if (a === b) return true;
  return (a === 'int' && b === 'dec') || (a === 'dec' && b === 'int');
}

/** `e` with the check that its value of text `valueText` fits `dst` unrounded, where a cast could round it. */
function withFits(e: ColumnExpr, valueText: string, dst: ColumnInfo, src: ColumnInfo | null, what: string, into: string): ColumnExpr {
  const fits = fitsExpr(valueText, dst, src);
  return fits === null ? e : { ...e, fits, unfit: unfitText(valueText, what, into) };
}

/** Expressions writing `target`'s columns of one mapping entry from an image of the other side. */
function entryExprs(entry: ColumnMappingConfig, target: Side, info: { legacy: TableInfo; service: TableInfo }, img: string, at: string, problems: Problem[]): ColumnExpr[] {
  const source = otherSide(target);
  const named = (side: Side, c: ColumnInfo) => `${side} ${info[side].name}.${c.name} ${c.type}`;
  const col = (side: Side, name: string): ColumnInfo | undefined => {
    const c = info[side].columns.get(name);
    if (!c) problems.push({ path: `${at}.${side}`, message: `unknown column "${name}" in ${side} table ${info[side].schema}.${info[side].name} (columns: ${[...info[side].columns.keys()].join(', ')})` });
    return c;
  };
  if (typeof entry.legacy === 'string' && typeof entry.service === 'string') {
    const codec = 'codec' in entry ? entry.codec : 'identity';
    const src = col(source, entry[source] as string);
    const dst = col(target, entry[target] as string);
    if (!src || !dst) return [];
    const l = target === 'legacy' ? dst : src;
    const s = target === 'service' ? dst : src;
    const bad = (why: string) => { problems.push({ path: at, message: `type that cannot map: legacy ${l.name} ${l.type} ↔ service ${s.name} ${s.type} with codec ${codec}: ${why}` }); return []; };
    const t = sourceText(img, src);
    switch (codec) {
      case 'identity':
        if (!identityCompatible(l.family, s.family)) return bad('the types are not compatible (use a codec, or a json/join combine)');
        return [withFits({ column: dst.name, expr: castExpr(t, sourceJson(img, src), dst) }, t, dst, src, named(source, src), named(target, dst))];
      case 'cents-to-decimal':
      case 'decimal-to-cents': {
        const [centsSide, decSide] = codec === 'cents-to-decimal' ? [l, s] : [s, l];
        if (centsSide.family !== 'int' || decSide.family !== 'dec') return bad('needs an integer column of cents and a numeric column');
        const toDecimal = dst === decSide;
        const expr = `(${toDecimal ? `round((${t})::numeric / 100, 2)` : `round((${t})::numeric * 100)`})::${dst.type}`;
        if (toDecimal) return [{ column: dst.name, expr }];
        // Cents are whole: 12.345 would be stored as 1235 cents.
        return [{ column: dst.name, expr, fits: `((${t})::numeric * 100 IS NOT DISTINCT FROM round((${t})::numeric * 100))`, unfit: unfitText(t, named(source, src), `${named(target, dst)} as cents`) }];
      }
      case 'text-to-int':
      case 'int-to-text': {
        const [textSide, intSide] = codec === 'text-to-int' ? [l, s] : [s, l];
        if (textSide.family !== 'text' || intSide.family !== 'int') return bad('needs a text column and an integer column');
        return [{ column: dst.name, expr: `(${t})::${dst.type}` }];
      }
      case 'value-map': {
        if (l.family !== 'text' || s.family !== 'text') return bad('needs text (or enum) columns on both sides');
        const pairs = Object.entries((entry as { values: Record<string, string> }).values).map(([lv, sv]) => (target === 'service' ? [lv, sv] : [sv, lv]));
        const cases = pairs.map(([from, to]) => `WHEN ${lit(from as string)} THEN ${lit(to as string)}`).join(' ');
        return [{ column: dst.name, expr: `(CASE ${t} ${cases} ELSE ${t} END)::${castType(dst)}` }];
      }
    }
  }
  // merged (several legacy → one service) or split (one legacy → several service): the "many" side and the "one" side.
  const combined = entry as { legacy: string | string[]; service: string | string[]; combine: 'json' | 'join'; separator: string };
  const manySide: Side = Array.isArray(combined.legacy) ? 'legacy' : 'service';
  const manyNames = combined[manySide] as string[];
  const oneName = combined[otherSide(manySide)] as string;
  const many = manyNames.map((n) => col(manySide, n));
  const one = col(otherSide(manySide), oneName);
  if (!one || many.some((c) => !c)) return [];
  const parts = many as ColumnInfo[];
  const sep = lit(combined.separator);
  if (combined.combine === 'json' && one.family !== 'json') {
    problems.push({ path: at, message: `type that cannot map: combine "json" needs a json/jsonb column, ${otherSide(manySide)} ${one.name} is ${one.type}` });
    return [];
  }
  if (combined.combine === 'join') {
    const notText = [one, ...parts].find((c) => c.family !== 'text');
    if (notText) { problems.push({ path: at, message: `type that cannot map: combine "join" needs text columns, ${notText.name} is ${notText.type}` }); return []; }
  }
  if (target === otherSide(manySide)) {
    // many → one
    if (combined.combine === 'json') {
      const obj = `jsonb_build_object(${parts.map((p) => `${lit(p.name)}, ${sourceJson(img, p)}`).join(', ')})`;
      return [{ column: one.name, expr: `(${obj})::${one.type}` }];
    }
    const allNull = parts.map((p) => `${sourceText(img, p)} IS NULL`).join(' AND ');
    const joined = `concat_ws(${sep}, ${parts.map((p) => `coalesce(${sourceText(img, p)}, '')`).join(', ')})`;
    return [{ column: one.name, expr: `(CASE WHEN ${allNull} THEN NULL ELSE ${joined} END)::${castType(one)}` }];
  }
  // one → many
  return parts.map((p, i) => {
    if (combined.combine === 'json') {
      const member = `(${sourceJson(img, one)}->>${lit(p.name)})`;
      return withFits({ column: p.name, expr: castExpr(member, `NULLIF(${sourceJson(img, one)}->${lit(p.name)}, 'null'::jsonb)`, p) }, member, p, null, `${named(source, one)} member "${p.name}"`, named(target, p));
    }
    const whole = sourceText(img, one);
    const piece = i < parts.length - 1 ? `split_part(${whole}, ${sep}, ${i + 1})` : `array_to_string((string_to_array(${whole}, ${sep}))[${parts.length}:], ${sep})`;
    return { column: p.name, expr: `(${piece})::${castType(p)}` };
  });
}

/**
 * How a key column's values print in the key text (jsonb): both sides must print one key the same, since versions,
 * tombstones, events and verify's diffs are keyed by that text. Integers print alike whatever their width (also a
 * numeric without a scale), and text alike whatever its limit; char(n) pads to its length, a numeric with a scale
 * prints its zeros; anything else must be the same type (a precision may differ: apply refuses a value it would round).
 */
function keyForm(c: ColumnInfo): string {
  if (c.family === 'int' || /^numeric\(\d+(,0)?\)$/.test(c.type)) return 'integer';
  if (c.family === 'text' && !/^(character|bpchar)(\(\d+\))?$/.test(c.type)) return 'text';
  return c.family === 'dec' ? c.type : baseType(c);
}

/**
 * Why `key` cannot identify the rows of `table` one to one, if it cannot:
 * - it must be the columns of the primary key or of a unique index;
 * - every key column must be NOT NULL: a unique index lets any number of rows hold NULL, and apply's upsert
 *   (ON CONFLICT) never matches a NULL, so each update of such a row would add another row on the other side;
 * - the index must check at once (not DEFERRABLE): a deferred check lets one statement shift key values
 *   (UPDATE … SET id = id + 1), whose row changes then arrive as delete 1, insert 2, delete 2, insert 3 and the other
 *   side loses a row; an immediate check refuses that statement unless no row ever takes a key another still holds.
 */
function keyProblems(side: Side, key: readonly string[], table: TableInfo): string[] {
  const qualified = `${table.schema}.${table.name}`;
  const sorted = [...key].sort().join(',');
  const matching = table.uniqueKeys.filter((u) => [...u.columns].sort().join(',') === sorted);
  if (matching.length === 0) return [`key (${key.join(', ')}) of ${side} table ${qualified} is not its primary key or a unique index`];
  const out: string[] = [];
  for (const k of key) {
    if (!table.columns.get(k)?.notNull) {
      out.push(`key column "${k}" of ${side} table ${qualified} allows NULL: its unique index lets several rows hold NULL there, and sync cannot tell them apart (every update of such a row would add a row on the other side); run ALTER TABLE ${qualified} ALTER COLUMN ${q(k)} SET NOT NULL, or choose the primary key as the key`);
    }
  }
  if (!matching.some((u) => u.immediate)) {
    const names = matching.map((u) => `"${u.name}"`).join(', ');
    out.push(`key (${key.join(', ')}) of ${side} table ${qualified} is unique only through the DEFERRABLE constraint ${names}: a statement that shifts key values (UPDATE … SET ${key[0] as string} = ${key[0] as string} + 1) is then captured as deletes and inserts in an order that loses rows on the other side; re-create the constraint NOT DEFERRABLE, or add a unique index that checks at once (CREATE UNIQUE INDEX CONCURRENTLY ON ${qualified} (${key.map(q).join(', ')}))`);
  }
  return out;
}

/** Validates every table mapping against the real schemas and compiles it. Throws SYNC_MAPPING_INVALID listing every problem. */
export function compileMappings(config: SyncConfig, schemas: { legacy: Map<string, TableInfo>; service: Map<string, TableInfo> }): CompiledTable[] {
  const problems: Problem[] = [];
  const out: CompiledTable[] = [];
  const names = new Set<string>();
  config.tables.forEach((t, i) => {
    const at = `sync.tables[${i}]`;
    if (names.has(t.name)) problems.push({ path: `${at}.name`, message: `duplicate logical table name "${t.name}"` });
    names.add(t.name);
    const info = {} as { legacy: TableInfo; service: TableInfo };
    for (const side of ['legacy', 'service'] as const) {
      const found = schemas[side].get(t[side].table);
      if (!found) {
        problems.push({ path: `${at}.${side}.table`, message: `unknown table "${t[side].table}" in the ${side} database schema "${config.databases[side].schema}" (tables: ${[...schemas[side].keys()].join(', ') || 'none'})` });
        continue;
      }
      info[side] = found;
      for (const k of t[side].key) if (!found.columns.has(k)) problems.push({ path: `${at}.${side}.key`, message: `unknown column "${k}" in ${side} table ${found.name}` });
      if (t[side].key.every((k) => found.columns.has(k))) keyProblems(side, t[side].key, found).forEach((message) => problems.push({ path: `${at}.${side}.key`, message }));
    }
    if (!info.legacy || !info.service) return;
    if (t.legacy.key.length !== t.service.key.length) {
      problems.push({ path: at, message: 'legacy and service keys must have the same number of columns' });
      return;
    }
    t.legacy.key.forEach((lk, j) => {
      const sk = t.service.key[j] as string;
      const entry = t.columns.find((c) => c.legacy === lk && c.service === sk);
      if (!entry || ('codec' in entry && entry.codec !== 'identity')) problems.push({ path: `${at}.columns`, message: `key column legacy ${lk} ↔ service ${sk} must be mapped one to one with codec identity` });
      const [lc, sc] = [info.legacy.columns.get(lk), info.service.columns.get(sk)];
      if (lc && sc && keyForm(lc) !== keyForm(sc)) {
        problems.push({ path: `${at}.columns`, message: `key column legacy ${lk} ${lc.type} ↔ service ${sk} ${sc.type}: the two types print one key differently in the key text sync names rows by (char(n) keeps its padding, a numeric with a scale its zeros), so each side would keep the key's versions and tombstones under another name (a change on one side would add a second row on the other, and conflicts would go unseen); give both key columns the same type` });
      }
    });
    const before = problems.length;
    const exprs = {
      legacy: t.columns.flatMap((c, j) => entryExprs(c, 'legacy', info, 's', `${at}.columns[${j}]`, problems)).map((e) => guarded(e, info.legacy)),
      service: t.columns.flatMap((c, j) => entryExprs(c, 'service', info, 's', `${at}.columns[${j}]`, [])).map((e) => guarded(e, info.service)),
    };
    if (problems.length > before) return;
    for (const side of ['legacy', 'service'] as const) {
      const mapped = new Set(exprs[side].map((e) => e.column));
      for (const c of info[side].columns.values()) {
        if (c.family === 'array' && mapped.has(c.name)) problems.push({ path: at, message: `type that cannot map: array column ${side} ${info[side].name}.${c.name} (${c.type}) is not supported` });
      }
    }
    for (const side of ['legacy', 'service'] as const) {
      if (info[side].columns.has(JSON_NULLS)) problems.push({ path: `${at}.${side}.table`, message: `${side} table ${info[side].name} has a column named "${JSON_NULLS}", a name sync reserves in its row images; rename the column` });
    }
    const owner = t.owner ?? (t.route === undefined ? undefined : config.ownership.routes[t.route]) ?? config.ownership.default;
    const schemaOf = (side: Side) => config.databases[side].schema;
    const keyText = (side: Side, alias: string) => `jsonb_build_array(${t[side].key.map((k) => `${alias}.${q(k)}`).join(', ')})::text`;
    // A one-to-one identity entry whose column has the same type on both sides: rows read in place (verify's
    // canonical text, backfill's staged rows) can use the value as it is instead of the image's text and a cast.
    const same = (c: ColumnMappingConfig): c is ColumnMappingConfig & { legacy: string; service: string } =>
      typeof c.legacy === 'string' && typeof c.service === 'string' && (!('codec' in c) || c.codec === 'identity')
      && info.legacy.columns.get(c.legacy)?.type === info.service.columns.get(c.service)?.type;
    // Canonical text: the service-shaped row, each value cast to the service type (json canonicalised as jsonb).
    const canonicalCols = (side: Side, img: string) => {
      const svc = info.service;
      const direct = img.startsWith('@') ? img.slice(1) : null;
      // Reading rows in place (verify): a column whose type is the same on both sides is printed as it is, with no
      // round trip through text and a cast (the costly part on a million rows). Anything else goes through the
      // same expressions apply writes with, so the canonical text is what apply would produce.
      // JSON null stays apart from SQL NULL: a copy that turned one into the other is reported, not called identical.
      /** Column `col` of row alias `alias` read in place, as jsonb when service column `svcCol` is json or jsonb. */
      const inPlace = (alias: string, col: string, svcCol = col) => (svc.columns.get(svcCol)?.family === 'json' ? `${alias}.${q(col)}::jsonb` : `${alias}.${q(col)}`);
      let list: ColumnExpr[];
      if (side === 'service') {
        list = [...new Set(exprs.service.map((e) => e.column))].map((c) => {
          const col = svc.columns.get(c) as ColumnInfo;
          return { column: c, expr: direct ? inPlace(direct, c) : castExpr(sourceText(img, col), sourceJson(img, col), col) };
        });
      } else {
        list = t.columns.flatMap((c, j) => {
          if (direct && same(c)) return [{ column: c.service, expr: inPlace(direct, c.legacy, c.service) }];
          return entryExprs(c, 'service', info, img, `${at}.columns[${j}]`, []);
        });
      }
      return list.sort((a, b) => (a.column < b.column ? -1 : 1)).map((e) => {
        const c = svc.columns.get(e.column);
        // A number is printed without trailing zeros: 2.5 synced into a numeric(20,6) column reads 2.500000 there,
        // the same value, while the service's plain numeric column prints 2.5.
        const text = c?.type.startsWith('numeric') ? `quote_nullable(trim_scale((${e.expr})::numeric)::text)` : `quote_nullable((${e.expr})${c?.family === 'json' ? '::jsonb' : ''}::text)`;
        // A legacy value the service column would round is not equal to any value the service holds (the rounded
        // one included): apply refuses to write it, and verify must not call the rows identical.
        return e.fits === undefined || e.unfit === undefined ? text : `(CASE WHEN ${e.fits} THEN ${text} ELSE ${e.unfit} END)`;
      });
    };
    out.push({
      name: t.name,
      config: t,
      owner,
      table: (side) => info[side],
      qualified: (side) => `${q(schemaOf(side))}.${q(t[side].table)}`,
      key: (side) => t[side].key,
      writeExprs: (target) => exprs[target],
      rowWriteExprs: (target, alias) => t.columns.flatMap((c, j) => {
        if (same(c)) {
          const dc = info[target].columns.get(c[target]);
          if (dc && COPYABLE.has(dc.family)) return [{ column: dc.name, expr: `(${alias}.${q(c[otherSide(target)])})::${dc.type}` }];
        }
        return entryExprs(c, target, info, `@${alias}`, `${at}.columns[${j}]`, []).map((e) => guarded(e, info[target]));
      }),
      captureImage: (side, row) => {
        const floats = [...info[side].columns.values()].filter(isFloat).map((c) => lit(c.name));
        return floats.length === 0 ? `to_jsonb(${row})` : `${q(config.stateSchema)}.row_image(${row}, ARRAY[${floats.join(', ')}]::text[])`;
      },
      readImage: (side, alias) => {
        const cols = [...info[side].columns.values()];
        const zeros = cols.filter(isFloat).map((c) => `${lit(c.name)}, CASE WHEN ${negativeZero(alias, c)} THEN '"-0"'::jsonb END`);
        const nulls = cols.filter((c) => c.family === 'json').map((c) => `CASE WHEN ${c.type === 'json' ? 'json_typeof' : 'jsonb_typeof'}(${alias}.${q(c.name)}) = 'null' THEN ${lit(c.name)} END`);
        if (zeros.length === 0 && nulls.length === 0) return `to_jsonb(${alias})`;
        const members = [...zeros, ...(nulls.length === 0 ? [] : [`${lit(JSON_NULLS)}, to_jsonb(nullif(array_remove(ARRAY[${nulls.join(', ')}]::text[], NULL), '{}'))`])];
        // Only the members that apply (jsonb_strip_nulls drops the others; every value here is a scalar or a flat array).
        return `(to_jsonb(${alias}) || jsonb_strip_nulls(jsonb_build_object(${members.join(', ')})))`;
      },
      keyText,
      canonicalText: (side, img) => `concat_ws('|', ${canonicalCols(side, img).join(', ')})`,
    });
  });
  if (problems.length > 0) {
    throw new StranglerError('SYNC_MAPPING_INVALID', `sync mapping does not fit the databases:\n${problems.map((p) => `  - ${p.path}: ${p.message}`).join('\n')}`, { details: { problems } });
  }
  return out;
}
