/**
 * `strangler sync <subcommand>`: capture install/uninstall, relay, apply, backfill, verify, repair, status.
 * Long-running subcommands (relay, apply) stop cleanly on SIGINT/SIGTERM; backfill stops after its chunks in flight
 * committed and exits 1 (it resumes from its checkpoint on the next run).
 */
import { readFileSync } from 'node:fs';
import type { Command } from '../cli/command.ts';
import { intOption, parseCommandArgs, usageError } from '../cli/command.ts';
import { createLogger } from '../common/logger.ts';
import type { Side } from './config-schema.ts';
import { otherSide } from './config-schema.ts';
import { loadSyncConfig } from './config.ts';
import { closePools, namingDatabase, openPools, retryTransient } from './db.ts';
import { installCapture, uninstallCapture, compileFromDatabases, startRelay } from '../legacy-adapter/capture/index.ts';
import { Applier } from './apply.ts';
import { ApplyWorker, createKafka, createStatusKafka } from './kafka.ts';
import { runBackfill } from './backfill.ts';
import { ProgressBar } from './progress.ts';
import { formatVerify, lastVerify, verifyTables, type VerifyResult } from './verify.ts';
import { repairFromVerify, retryDeadLetters } from './repair.ts';
import { SYNC_LOG } from './log-events.ts';
import { brokenDirections, formatStatus, readSyncStatus, unknownLagDirections } from './status.ts';

const HELP = `strangler sync: two-way data sync between the legacy and a service database through Kafka.

Usage: strangler sync <subcommand> --config FILE [options]

Subcommands:
  capture install   [--side legacy|service|both]   validate mappings against both schemas, then install state schema + triggers
                                                   (capture.mode logical: a replication slot instead; --accept-gap
                                                   replaces a lost slot, recording that changes were missed)
  capture uninstall [--side legacy|service|both]   remove triggers (or the slot), functions and the state schema
                                                   (both wait at most capture.lockTimeoutMs per attempt for a synced
                                                   table another transaction holds, retried for capture.lockRetryMs)
  relay   --side legacy|service                    publish captured changes to Kafka (runs until stopped)
  apply   --direction legacy-to-service|service-to-legacy   consume and apply (runs until stopped)
  backfill --table T [--direction D] [--restart] [--rate ROWS_PER_S] [--max-lag EVENTS]
                                                   copy existing rows while live changes flow; resumes from its checkpoint
  verify  [--table T] [--json]                     compare both sides through the mapping; exit 0 identical, 3 different
  repair  [--input verify.json] [--from legacy|service] [--dead-letters]
                                                   re-sync exactly the keys the last (or given) verify reported;
                                                   --dead-letters retries parked events instead; exit 3 when keys
                                                   were skipped (or events are still parked): verify again later
  status  [--json]                                 lag per direction, positions, parked events, backfill, last verify;
                                                   exit 1 when a direction is broken (lost replication slot,
                                                   capture off, events lost from Kafka, its relay or apply stopped
                                                   on an error retrying cannot fix) or its lag is unknown

Options:
  --config FILE   strangler config file with \`sync:\` and \`kafka:\` sections (\${ENV} expanded)
  -h, --help      this help

Event format and workflow: migration-scripts/README.md.
`;

/** Command output goes to stdout (logs go through pino). */
const out = (text: string): void => { process.stdout.write(`${text}\n`); };

function waitForSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string) => { process.off('SIGINT', on); process.off('SIGTERM', on); resolve(sig); };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

function sidesOf(value: string | undefined): Side[] {
  if (value === undefined || value === 'both') return ['legacy', 'service'];
  if (value === 'legacy' || value === 'service') return [value];
  throw usageError('sync', `--side must be legacy, service or both, found "${value}"`);
}

function directionSource(value: string | undefined, required: boolean): Side {
  if (value === 'legacy-to-service') return 'legacy';
  if (value === 'service-to-legacy') return 'service';
  if (value === undefined && !required) return 'legacy';
  throw usageError('sync', `--direction must be legacy-to-service or service-to-legacy, found ${value === undefined ? 'nothing' : `"${value}"`}`);
}

export const syncCommand: Command = {
  name: 'sync',
  summary: 'Two-way data sync: capture, relay, apply, backfill, verify, repair, status',
  help: HELP,
  async run(argv) {
    const { values, positionals } = parseCommandArgs('sync', argv, {
      config: { type: 'string', short: 'c' },
      side: { type: 'string' },
      direction: { type: 'string' },
      table: { type: 'string' },
      json: { type: 'boolean' },
      input: { type: 'string' },
      from: { type: 'string' },
      'dead-letters': { type: 'boolean' },
      restart: { type: 'boolean' },
      rate: { type: 'string' },
      'max-lag': { type: 'string' },
      'accept-gap': { type: 'boolean' },
    });
    if (values.help) { process.stdout.write(HELP); return 0; }
    const [sub, action] = positionals;
    if (!sub) throw usageError('sync', 'a subcommand is required');
    // Before --config is asked for, so a typo is named as such.
    if (!['capture', 'relay', 'apply', 'backfill', 'verify', 'repair', 'status'].includes(sub)) throw usageError('sync', `unknown subcommand "${sub}" (capture, relay, apply, backfill, verify, repair, status)`);
    if (!values.config) throw usageError('sync', '--config FILE is required');
    const loaded = loadSyncConfig(values.config);
    const config = loaded.sync;
    const log = createLogger({ name: `sync-${sub}` });
    const pools = openPools(config);
    try {
      switch (sub) {
        case 'capture': {
          const sides = sidesOf(values.side);
          if (action === 'install') {
            const tables = await compileFromDatabases(config, pools);
            for (const side of sides) {
              const r = await installCapture(config, pools, side, tables, { acceptGap: values['accept-gap'], log });
              out(`capture installed on ${side}: ${r.tables.join(', ')}`);
              if (r.gap) out(`capture on ${side} resumes from now; changes committed while its slot "${r.gap.slot}" was missing were not captured (recorded, shown by status). With the pipeline drained run \`strangler sync verify\`, then \`strangler sync repair --from ${side}\``);
            }
            return 0;
          }
          if (action === 'uninstall') {
            for (const side of sides) { await uninstallCapture(config, pools, side, { log }); out(`capture removed from ${side}`); }
            return 0;
          }
          throw usageError('sync', 'capture takes install or uninstall');
        }
        case 'relay': {
          if (values.side !== 'legacy' && values.side !== 'service') throw usageError('sync', '--side legacy|service is required for relay');
          if (!loaded.kafka) throw usageError('sync', 'the config file has no kafka: section');
          const running = await startRelay({ config, kafka: loaded.kafka, pools, side: values.side, log });
          try {
            await Promise.race([waitForSignal(), running.done]); // done rejects when the relay cannot go on (a lost slot, a change it cannot get past)
          } finally {
            await running.stop();
          }
          return 0;
        }
        case 'apply': {
          const source = directionSource(values.direction, true);
          if (!loaded.kafka) throw usageError('sync', 'the config file has no kafka: section');
          const tables = await retryTransient('apply: read schemas', () => compileFromDatabases(config, pools));
          const applier = new Applier({ pool: pools[otherSide(source)], config, target: otherSide(source), tables, log });
          const worker = new ApplyWorker({ config, kafka: createKafka(loaded.kafka, `apply-${source}`), applier, source, tables, log,
            sessionTimeoutMs: process.env.STRANGLER_SYNC_SESSION_TIMEOUT_MS ? Number(process.env.STRANGLER_SYNC_SESSION_TIMEOUT_MS) : undefined });
          await worker.start();
          try {
            await Promise.race([waitForSignal(), worker.done]); // done rejects when the consumer stopped for good (events lost from Kafka, a TLS failure)
          } finally {
            await worker.stop();
          }
          return 0;
        }
        case 'backfill': {
          if (!values.table) throw usageError('sync', 'backfill needs --table T');
          const source = directionSource(values.direction, false);
          // SIGTERM as SIGINT: in a pod node is PID 1, which ignores SIGTERM without a handler, so an evicted backfill
          // would copy on until the grace period's SIGKILL while its replacement already runs. The chunks in flight
          // commit (with their cursor), then it stops; a second signal gets the default action. Installed before the
          // first query, so a signal during start-up is not lost either.
          const ac = new AbortController();
          let stoppedBy = '';
          const onSig = (sig: string) => { stoppedBy = sig; process.off('SIGINT', onSig); process.off('SIGTERM', onSig); ac.abort(); };
          process.on('SIGINT', onSig);
          process.on('SIGTERM', onSig);
          const bar = new ProgressBar(`backfill ${values.table} ${source}→${otherSide(source)}`);
          let r: Awaited<ReturnType<typeof runBackfill>>;
          try {
            const tables = await compileFromDatabases(config, pools);
            r = await runBackfill({
              config, pools, tables, table: values.table, source, log, restart: values.restart, signal: ac.signal,
              maxRowsPerSecond: intOption('sync', '--rate', values.rate, { min: 1 }), maxLagEvents: intOption('sync', '--max-lag', values['max-lag']),
              onProgress: (done, total) => bar.update(done, total),
            });
          } finally {
            process.off('SIGINT', onSig);
            process.off('SIGTERM', onSig);
          }
          bar.finish(r.rows, r.rowsTotal);
          out(r.done ? `backfill of ${r.table} done: ${r.rows} rows`
            : `backfill of ${r.table} interrupted${stoppedBy ? ` by ${stoppedBy}` : ''} at ${r.rows} rows; run the same command again to resume from its checkpoint`);
          return r.done ? 0 : 1;
        }
        case 'verify': {
          const tables = await compileFromDatabases(config, pools);
          const result = await verifyTables(config, pools, tables, values.table);
          out(values.json ? JSON.stringify(result, null, 2) : formatVerify(result));
          return result.ok ? 0 : 3;
        }
        case 'repair': {
          const tables = await compileFromDatabases(config, pools);
          if (values['dead-letters']) {
            let parked = 0;
            for (const target of ['legacy', 'service'] as const) {
              const r = await retryDeadLetters({ config, pools, tables, target, log });
              out(`${target}: ${r.retried} dead letters applied, ${r.stillParked} still parked`);
              parked += r.stillParked;
            }
            return parked > 0 ? 3 : 0;
          }
          const verify: VerifyResult | null = values.input ? JSON.parse(readFileSync(values.input, 'utf8')) as VerifyResult : await lastVerify(config, pools.legacy);
          if (!verify) throw usageError('sync', 'no verify result: run `strangler sync verify` first or pass --input');
          const from = values.from === undefined ? undefined : values.from === 'legacy' || values.from === 'service' ? values.from : (() => { throw usageError('sync', '--from must be legacy or service'); })();
          const r = await repairFromVerify({ config, pools, tables, verify, from, log });
          for (const t of r.tables) {
            out(`${t.table}: ${t.rewritten} keys rewritten and ${t.deleted} deleted on ${t.to} from ${t.from}`);
            const more = t.targetNewer.length > 20 ? ` and ${t.targetNewer.length - 20} more (each logged as ${SYNC_LOG.repairKey})` : '';
            if (t.targetNewer.length > 0) out(`${t.table}: ${t.targetNewer.length} keys skipped, ${t.to} changed them after ${t.from} last saw them (in flight to ${t.from}): wait for \`strangler sync status\` lag 0, then verify again: ${t.targetNewer.slice(0, 20).join(' ')}${more}`);
          }
          if (r.tables.length === 0) out('nothing to repair');
          // Not everything repaired: 3, as verify's "different", so a script or a Job does not take it for done.
          return r.tables.some((t) => t.targetNewer.length > 0) ? 3 : 0;
        }
        case 'status': {
          const kafka = loaded.kafka ? createStatusKafka(loaded.kafka, 'status') : undefined;
          const st = await readSyncStatus(config, pools, kafka);
          out(values.json ? JSON.stringify(st, null, 2) : formatStatus(st));
          const broken = brokenDirections(st);
          for (const d of broken) process.stderr.write(`strangler: ${d.direction}: ${d.broken?.code}: ${d.broken?.message}\n`);
          // Kafka's backlog unreadable: the lag is unknown, not 0, so a script waiting for lag 0 must not go on.
          const unknown = unknownLagDirections(st);
          for (const d of unknown) process.stderr.write(`strangler: ${d.direction}: lag unknown, Kafka backlog unreadable: ${d.kafkaError}\n`);
          return broken.length > 0 || unknown.length > 0 ? 1 : 0;
        }
        default:
          throw usageError('sync', `unknown subcommand "${sub}"`);
      }
    } catch (err) {
      // A refused password, a missing database, a host that does not answer: the driver's error does not say which
      // of the two databases it was.
      throw await namingDatabase(config, err);
    } finally {
      await closePools(pools);
    }
  },
};
