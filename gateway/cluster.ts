/**
 * Cluster mode (`--workers N`): the primary runs the control plane; N workers run the data plane on one shared
 * port. The primary reads the workers' state and delivers pushes over IPC, so the admin API shows one merged view
 * and a rollback reaches every worker before the request that asked for it is answered.
 */
import cluster, { type Worker } from 'node:cluster';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { flushLogger, type Logger } from '../common/logger.ts';
import type { FlagPush } from '../flags/client.ts';
import { EPHEMERAL_SESSION_SECRET_ENV, ephemeralSessionSecret } from '../flags/context.ts';
import { ConfigError, loadConfigFile, parseConfigText, readConfigText, type LoadedConfig } from './config/load.ts';
import { upstreamTls } from './proxy/upstreams.ts';
import { watchConfigFile } from './config/watch.ts';
import { reloadFailed, reloadSucceeded, Runtime, type ReloadStatus } from './runtime.ts';
import { routesResponse, mergeRouteStatuses, addRetiredTotals, retireTotals, type RetiredTotals } from './admin/status.ts';
import type { ControlPlane } from './admin/app.ts';
import type { RouteStatus, RoutesResponse } from './admin/types.ts';
import type { BreakerView } from './resilience/breakers.ts';
import { startControlPlane, startDataPlane, adminToken, gatewayLogger, type ControlPlaneServer } from './server.ts';
import { logEvent } from './observability/log-events.ts';
import { trafficFromConfig } from './admin/traffic.ts';
import { controllerStateFromConfig } from './admin/controller-state.ts';
import { syncFromConfig } from './admin/sync.ts';
import { StranglerError, messageOf } from '../common/errors.ts';

type Request =
  | { kind: 'view' }
  | { kind: 'breakers' }
  | { kind: 'push'; push: FlagPush }
  | { kind: 'reload'; text: string }
  | { kind: 'drain' }
  | { kind: 'ping' };

interface Envelope {
  strangler: true;
  id: string;
  request?: Request;
  reply?: unknown;
  error?: string;
}

const isEnvelope = (m: unknown): m is Envelope => typeof m === 'object' && m !== null && (m as Envelope).strangler === true;

/**
 * What a replacement worker starts from, sent by the primary over IPC (never on the command line or in a file): the
 * text of the config the gateway started with (its start-only settings: listeners, flag client, logger) and of the
 * last good one (everything else), as the workers that serve now have them. The file may be bad by now.
 */
interface ConfigTexts {
  started: string;
  current: string;
}

/** Asks the primary for the config texts (the primary's start deadline ends a worker it never answers). */
function configFromPrimary(): Promise<ConfigTexts> {
  return new Promise((resolve) => {
    const onMessage = (m: unknown) => {
      if (!isEnvelope(m) || m.id !== 'config' || m.request) return;
      process.off('message', onMessage);
      resolve(m.reply as ConfigTexts);
    };
    process.on('message', onMessage);
    process.send?.({ strangler: true, id: 'config' } satisfies Envelope);
  });
}

/**
 * Worker side: serve the data plane and answer the primary. Everything up to listening (reading the config included)
 * is inside the try: a worker that cannot start must tell the primary and exit, never linger unserving. A worker of the
 * first start reads the file (a bad file fails the start); a replacement (`fromPrimary`) starts from the primary's
 * last good config instead, as nginx and Envoy keep serving theirs, so a file broken since does not stop it.
 */
export async function runWorker(configFile: string, port?: number, options: { fromPrimary?: boolean } = {}): Promise<void> {
  let runtime: Runtime | undefined;
  let data: Awaited<ReturnType<typeof startDataPlane>>;
  let log: Logger;
  try {
    const texts = options.fromPrimary ? await configFromPrimary() : null;
    const config = texts ? parseConfigText(texts.started, configFile) : loadConfigFile(configFile);
    log = gatewayLogger(config, 'gateway-worker');
    runtime = new Runtime(config, log, { instanceId: `${process.pid}` });
    await runtime.flags.start();
    data = await startDataPlane(runtime, port === undefined ? {} : { port });
    // The serving workers' reloads, applied before the first connection can be read (it arrives as a later event).
    if (texts && texts.current !== texts.started && !runtime.reloadFromFile(texts.current)) throw new Error(runtime.reload.lastError?.message);
  } catch (err) {
    runtime?.close();
    // Tell the primary why, then leave: the IPC channel would otherwise keep this process alive.
    process.send?.({ strangler: true, id: 'failed', error: messageOf(err) } satisfies Envelope, () => process.exit(1));
    return;
  }
  process.on('message', async (m: unknown) => {
    if (!isEnvelope(m) || !m.request) return;
    const answer = (reply: unknown, error?: string) => process.send?.({ strangler: true, id: m.id, reply, ...(error ? { error } : {}) } satisfies Envelope);
    try {
      switch (m.request.kind) {
        case 'view':
          return answer(routesResponse(runtime));
        case 'breakers':
          return answer([...runtime.snapshot.breakers.values()].map((b) => b.view()));
        case 'push':
          await runtime.push(m.request.push);
          return answer(true);
        case 'reload':
          return answer(runtime.reloadFromFile(m.request.text));
        case 'ping':
          return answer(true);
        case 'drain':
          await data.drain();
          runtime.close();
          await flushLogger(log);
          process.send?.({ strangler: true, id: m.id, reply: true } satisfies Envelope, () => process.exit(0));
          return;
      }
    } catch (err) {
      answer(null, messageOf(err));
    }
  });
  // The primary going away (or its SIGTERM reaching us as part of the group) ends this worker cleanly.
  process.on('disconnect', () => void data.drain().then(() => flushLogger(log)).then(() => process.exit(0)));
  process.on('SIGTERM', () => {});
  process.on('SIGINT', () => {});
  process.send?.({ strangler: true, id: 'listening', reply: { port: data.port } } satisfies Envelope);
}

/**
 * When to start the next worker of one slot, as a supervisor would (Kubernetes' CrashLoopBackOff, systemd's
 * RestartSec): the first replacement at once, then 1 s doubling to 30 s while replacements keep failing (exiting
 * before they listen, or soon after), and at once again after a worker has served for RESET_AFTER_MS.
 */
export class RestartBackoff {
  static readonly BASE_MS = 1_000;
  static readonly MAX_MS = 30_000;
  static readonly RESET_AFTER_MS = 60_000;
  /** Starts since the slot last had a worker serve for RESET_AFTER_MS; the next start is attempt `starts + 1`. */
  #starts = 0;

  get attempt(): number {
    return this.#starts;
  }

  /** The slot's worker ended after serving `servedMs` (null: it never listened). Returns the delay before the next start. */
  next(servedMs: number | null): number {
    if (servedMs !== null && servedMs >= RestartBackoff.RESET_AFTER_MS) this.#starts = 0;
    const delayMs = this.#starts === 0 ? 0 : Math.min(RestartBackoff.MAX_MS, RestartBackoff.BASE_MS * 2 ** (this.#starts - 1));
    this.#starts++;
    return delayMs;
  }
}

/**
 * How long a replacement worker may take to listen before it counts as stuck (killed, and retried on the slot's
 * back-off): its flag client's first fetch may take flags.requestTimeoutMs (start-only, so the started config's), and
 * beyond that it gets the slack a serving worker gets to answer the watchdog, proxy.workerHangTimeoutMs. 0 (the
 * watchdog disabled) waits for ever.
 */
export function replacementStartDeadlineMs(started: LoadedConfig, current: LoadedConfig): number {
  const hangMs = current.proxy.workerHangTimeoutMs;
  return hangMs === 0 ? 0 : started.flags.requestTimeoutMs + hangMs;
}

const isTrue = (r: PromiseSettledResult<boolean> | undefined) => r?.status === 'fulfilled' && r.value === true;
const isFalse = (r: PromiseSettledResult<boolean> | undefined) => r?.status === 'fulfilled' && r.value === false;

/**
 * What a worker's reload reads beyond the file's text, the upstreams' PEM files, checked by the primary before any
 * worker applies the file: a file every worker would refuse is refused with its problems (path, expected, found), and
 * is never the config replacements start from.
 */
function checkUpstreamFiles(config: LoadedConfig): void {
  const problems = config.upstreams.flatMap((u, i) => {
    const t = upstreamTls(u, i);
    return 'problem' in t ? [t.problem] : [];
  });
  if (problems.length > 0) throw new ConfigError(config.source, problems);
}

/** SIGKILLs a worker unless it has exited, and resolves once it has. */
function killWorker(worker: Worker): Promise<void> {
  if (worker.process.exitCode !== null || worker.process.signalCode !== null) return Promise.resolve();
  const exited = once(worker.process, 'exit').then(() => undefined);
  worker.process.kill('SIGKILL');
  return exited;
}

/**
 * Sends to a worker. Its channel may have closed since it was looked up (it exited while a reload or view waited):
 * the send then fails through the callback, never as an 'error' event, which no listener takes and would end the primary.
 */
function send(worker: Worker, message: Envelope, onError: (err: Error) => void = () => {}): void {
  if (!worker.isConnected()) return onError(new Error('its IPC channel is closed'));
  worker.send(message, undefined, undefined, (err: Error | null) => {
    if (err) onError(err);
  });
}

/** Primary side: fork workers, serve the control plane, and relay signals. */
export async function runPrimary(configFile: string, workers: number, log: Logger, options: { port?: number; adminPort?: number } = {}): Promise<{ proxyPort: number; admin: ControlPlaneServer; stop(): Promise<void> }> {
  /** The last good config and its text: what reloads apply and replacement workers start from (ConfigTexts). */
  let configText = readConfigText(configFile);
  let config: LoadedConfig = parseConfigText(configText, configFile);
  const started = config;
  const startedText = configText;
  const reload: ReloadStatus = { lastReloadAt: null, lastError: null, restartRequired: [] };
  const pending = new Map<string, { resolve(v: unknown): void; reject(e: Error): void }>();
  let stopping = false;
  let proxyPort = 0;

  const onMessage = (m: unknown) => {
    if (!isEnvelope(m)) return;
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if (m.error) p.reject(new Error(m.error));
    else p.resolve(m.reply);
  };

  const ask = <T>(worker: Worker, request: Request, timeoutMs = 5_000): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = randomUUID();
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`worker ${worker.process.pid} did not answer ${request.kind} within ${timeoutMs} ms`));
      }, timeoutMs);
      pending.set(id, { resolve: (v) => (clearTimeout(timer), resolve(v as T)), reject: (e) => (clearTimeout(timer), reject(e)) });
      send(worker, { strangler: true, id, request }, (err) => onMessage({ strangler: true, id, error: `worker ${worker.process.pid} could not be asked ${request.kind}: ${err.message}` }));
    });

  /**
   * Workers serving the data plane. A forked worker joins once it reports 'listening': until then it has no IPC
   * handler, and asking it would stall every admin request (and a rollback push) for the ask timeout. Each maps to
   * when the primary last read any message from it: the watchdog's measure of a stuck event loop.
   */
  const serving = new Map<Worker, number>();
  const live = () => [...serving.keys()].filter((w) => w.isConnected());
  /** Since when no worker has been serving (null while one is): what /healthz fails on (proxy.workersDownLivenessMs). */
  let noneServingSince: number | null = null;
  let lastStartError: string | null = null;
  const join = (w: Worker) => {
    serving.set(w, Date.now());
    noneServingSince = null;
  };
  const leave = (w: Worker) => {
    serving.delete(w);
    if (serving.size === 0 && noneServingSince === null) noneServingSince = Date.now();
  };
  /** Each worker's last reported routes; an exited worker's lifetime totals move to `retired` (addRetiredTotals). */
  const lastRoutes = new Map<Worker, RouteStatus[]>();
  const retired: RetiredTotals = new Map();
  /** Replacements waiting for their back-off delay, cleared on stop. */
  const retries = new Set<NodeJS.Timeout>();

  /**
   * Forks a worker for `slot`; resolves once it listens, rejects if it exits (or reports failing) before that. A
   * worker that served and then exited is replaced on the slot's back-off; a replacement that never listened is
   * retried on it too (see `replace`). At start-up the caller gets the rejection instead: the gateway fails to start.
   * A replacement starts from the last good config (sent over IPC, see runWorker), and one still not listening after
   * replacementStartDeadlineMs is killed: its start failed, and the slot's back-off retries it.
   */
  const fork = (slot: RestartBackoff, restart?: { delayMs: number }): Promise<Worker> =>
    new Promise((resolve, reject) => {
      let listeningAt: number | null = null;
      /** The config text a replacement was given: if a reload came while it started, it gets that one too. */
      let given: string | undefined;
      const worker = cluster.fork({ STRANGLER_GATEWAY_WORKER: '1', STRANGLER_GATEWAY_CONFIG: configFile, [EPHEMERAL_SESSION_SECRET_ENV]: ephemeralSessionSecret(), ...(restart ? { STRANGLER_GATEWAY_CONFIG_FROM_PRIMARY: '1' } : {}), ...(options.port === undefined ? {} : { STRANGLER_GATEWAY_PORT: String(options.port) }) });
      const deadlineMs = restart ? replacementStartDeadlineMs(started, config) : 0;
      const deadline = deadlineMs === 0 ? undefined : setTimeout(() => {
        reject(new StranglerError('INTERNAL_ERROR', `gateway worker ${worker.process.pid} did not start listening within ${deadlineMs} ms (flags.requestTimeoutMs + proxy.workerHangTimeoutMs): killed`));
        worker.process.kill('SIGKILL');
      }, deadlineMs);
      if (restart) logEvent(log, 'gateway.worker_restart', { pid: worker.process.pid, attempt: slot.attempt, delayMs: restart.delayMs });
      worker.on('message', (m: unknown) => {
        if (serving.has(worker)) serving.set(worker, Date.now());
        if (isEnvelope(m) && m.id === 'config' && restart) {
          given = configText;
          send(worker, { strangler: true, id: 'config', reply: { started: startedText, current: given } satisfies ConfigTexts });
        } else if (isEnvelope(m) && m.id === 'listening') {
          clearTimeout(deadline);
          listeningAt = Date.now();
          join(worker);
          proxyPort = (m.reply as { port: number }).port;
          resolve(worker);
          if (given !== undefined && given !== configText) void ask<boolean>(worker, { kind: 'reload', text: configText }).catch(() => false);
        } else if (isEnvelope(m) && m.id === 'failed') {
          clearTimeout(deadline);
          reject(new StranglerError('INTERNAL_ERROR', `gateway worker ${worker.process.pid} could not start: ${String(m.error)}`));
        } else onMessage(m);
      });
      worker.on('exit', (code, signal) => {
        clearTimeout(deadline);
        leave(worker);
        const routes = lastRoutes.get(worker);
        lastRoutes.delete(worker);
        if (routes) retireTotals(retired, routes);
        if (stopping) return;
        if (listeningAt === null) return reject(new StranglerError('INTERNAL_ERROR', `gateway worker ${worker.process.pid} exited (${code ?? signal}) before listening`));
        const servedMs = Date.now() - listeningAt;
        logEvent(log, 'gateway.worker_exit', { pid: worker.process.pid, code, signal, servedMs });
        replace(slot, servedMs);
      });
    });

  /** Starts the slot's next worker after its back-off delay, and again after each one that fails to start. */
  const replace = (slot: RestartBackoff, servedMs: number | null, startError?: string) => {
    const attempt = slot.attempt;
    const delayMs = slot.next(servedMs);
    if (startError !== undefined) logEvent(log, 'gateway.worker_start_failed', { err: startError, attempt, retryInMs: delayMs, servingWorkers: serving.size });
    const timer = setTimeout(() => {
      retries.delete(timer);
      if (stopping) return;
      fork(slot, { delayMs }).catch((err: unknown) => {
        if (stopping) return;
        lastStartError = messageOf(err);
        replace(slot, null, lastStartError);
      });
    }, delayMs);
    retries.add(timer);
  };

  // Data-plane workers get a larger young generation unless NODE_OPTIONS already sets one (see tuneV8ForProxying).
  if (!/--max-semi-space-size/.test(`${process.env.NODE_OPTIONS ?? ''} ${process.execArgv.join(' ')}`)) {
    cluster.setupPrimary({ execArgv: [...process.execArgv, '--max-semi-space-size=64'] });
  }
  // A worker that cannot start now (port taken, a file it cannot read) fails the start: no retry loop hides a config
  // mistake. Workers already started go too, or their IPC channels would keep this process alive.
  try {
    for (let i = 0; i < workers; i++) await fork(new RestartBackoff());
  } catch (err) {
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL');
    throw err;
  }

  /**
   * Watchdog (proxy.workerHangTimeoutMs, read on every tick so a reload applies): a serving worker whose event loop
   * is stuck (an endless loop, a blocking call) still holds its share of connections and fails every merged view,
   * and only its process knows; /healthz stays 200. So the primary pings each serving worker over IPC (never on the
   * request path) and SIGKILLs one it has not heard from for the timeout; the exit handler replaces it like a crash.
   * Silence is measured from the primary's reads, so a primary held up itself (a long pause, a stopped process)
   * would see every worker as silent: a late tick credits the workers the gap instead of judging them.
   */
  let watchdog: NodeJS.Timeout | undefined;
  const watch = (expectedAt: number) => {
    const timeoutMs = config.proxy.workerHangTimeoutMs;
    const everyMs = timeoutMs === 0 ? 1_000 : Math.max(50, Math.min(1_000, Math.floor(timeoutMs / 4)));
    const now = Date.now();
    const late = now - expectedAt > everyMs;
    for (const w of live()) {
      const silentMs = now - (serving.get(w) ?? now);
      if (timeoutMs === 0 || late) serving.set(w, now);
      else if (silentMs >= timeoutMs) {
        logEvent(log, 'gateway.worker_hung', { pid: w.process.pid, silentMs, workerHangTimeoutMs: timeoutMs, hint: 'its event loop did not answer: killed with SIGKILL and replaced' });
        leave(w);
        w.process.kill('SIGKILL');
        continue;
      }
      if (timeoutMs > 0) send(w, { strangler: true, id: 'ping', request: { kind: 'ping' } });
    }
    watchdog = setTimeout(() => watch(now + everyMs), everyMs).unref();
  };
  watch(Date.now());

  const controller = controllerStateFromConfig(config);
  const sync = syncFromConfig(config);
  const plane: ControlPlane = {
    ...(sync.sync ? { sync: sync.sync } : {}),
    ...trafficFromConfig(config, log),
    ...(controller.controllerState ? { controllerState: controller.controllerState } : {}),
    config: () => config,
    reloadStatus: () => reload,
    draining: () => stopping,
    /**
     * Liveness: failing only when no worker has served for proxy.workersDownLivenessMs (every replacement failing to
     * start), so the kubelet restarts the pod; a worker being replaced while others serve, or the only one starting
     * again within the bound, never fails it.
     */
    liveness: () => {
      const boundMs = config.proxy.workersDownLivenessMs;
      if (stopping || noneServingSince === null || boundMs === 0) return null;
      const downMs = Date.now() - noneServingSince;
      if (downMs < boundMs) return null;
      return {
        reason: `no gateway worker has been serving for ${downMs} ms (proxy.workersDownLivenessMs: ${boundMs}); replacements keep failing to start${lastStartError ? `, last: ${lastStartError}` : ''}`,
        workersDownMs: downMs,
        lastStartError,
      };
    },
    view: async () => {
      const views = await Promise.all(
        live().map(async (w) => {
          const v = await ask<RoutesResponse>(w, { kind: 'view' });
          if (serving.has(w)) lastRoutes.set(w, v.routes);
          return v;
        }),
      );
      const first = views[0];
      if (!first) throw new Error('no live workers');
      return {
        gateway: {
          ...first.gateway,
          instanceId: `${process.pid}`,
          workers: views.length,
          ready: views.every((v) => v.gateway.ready),
          degraded: views.find((v) => v.gateway.degraded)?.gateway.degraded ?? null,
          flagsSynchronized: views.every((v) => v.gateway.flagsSynchronized),
          reloadError: reload.lastError?.message ?? null,
        },
        routes: addRetiredTotals(mergeRouteStatuses(views.map((v) => v.routes)), retired),
      };
    },
    breakers: async () => {
      const all = await Promise.all(live().map((w) => ask<BreakerView[]>(w, { kind: 'breakers' })));
      return all.flat();
    },
    push: async (push) => {
      const acks = await Promise.all(live().map((w) => ask<boolean>(w, { kind: 'push', push })));
      return { delivered: acks.length };
    },
  };
  const admin = await startControlPlane(plane, log, { token: adminToken(config).token, ...(options.adminPort === undefined ? {} : { port: options.adminPort }) });

  /**
   * SIGHUP or a change of the file: the primary validates it (its PEM files included, which the workers read), then
   * every worker loads the text the primary read (not the file again, which may have changed since). Only once every
   * worker has applied it does it become the last good config (shown by GET /admin/config, given to replacements);
   * if one did not, those that may have go back to the last good one, so the workers never serve a mix. Reloads run
   * one at a time, so a rollback never lands after a later reload.
   */
  const reloadOnce = async (): Promise<void> => {
    try {
      const text = readConfigText(configFile);
      const next = parseConfigText(text, configFile);
      checkUpstreamFiles(next);
      const workers = live();
      const applied = await Promise.allSettled(workers.map((w) => ask<boolean>(w, { kind: 'reload', text })));
      const failed = workers.filter((_, i) => !isTrue(applied[i]));
      if (failed.length > 0) {
        // A worker that answered false kept the last good config; one that did not answer may apply it late.
        await Promise.allSettled(workers.filter((_, i) => !isFalse(applied[i])).map((w) => ask<boolean>(w, { kind: 'reload', text: configText })));
        const why = workers.flatMap((w, i) => {
          const r = applied[i];
          if (isTrue(r)) return [];
          return [r?.status === 'rejected' ? messageOf(r.reason) : `worker ${w.process.pid} refused it (see its config.reload_failed log line)`];
        });
        throw new Error(`${configFile}: gateway workers ${failed.map((w) => w.process.pid).join(', ')} could not load it (${why.join('; ')}); every worker keeps the last good config`);
      }
      config = next;
      configText = text;
      // Replacements that started meanwhile were given the previous text.
      await Promise.allSettled(live().filter((w) => !workers.includes(w)).map((w) => ask<boolean>(w, { kind: 'reload', text })));
      reloadSucceeded(reload, started, config, log, { file: configFile, workers: live().length });
    } catch (err) {
      reloadFailed(reload, configFile, err, log);
    }
  };
  let reloading = Promise.resolve();
  const reloadAll = (): Promise<void> => (reloading = reloading.then(reloadOnce));
  process.on('SIGHUP', () => void reloadAll());
  const watcher = watchConfigFile(configFile, () => void reloadAll());

  return {
    proxyPort,
    admin,
    stop: async () => {
      stopping = true;
      clearTimeout(watchdog);
      for (const timer of retries) clearTimeout(timer);
      watcher.close();
      const deadline = Date.now() + config.proxy.drainTimeoutMs;
      // A worker still starting has nothing in flight; a serving one drains. Any left after that (its event loop
      // stuck, its process stopped) is killed: it would outlive the gateway holding the port, and its IPC channel
      // would keep this process from exiting.
      await Promise.allSettled(Object.values(cluster.workers ?? {}).flatMap((w) => (w && !serving.has(w) ? [killWorker(w)] : [])));
      await Promise.allSettled(live().map((w) => ask(w, { kind: 'drain' }, config.proxy.drainTimeoutMs + 5_000)));
      await Promise.allSettled(Object.values(cluster.workers ?? {}).flatMap((w) => (w ? [killWorker(w)] : [])));
      await admin.close(deadline);
      await controller.close?.();
      await sync.close?.();
    },
  };
}
