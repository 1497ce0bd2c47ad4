/**
 * Every sync role in one process, as the demo (and a small deployment) runs it: capture installed on both
 * databases, a relay per side, an apply worker per direction, and the backfill of the named tables from legacy.
 * Each role is the same code the `strangler sync capture|relay|apply|backfill` commands run on their own.
 */
import type { Logger } from '../../common/logger.ts';
import { loadSyncConfig } from '../../migration-scripts/config.ts';
import { closePools, openPools } from '../../migration-scripts/db.ts';
import { Applier } from '../../migration-scripts/apply.ts';
import { ApplyWorker, createKafka, createStatusKafka } from '../../migration-scripts/kafka.ts';
import { runBackfill } from '../../migration-scripts/backfill.ts';
import { readSyncStatus, type SyncStatus } from '../../migration-scripts/status.ts';
import { compileFromDatabases, installCapture, startRelay, type RunningRelay } from '../../legacy-adapter/capture/index.ts';
import { otherSide, SIDES } from '../../migration-scripts/config-schema.ts';

export interface RunningSync {
  status(): Promise<SyncStatus>;
  stop(): Promise<void>;
}

export async function startSyncWorkers(o: { configFile: string; log: Logger; backfill?: readonly string[] }): Promise<RunningSync> {
  const loaded = loadSyncConfig(o.configFile);
  const { sync: config, kafka: kafkaConfig } = loaded;
  if (!kafkaConfig) throw new Error(`${o.configFile}: the sync roles need a kafka section`);
  const pools = openPools(config);
  const relays: RunningRelay[] = [];
  const workers: ApplyWorker[] = [];
  const statusKafka = createStatusKafka(kafkaConfig, 'status');
  try {
    const tables = await compileFromDatabases(config, pools);
    for (const side of SIDES) await installCapture(config, pools, side, tables);
    for (const side of SIDES) relays.push(await startRelay({ config, kafka: kafkaConfig, pools, side, log: o.log }));
    for (const source of SIDES) {
      const applier = new Applier({ pool: pools[otherSide(source)], config, target: otherSide(source), tables, log: o.log });
      const worker = new ApplyWorker({ config, kafka: createKafka(kafkaConfig, `apply-${source}`), applier, source, tables, log: o.log });
      await worker.start();
      workers.push(worker);
    }
    for (const table of o.backfill ?? []) await runBackfill({ config, pools, tables, table, source: 'legacy', log: o.log });
  } catch (err) {
    for (const w of workers) await w.stop().catch(() => {});
    for (const r of relays) await r.stop().catch(() => {});
    await closePools(pools);
    throw err;
  }
  return {
    status: () => readSyncStatus(config, pools, statusKafka),
    stop: async () => {
      for (const w of workers) await w.stop();
      for (const r of relays) await r.stop();
      await closePools(pools);
    },
  };
}
