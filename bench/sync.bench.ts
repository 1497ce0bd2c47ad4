/**
 * Data sync throughput on this machine (embedded PostgreSQL, the dev Kafka broker in-process):
 *   1. backfill rows/s for SYNC_BENCH_ROWS (default 1M) legacy rows → service, through the mapping and the apply path;
 *   2. verify time for those rows once identical (count + hash per chunk on both sides in parallel);
 *   3. apply events/s: captured changes applied in batches straight from memory (the apply transaction alone);
 *   4. end-to-end lag p50/p99 (commit on legacy → committed on service) at a steady 1,000 writes/s through the relay,
 *      Kafka and the apply consumer group.
 * Targets from the issue are printed beside the figures; benchmarks measure and never fail.
 */
import { performance } from 'node:perf_hooks';
import type { Bench } from './run.ts';
import { startSyncFixture } from '../test/unit/sync/fixture.ts';
import { compileFromDatabases, installCapture, startRelay } from '../legacy-adapter/capture/index.ts';
import { ChangeRelay, type OutgoingMessage } from '../legacy-adapter/capture/relay.ts';
import { Applier } from '../migration-scripts/apply.ts';
import { runBackfill } from '../migration-scripts/backfill.ts';
import { verifyTables } from '../migration-scripts/verify.ts';
import { ApplyWorker, createKafka } from '../migration-scripts/kafka.ts';
import { isoToMicros, type ConsumedEvent } from '../migration-scripts/event.ts';
import { startKafkaBroker } from '../devstack/kafka/index.ts';

const ROWS = Number(process.env.SYNC_BENCH_ROWS ?? 1_000_000);
const APPLY_EVENTS = Number(process.env.SYNC_BENCH_APPLY_EVENTS ?? 100_000);
const LAG_SECONDS = Number(process.env.SYNC_BENCH_LAG_SECONDS ?? 10);
const WRITES_PER_SECOND = 1_000;

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const pct = (xs: number[], p: number) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN; };
const row = (what: string, value: string, target: string, ok: boolean) => console.log(`${what.padEnd(44)} ${value.padStart(16)}   target ${target.padEnd(12)} ${ok ? 'met' : 'MISSED'}`);

const bench: Bench = {
  name: 'data sync: backfill, verify, apply, end-to-end lag',
  async run() {
    const fx = await startSyncFixture();
    try {
      // 1 + 2: backfill and verify of ROWS rows.
      const { config, pools } = await fx.freshPair('bench');
      let t0 = performance.now();
      await pools.legacy.query(`INSERT INTO items (id, name, price_cents, body, data, happened_at, first_name, last_name, amount, flag)
        SELECT g, 'item ' || g, g % 100000, 'body of item ' || g, jsonb_build_object('g', g, 'tag', 'x'), timestamptz '2024-01-01' + g * interval '1 second',
               'First' || (g % 100), 'Last' || (g % 1000), g / 7.0, g % 2 = 0 FROM generate_series(1, ${ROWS}) g`);
      await pools.legacy.query('VACUUM ANALYZE items');
      console.log(`loaded ${fmt(ROWS)} legacy rows in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      const tables = await compileFromDatabases(config, pools);
      await installCapture(config, pools, 'legacy', tables);
      await installCapture(config, pools, 'service', tables);
      t0 = performance.now();
      const bf = await runBackfill({ config, pools, tables, table: 'items', source: 'legacy', chunkRows: 5_000, maxLagEvents: 0 });
      const bfRate = (bf.rows * 1000) / (performance.now() - t0);
      await pools.service.query('VACUUM ANALYZE catalog_items');
      t0 = performance.now();
      const v = await verifyTables({ ...config, verify: { chunkRows: 50_000, leafRows: 2_000 } }, pools, tables, 'items');
      const verifyS = (performance.now() - t0) / 1000;

      // 3: apply events/s, the apply transaction alone (events captured on legacy, relayed into memory).
      const { config: c2, pools: p2 } = await fx.freshPair('benchapply');
      const t2 = await compileFromDatabases(c2, p2);
      await installCapture(c2, p2, 'legacy', t2);
      await installCapture(c2, p2, 'service', t2);
      await p2.legacy.query(`INSERT INTO items (id, name, price_cents, data, happened_at, amount) SELECT g, 'n' || g, g, jsonb_build_object('g', g), now(), g / 3.0 FROM generate_series(1, ${APPLY_EVENTS}) g`);
      const captured: OutgoingMessage[] = [];
      const relay = new ChangeRelay({ config: c2, pool: p2.legacy, side: 'legacy', sink: { publish: async (m) => { captured.push(...m); } }, batchSize: 10_000 });
      await relay.lock();
      t0 = performance.now();
      while ((await relay.step()) > 0) { /* drain */ }
      const relayRate = (captured.length * 1000) / (performance.now() - t0);
      await relay.stop();
      const applier = new Applier({ pool: p2.service, config: c2, target: 'service', tables: t2 });
      const events: ConsumedEvent[] = captured.map((m, i) => ({ topic: m.topic, partition: 0, offset: String(i), value: m.value }));
      t0 = performance.now();
      for (let i = 0; i < events.length; i += 5_000) await applier.applyBatch(events.slice(i, i + 5_000));
      const applyRate = (events.length * 1000) / (performance.now() - t0);

      // 4: end-to-end lag at a steady 1,000 writes/s through Kafka.
      const broker = await startKafkaBroker({ host: '127.0.0.1', port: 0, groupMinSessionTimeoutMs: 200, initialRebalanceDelayMs: 0 });
      const lags: number[] = [];
      let lagP50 = NaN;
      let lagP99 = NaN;
      let achieved = 0;
      try {
        const { config: c3, pools: p3 } = await fx.freshPair('benchlag', { capture: { mode: 'trigger', relayBatchSize: 2_000, relayPollMs: 5 } });
        const kcfg = { brokers: [`127.0.0.1:${broker.port}`], clientId: 'bench', connectionTimeoutMs: 3_000, requestTimeoutMs: 30_000 };
        const t3 = await compileFromDatabases(c3, p3);
        await installCapture(c3, p3, 'legacy', t3);
        await installCapture(c3, p3, 'service', t3);
        const running = await startRelay({ config: c3, kafka: kcfg, pools: p3, side: 'legacy' });
        let measuring = false;
        const worker = new ApplyWorker({
          config: c3, kafka: createKafka(kcfg, 'bench-apply'), source: 'legacy', tables: t3, sessionTimeoutMs: 3_000,
          applier: new Applier({ pool: p3.service, config: c3, target: 'service', tables: t3 }),
          onApplied: (evs) => {
            if (!measuring) return;
            const now = Date.now() * 1000;
            for (const e of evs) lags.push((now - isoToMicros((JSON.parse(e.value) as { commitTs: string }).commitTs)) / 1000);
          },
        });
        await worker.start();
        // warm-up: one write must arrive before measuring
        await p3.legacy.query(`INSERT INTO items (id, name) VALUES (0, 'warm')`);
        for (let i = 0; i < 200; i++) {
          const r = await p3.service.query('SELECT 1 FROM catalog_items WHERE item_id = 0');
          if (r.rowCount) break;
          await new Promise((res) => setTimeout(res, 50));
        }
        measuring = true;
        const start = performance.now();
        let sent = 0;
        let id = 1;
        while (performance.now() - start < LAG_SECONDS * 1000) {
          const due = Math.floor(((performance.now() - start) / 1000) * WRITES_PER_SECOND);
          const batch: Promise<unknown>[] = [];
          while (sent < due) {
            const k = id++;
            batch.push(p3.legacy.query(`INSERT INTO items (id, name, price_cents) VALUES ($1, 'w', $2)`, [k, k]));
            sent += 1;
          }
          await Promise.all(batch);
          await new Promise((res) => setTimeout(res, 5));
        }
        achieved = (sent * 1000) / (performance.now() - start);
        for (let i = 0; i < 200 && lags.length < sent; i++) await new Promise((res) => setTimeout(res, 50));
        measuring = false;
        lagP50 = pct(lags, 50);
        lagP99 = pct(lags, 99);
        await worker.stop();
        await running.stop();
      } finally {
        await broker.close();
      }

      console.log('');
      row(`backfill ${fmt(ROWS)} rows (rows/s)`, fmt(bfRate), '≥ 100,000', bfRate >= 100_000);
      row(`verify ${fmt(ROWS)} identical rows (s)`, `${verifyS.toFixed(2)}${v.ok ? '' : ' (DIFF!)'}`, '≤ 5 s', verifyS <= 5 && v.ok);
      row(`apply, transaction alone (events/s)`, fmt(applyRate), '≥ 20,000', applyRate >= 20_000);
      row(`relay: assign + read (events/s, no Kafka)`, fmt(relayRate), '-', true);
      row(`end-to-end lag p50 at ${fmt(achieved)} writes/s (ms)`, lagP50.toFixed(1), '-', true);
      row(`end-to-end lag p99 at ${fmt(achieved)} writes/s (ms)`, lagP99.toFixed(1), '≤ 500 ms', lagP99 <= 500);
      console.log(`(${lags.length} lag samples; machine: ${(await import('node:os')).cpus().length} cores, load ${(await import('node:os')).loadavg()[0]?.toFixed(2)})`);
    } finally {
      await fx.stop();
    }
  },
};

export default bench;
