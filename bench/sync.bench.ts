/**
 * Data sync throughput on this machine (embedded PostgreSQL with wal_level=logical, the dev Kafka broker
 * in-process), in both capture modes side by side (trigger, then logical, per figure, so drifting load on a shared
 * machine hits both alike):
 *   1. backfill rows/s for SYNC_BENCH_ROWS (default 1M) legacy rows → service, through the mapping and the apply path;
 *   2. verify time for those rows once identical (count + hash per chunk on both sides in parallel);
 *   3. capture: the source's own insert of SYNC_BENCH_APPLY_EVENTS rows with capture installed (the trigger's cost
 *      lands here), the relay's decoding of the slot into the changelog (logical only), then assign + read;
 *   4. apply events/s: captured changes applied in batches straight from memory (the apply transaction alone; in
 *      logical mode that includes decoding the target's slot after each batch, timed on its own);
 *   5. end-to-end lag p50/p99 (commit on legacy → committed on service) at a steady 1,000 writes/s through the relay,
 *      Kafka and the apply consumer group.
 * Targets from the issue are printed beside the figures; benchmarks measure and never fail.
 */
import { performance } from 'node:perf_hooks';
import { cpus, loadavg } from 'node:os';
import type { Bench } from './run.ts';
import { LOGICAL_SERVER_FLAGS, startSyncFixture, type SyncFixture } from '../test/unit/sync/fixture.ts';
import { compileFromDatabases, installCapture, startRelay, uninstallCapture } from '../legacy-adapter/capture/index.ts';
import { ChangeRelay, type OutgoingMessage } from '../legacy-adapter/capture/relay.ts';
import { LogicalDecoder } from '../legacy-adapter/capture/logical.ts';
import { Applier } from '../migration-scripts/apply.ts';
import { runBackfill } from '../migration-scripts/backfill.ts';
import { verifyTables } from '../migration-scripts/verify.ts';
import { ApplyWorker, createKafka } from '../migration-scripts/kafka.ts';
import { isoToMicros, type ConsumedEvent } from '../migration-scripts/event.ts';
import type { Pools } from '../migration-scripts/db.ts';
import type { SyncConfig } from '../migration-scripts/config-schema.ts';
import type { CompiledTable } from '../migration-scripts/mapping.ts';
import { startKafkaBroker, type KafkaBroker } from '../devstack/kafka/index.ts';

const ROWS = Number(process.env.SYNC_BENCH_ROWS ?? 1_000_000);
const APPLY_EVENTS = Number(process.env.SYNC_BENCH_APPLY_EVENTS ?? 100_000);
const LAG_SECONDS = Number(process.env.SYNC_BENCH_LAG_SECONDS ?? 10);
const WRITES_PER_SECOND = 1_000;
const APPLY_BATCH = 5_000;

type Mode = 'trigger' | 'logical';
const MODES: readonly Mode[] = ['trigger', 'logical'];

const fmt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-');
const pct = (xs: number[], p: number) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN; };
const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

/** Apply with its per-batch decode of the target's slot (logical mode) timed apart from the rest. */
class TimedApplier extends Applier {
  readonly decodeMs: number[] = [];
  override async decodeLocalWrites(): Promise<void> {
    const t0 = performance.now();
    await super.decodeLocalWrites();
    this.decodeMs.push(performance.now() - t0);
  }
}

interface Pair { config: SyncConfig; pools: Pools; tables: CompiledTable[] }

/** A fresh database pair in `mode` with capture installed on both sides (topics and consumer group per mode). */
async function installedPair(fx: SyncFixture, name: string, mode: Mode, capture: Record<string, unknown> = {}, before?: (pools: Pools) => Promise<void>): Promise<Pair> {
  const { config, pools } = await fx.freshPair(`${name}_${mode}`, {
    capture: { mode, ...capture },
    topics: { pattern: `${name}_${mode}.{side}.{table}`, partitions: 1 },
    apply: { groupIdPrefix: `${name}-${mode}` },
  });
  if (before) await before(pools);
  const tables = await compileFromDatabases(config, pools);
  await installCapture(config, pools, 'legacy', tables);
  await installCapture(config, pools, 'service', tables);
  return { config, pools, tables };
}

/** Drops the pair's slots (logical mode), so they stop holding WAL for the rest of the run. */
async function release(p: Pair): Promise<void> {
  await uninstallCapture(p.config, p.pools, 'legacy');
  await uninstallCapture(p.config, p.pools, 'service');
}

interface BackfillFigures { rate: number; verifyS: number; identical: boolean }

async function backfillAndVerify(fx: SyncFixture, mode: Mode): Promise<BackfillFigures> {
  let t0 = performance.now();
  const p = await installedPair(fx, 'bench', mode, {}, async (pools) => {
    await pools.legacy.query(`INSERT INTO items (id, name, price_cents, body, data, happened_at, first_name, last_name, amount, flag)
      SELECT g, 'item ' || g, g % 100000, 'body of item ' || g, jsonb_build_object('g', g, 'tag', 'x'), timestamptz '2024-01-01' + g * interval '1 second',
             'First' || (g % 100), 'Last' || (g % 1000), g / 7.0, g % 2 = 0 FROM generate_series(1, ${ROWS}) g`);
    await pools.legacy.query('VACUUM ANALYZE items');
  });
  console.log(`[${mode}] loaded ${fmt(ROWS)} legacy rows in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  t0 = performance.now();
  const bf = await runBackfill({ config: p.config, pools: p.pools, tables: p.tables, table: 'items', source: 'legacy', chunkRows: 5_000, maxLagEvents: 0 });
  const rate = (bf.rows * 1000) / (performance.now() - t0);
  console.log(`[${mode}] backfill ${fmt(rate)} rows/s`);
  await p.pools.service.query('VACUUM ANALYZE catalog_items');
  t0 = performance.now();
  const v = await verifyTables({ ...p.config, verify: { chunkRows: 50_000, leafRows: 2_000 } }, p.pools, p.tables, 'items');
  const verifyS = (performance.now() - t0) / 1000;
  await release(p);
  return { rate, verifyS, identical: v.ok };
}

interface ApplyFigures {
  sourceInsertRate: number;
  decodeRate: number;
  relayRate: number;
  applyRate: number;
  /** Logical mode: time in apply's decode of its target per batch, and its share of the apply time. */
  decodeMsPerBatch: number;
  decodeShare: number;
}

async function captureAndApply(fx: SyncFixture, mode: Mode): Promise<ApplyFigures> {
  const p = await installedPair(fx, 'benchapply', mode);
  // The application's own write, with capture installed: trigger mode pays for its changelog rows here.
  let t0 = performance.now();
  await p.pools.legacy.query(`INSERT INTO items (id, name, price_cents, data, happened_at, amount) SELECT g, 'n' || g, g, jsonb_build_object('g', g), now(), g / 3.0 FROM generate_series(1, ${APPLY_EVENTS}) g`);
  const sourceInsertRate = (APPLY_EVENTS * 1000) / (performance.now() - t0);
  // Logical mode: the relay's decoder step (slot → changelog), measured on its own before the relay runs.
  let decodeRate = NaN;
  if (mode === 'logical') {
    const decoder = new LogicalDecoder({ config: p.config, pool: p.pools.legacy, side: 'legacy', batchSize: 10_000 });
    t0 = performance.now();
    const n = await decoder.catchUp(600_000);
    decodeRate = (n * 1000) / (performance.now() - t0);
  }
  const captured: OutgoingMessage[] = [];
  const relay = new ChangeRelay({ config: p.config, pool: p.pools.legacy, side: 'legacy', sink: { publish: async (m) => { captured.push(...m); } }, batchSize: 10_000 });
  await relay.lock();
  t0 = performance.now();
  while ((await relay.step()) > 0) { /* drain */ }
  const relayRate = (captured.length * 1000) / (performance.now() - t0);
  await relay.stop();
  if (captured.length !== APPLY_EVENTS) console.log(`[${mode}] WARNING: relayed ${captured.length} of ${APPLY_EVENTS} events`);
  const applier = new TimedApplier({ pool: p.pools.service, config: p.config, target: 'service', tables: p.tables });
  const events: ConsumedEvent[] = captured.map((m, i) => ({ topic: m.topic, partition: 0, offset: String(i), value: m.value }));
  // Decoding re-reads the server's WAL from the slot's restart point: how far behind it was after each batch.
  const restartBehindMb: number[] = [];
  let applyMs = 0;
  for (let i = 0; i < events.length; i += APPLY_BATCH) {
    t0 = performance.now();
    await applier.applyBatch(events.slice(i, i + APPLY_BATCH));
    applyMs += performance.now() - t0;
    if (mode === 'logical') {
      const r = await p.pools.service.query<{ mb: number }>(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8 / 1e6 AS mb FROM pg_replication_slots WHERE database = current_database()`);
      restartBehindMb.push(r.rows[0]?.mb ?? NaN);
    }
  }
  if (mode === 'logical') {
    const d = applier.decodeMs;
    console.log(`[${mode}] apply: decode of the target per batch p50 ${pct(d, 50).toFixed(0)} ms, max ${Math.max(...d).toFixed(0)} ms; `
      + `slot restart point behind after a batch p50 ${pct(restartBehindMb, 50).toFixed(1)} MB, max ${Math.max(...restartBehindMb).toFixed(1)} MB`);
  }
  await release(p);
  return {
    sourceInsertRate, decodeRate, relayRate,
    applyRate: (events.length * 1000) / applyMs,
    decodeMsPerBatch: mode === 'logical' ? sum(applier.decodeMs) / Math.max(1, applier.decodeMs.length) : NaN,
    decodeShare: mode === 'logical' ? sum(applier.decodeMs) / applyMs : NaN,
  };
}

interface LagFigures { p50: number; p99: number; achieved: number; samples: number }

async function endToEndLag(fx: SyncFixture, broker: KafkaBroker, mode: Mode): Promise<LagFigures> {
  const p = await installedPair(fx, 'benchlag', mode, { relayBatchSize: 2_000, relayPollMs: 5 });
  const kcfg = { brokers: [`127.0.0.1:${broker.port}`], clientId: `bench-${mode}`, connectionTimeoutMs: 3_000, requestTimeoutMs: 30_000 };
  const running = await startRelay({ config: p.config, kafka: kcfg, pools: p.pools, side: 'legacy' });
  const lags: number[] = [];
  let measuring = false;
  const worker = new ApplyWorker({
    config: p.config, kafka: createKafka(kcfg, `bench-apply-${mode}`), source: 'legacy', tables: p.tables, sessionTimeoutMs: 3_000,
    applier: new Applier({ pool: p.pools.service, config: p.config, target: 'service', tables: p.tables }),
    onApplied: (evs) => {
      if (!measuring) return;
      const now = Date.now() * 1000;
      for (const e of evs) lags.push((now - isoToMicros((JSON.parse(e.value) as { commitTs: string }).commitTs)) / 1000);
    },
  });
  let sent = 0;
  let achieved: number;
  try {
    await worker.start();
    // warm-up: one write must arrive before measuring
    await p.pools.legacy.query(`INSERT INTO items (id, name) VALUES (0, 'warm')`);
    for (let i = 0; i < 400; i++) {
      const r = await p.pools.service.query('SELECT 1 FROM catalog_items WHERE item_id = 0');
      if (r.rowCount) break;
      await sleep(50);
    }
    measuring = true;
    const start = performance.now();
    let id = 1;
    while (performance.now() - start < LAG_SECONDS * 1000) {
      const due = Math.floor(((performance.now() - start) / 1000) * WRITES_PER_SECOND);
      const batch: Promise<unknown>[] = [];
      while (sent < due) {
        const k = id++;
        batch.push(p.pools.legacy.query(`INSERT INTO items (id, name, price_cents) VALUES ($1, 'w', $2)`, [k, k]));
        sent += 1;
      }
      await Promise.all(batch);
      await sleep(5);
    }
    achieved = (sent * 1000) / (performance.now() - start);
    for (let i = 0; i < 400 && lags.length < sent; i++) await sleep(50);
    measuring = false;
  } finally {
    await worker.stop();
    await running.stop();
  }
  await release(p);
  if (lags.length < sent) console.log(`[${mode}] WARNING: ${lags.length} of ${sent} writes arrived`);
  return { p50: pct(lags, 50), p99: pct(lags, 99), achieved, samples: lags.length };
}

/** One line: the figure, its value per mode, the target and whether each mode met it ('' when there is no target). */
function line(what: string, values: Record<Mode, string>, target = '-', met?: Record<Mode, boolean>): void {
  const verdict = met ? MODES.map((m) => (met[m] ? 'met' : 'MISSED')).join(' / ') : '';
  console.log(`${what.padEnd(52)} ${values.trigger.padStart(12)} ${values.logical.padStart(12)}   ${target.padEnd(11)} ${verdict}`);
}

const bench: Bench = {
  name: 'data sync: backfill, verify, apply, end-to-end lag (capture modes trigger and logical)',
  async run() {
    // Both modes run on one server, so it must allow logical decoding.
    const fx = await startSyncFixture({ serverFlags: LOGICAL_SERVER_FLAGS });
    try {
      const bf = {} as Record<Mode, BackfillFigures>;
      for (const m of MODES) bf[m] = await backfillAndVerify(fx, m);
      const ap = {} as Record<Mode, ApplyFigures>;
      for (const m of MODES) ap[m] = await captureAndApply(fx, m);
      const lag = {} as Record<Mode, LagFigures>;
      const broker = await startKafkaBroker({ host: '127.0.0.1', port: 0, groupMinSessionTimeoutMs: 200, initialRebalanceDelayMs: 0 });
      try {
        for (const m of MODES) lag[m] = await endToEndLag(fx, broker, m);
      } finally {
        await broker.close();
      }

      const each = <T>(f: (m: Mode) => T) => ({ trigger: f('trigger'), logical: f('logical') });
      console.log('');
      console.log(`${'figure'.padEnd(52)} ${'trigger'.padStart(12)} ${'logical'.padStart(12)}   ${'target'.padEnd(11)} trigger / logical`);
      line(`backfill ${fmt(ROWS)} rows (rows/s)`, each((m) => fmt(bf[m].rate)), '≥ 100,000', each((m) => bf[m].rate >= 100_000));
      line(`verify ${fmt(ROWS)} identical rows (s)`, each((m) => `${bf[m].verifyS.toFixed(2)}${bf[m].identical ? '' : ' DIFF!'}`), '≤ 5 s', each((m) => bf[m].verifyS <= 5 && bf[m].identical));
      line(`apply, transaction alone (events/s)`, each((m) => fmt(ap[m].applyRate)), '≥ 20,000', each((m) => ap[m].applyRate >= 20_000));
      line(`  of which decoding the target after each batch`, each((m) => (m === 'logical' ? `${ap[m].decodeMsPerBatch.toFixed(0)} ms, ${(ap[m].decodeShare * 100).toFixed(0)}%` : '-')));
      line(`source insert of ${fmt(APPLY_EVENTS)} rows, capture on (rows/s)`, each((m) => fmt(ap[m].sourceInsertRate)));
      line(`relay: decode slot → changelog (events/s)`, each((m) => fmt(ap[m].decodeRate)));
      line(`relay: assign + read (events/s, no Kafka)`, each((m) => fmt(ap[m].relayRate)));
      line(`end-to-end lag p50 at 1,000 writes/s (ms)`, each((m) => lag[m].p50.toFixed(1)));
      line(`end-to-end lag p99 at 1,000 writes/s (ms)`, each((m) => lag[m].p99.toFixed(1)), '≤ 500 ms', each((m) => lag[m].p99 <= 500));
      console.log(`(writes/s achieved: trigger ${fmt(lag.trigger.achieved)}, logical ${fmt(lag.logical.achieved)}; lag samples ${lag.trigger.samples} / ${lag.logical.samples}; `
        + `apply batches of ${fmt(APPLY_BATCH)}; machine: ${cpus().length} cores, load ${loadavg()[0]?.toFixed(2)})`);
    } finally {
      await fx.stop();
    }
  },
};

export default bench;
