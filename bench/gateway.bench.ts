/**
 * Gateway proxy overhead: the same upstream reached three ways, measured in one run with autocannon.
 *
 *   autocannon (this process) ──► upstream process                    "direct"
 *   autocannon ──► bare http-proxy process ──► upstream               "bare http-proxy" (keep-alive agent, nothing else)
 *   autocannon ──► gateway process ──► upstream (legacy or service)   "gateway": route match, flag at 50 % per user id,
 *                                                                      breaker, stats, one info log line per request
 *   the same gateway logging 1 % of successful requests (proxy.logSampleRate of the deploy/k8s ConfigMap): shown
 *   for comparison; the target is judged on the gateway that logs every request
 *
 * Each server runs in its own process, so the load generator never shares an event loop with what it measures.
 * Phase 1 (max throughput): 50 connections, each variant warmed up, then measured in nine short interleaved rounds, in
 * alternating order, so a neighbour's CPU burst on this shared machine hits all variants alike (the per-round ratios
 * are printed to show how much it did). Phase 2 (fixed rate): 1,000 req/s for each
 * variant, compared with direct to get the latency the proxy adds.
 *
 * Why phase 2 paces autocannon itself: autocannon's rate limit gives each connection a quota per second, refilled by
 * a per-connection 1 s interval, and the connection then sends its quota back to back. All intervals start
 * together, so `overallRate: 1000` on 10 connections is ten closed-loop bursts at the top of each second: latency
 * under a burst, not at 1,000 req/s (and 1,000 connections × 1 req/s does not help: node re-arms intervals that fire
 * in the same loop turn with the same start time, so they clump and stay clumped). Here one 1 ms clock releases idle
 * connections one request at a time (see Pacer), so requests start evenly spaced, open loop.
 *
 * Preconditions the bench checks itself: the bare proxy and every gateway announce their upstream agent's settings
 * (servers/child.ts describeAgent) and the run stops if they differ (the issue compares "with the same keep-alive
 * agent"). The throughput ratio is the median of the per-round ratios (gateway and bare measured next to each other in
 * each round), not a ratio of totals, so one round hit by a neighbour's burst cannot carry the verdict; when the rounds
 * disagree by more than the margin being judged, a warning says the verdict is within this machine's noise.
 *
 * Latencies come from autocannon's per-response timing (fractional ms); its own histogram rounds to whole
 * milliseconds, too coarse for a 0.3 ms target. Proxy CPU per request comes from /proc (utime + stime).
 *
 * Knobs: GATEWAY_BENCH_SECONDS (phase 1 seconds per variant, default 27), GATEWAY_BENCH_ROUNDS (default 9: more
 * rounds narrow the median's noise on a shared machine), GATEWAY_BENCH_RATE_SECONDS (phase 2, default 20 in 4 rounds;
 * 0 skips it), GATEWAY_BENCH_PROFILE=1 adds gateway variants with one feature off each, to attribute the overhead, and
 * GATEWAY_BENCH_CANDIDATE=<server entry>[,<server entry>…] adds a "candidate" row per entry: another build of the
 * gateway started like bench/servers/gateway.ts (same arguments, same JSON line on fd 3), to measure a change against
 * the current one;
 * GATEWAY_BENCH_NODE_FLAGS (e.g. "--max-semi-space-size=64") are given to node for every proxy process (bare, gateway,
 * candidate), to measure runtime settings.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import autocannon, { type AutocannonClient } from 'autocannon';
import type { Bench } from './run.ts';

const here = dirname(fileURLToPath(import.meta.url));
const PHASE1_SECONDS = Number(process.env.GATEWAY_BENCH_SECONDS ?? 27);
const PHASE2_SECONDS = Number(process.env.GATEWAY_BENCH_RATE_SECONDS ?? 20);
const PROFILE = process.env.GATEWAY_BENCH_PROFILE === '1';
const CANDIDATES = (process.env.GATEWAY_BENCH_CANDIDATE ?? '').split(',').filter(Boolean);
// Both proxies run with the young-generation size the deployment uses (docs/deployment.md); override to compare.
const PROXY_NODE_FLAGS = (process.env.GATEWAY_BENCH_NODE_FLAGS ?? '--max-semi-space-size=64').split(' ').filter(Boolean);
/** Phase 1 rounds: short interleaved rounds, in alternating order, so drift in a shared machine's load hits all variants alike. */
const ROUNDS = Number(process.env.GATEWAY_BENCH_ROUNDS ?? 9);
const RATE_ROUNDS = 4;
const WARMUP_SECONDS = 2;
const CONNECTIONS = 50;
const RATE = 1000;
const RATE_CONNECTIONS = 100;
const RATE_SETTLE_SECONDS = 1;
const USERS = 1000;
const PATH = '/api/orders/42';
const TARGETS = { throughputRatio: 0.95, addedP50Ms: 0.3, addedP99Ms: 1 };
/** Per-round gateway/bare ratios further apart than this (twice the 5 % margin judged) mean the run was disturbed. */
const NOISY_ROUND_SPREAD = 0.1;
/** proxy.logSampleRate in deploy/k8s/base/10-configmap.yaml. */
const PRODUCTION_LOG_SAMPLE_RATE = 0.01;

/** Static requests (autocannon prebuilds their buffers): one user id each, so the flag decision really runs. */
const REQUESTS = Array.from({ length: USERS }, (_, i) => ({ method: 'GET', path: PATH, headers: { 'x-user-id': `user-${i}` } }));

// ---------------------------------------------------------------------------------------------------------------
// Server processes

interface ServerProcess {
  readonly name: string;
  readonly pid: number;
  readonly info: Record<string, unknown>;
  stop(): Promise<void>;
}

/** Starts bench/servers/<file> with tsx and waits for its JSON line on fd 3. */
export async function spawnServer(name: string, file: string, args: string[], options: { env?: NodeJS.ProcessEnv; stdoutFile?: string; nodeFlags?: string[] } = {}): Promise<ServerProcess> {
  const out = options.stdoutFile ? openSync(options.stdoutFile, 'a') : 'ignore';
  const child: ChildProcess = spawn(process.execPath, [...(options.nodeFlags ?? []), '--import', 'tsx', resolve(here, 'servers', file), ...args], {
    stdio: ['pipe', out, 'inherit', 'pipe'],
    env: { ...process.env, ...options.env },
  });
  if (typeof out === 'number') closeSync(out);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const info = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const announce = child.stdio[3] as Readable;
    let text = '';
    const timer = setTimeout(() => reject(new Error(`${name}: no port announced within 30 s`)), 30_000);
    announce.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      const nl = text.indexOf('\n');
      if (nl === -1) return;
      clearTimeout(timer);
      resolve(JSON.parse(text.slice(0, nl)) as Record<string, unknown>);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited with ${code} before announcing its port`));
    });
  });
  return {
    name,
    pid: child.pid as number,
    info,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.stdin?.end();
        const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(killer);
      }
    },
  };
}

/** utime + stime of a process in ms (Linux /proc; USER_HZ = 100). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

// ---------------------------------------------------------------------------------------------------------------
// Load

interface Sample {
  count: number;
  seconds: number;
  latencies: Float64Array;
  non2xx: number;
  errors: number;
  proxyCpuMs: number;
  starved: number;
}

interface LoadOptions {
  url: string;
  proxyPid: number | null;
  seconds: number;
  connections: number;
  /** Fixed overall rate (open loop, evenly spaced over the connections); null = as fast as possible (closed loop). */
  rate: number | null;
  /** Responses before this many seconds are not recorded. */
  settleSeconds: number;
}

class Latencies {
  #data = new Float64Array(1 << 16);
  #n = 0;
  push(v: number): void {
    if (this.#n === this.#data.length) {
      const bigger = new Float64Array(this.#data.length * 2);
      bigger.set(this.#data);
      this.#data = bigger;
    }
    this.#data[this.#n++] = v;
  }
  get values(): Float64Array {
    return this.#data.slice(0, this.#n);
  }
}

/**
 * Open-loop pacing on top of autocannon: every connection is rate-limited to one request per release, autocannon's
 * own per-connection quota interval is cleared, and one 1 ms clock releases idle connections round-robin so that
 * exactly `rate` requests per second start, evenly spaced. After a stall the clock catches up (the requests were due),
 * as an open-loop client should. `starved` counts requests that were due while every connection was busy, once
 * `countAfterMs` has passed (before that, connections are still opening and sending autocannon's first request).
 */
class Pacer {
  readonly #clients: AutocannonClient[] = [];
  readonly #rate: number;
  readonly #countAfterMs: number;
  #timer: NodeJS.Timeout | undefined;
  #start = 0;
  #issued = 0;
  #next = 0;
  starved = 0;

  constructor(rate: number, countAfterMs: number) {
    this.#rate = rate;
    this.#countAfterMs = countAfterMs;
  }

  /** autocannon's setupClient hook: runs in the connection's constructor, before its quota interval exists. */
  adopt = (client: AutocannonClient): void => {
    this.#clients.push(client);
    setImmediate(() => clearInterval(client.rateInterval));
  };

  start(): void {
    this.#start = performance.now();
    this.#timer = setInterval(() => this.#tick(), 1);
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  #tick(): void {
    const elapsedMs = performance.now() - this.#start;
    const due = Math.floor((elapsedMs * this.#rate) / 1000) - this.#issued;
    for (let k = 0; k < due; k++) {
      this.#issued++;
      const client = this.#idle();
      if (!client) {
        if (elapsedMs >= this.#countAfterMs) this.starved++;
        continue;
      }
      client.reqsMadeThisSecond = 0;
      client.paused = false;
      client._doRequest();
    }
  }

  #idle(): AutocannonClient | undefined {
    const n = this.#clients.length;
    for (let j = 0; j < n; j++) {
      const c = this.#clients[(this.#next + j) % n] as AutocannonClient;
      if (c.paused && !c.destroyed) {
        this.#next = (this.#next + j + 1) % n;
        return c;
      }
    }
    return undefined;
  }
}

export async function load(o: LoadOptions): Promise<Sample> {
  const latencies = new Latencies();
  let count = 0;
  let non2xx = 0;
  const pacer = o.rate === null ? null : new Pacer(o.rate, o.settleSeconds * 1000);
  const instance = autocannon({
    url: `${o.url}${PATH}`,
    connections: o.connections,
    duration: o.settleSeconds + o.seconds,
    requests: REQUESTS,
    ...(pacer ? { connectionRate: 1, setupClient: pacer.adopt } : {}),
  });
  pacer?.start();
  const start = performance.now();
  const from = start + o.settleSeconds * 1000;
  const until = from + o.seconds * 1000;
  let cpuBefore = o.settleSeconds === 0 && o.proxyPid !== null ? cpuMs(o.proxyPid) : Number.NaN;
  let cpuAfter = Number.NaN;
  const settleTimer = o.settleSeconds > 0 && o.proxyPid !== null ? setTimeout(() => (cpuBefore = cpuMs(o.proxyPid as number)), o.settleSeconds * 1000) : undefined;
  const endTimer = o.proxyPid !== null ? setTimeout(() => (cpuAfter = cpuMs(o.proxyPid as number)), (o.settleSeconds + o.seconds) * 1000) : undefined;
  instance.on('response', (_client, statusCode, _bytes, responseTimeMs) => {
    const now = performance.now();
    if (now < from || now > until) return;
    count++;
    if (statusCode < 200 || statusCode >= 300) non2xx++;
    else latencies.push(responseTimeMs);
  });
  const result = await instance;
  pacer?.stop();
  clearTimeout(settleTimer);
  clearTimeout(endTimer);
  if (o.proxyPid !== null && Number.isNaN(cpuAfter)) cpuAfter = cpuMs(o.proxyPid);
  return { count, seconds: o.seconds, latencies: latencies.values, non2xx, errors: result.errors + result.timeouts, proxyCpuMs: cpuAfter - cpuBefore, starved: pacer?.starved ?? 0 };
}

export function merge(samples: Sample[]): Sample {
  const n = samples.reduce((a, s) => a + s.latencies.length, 0);
  const latencies = new Float64Array(n);
  let at = 0;
  for (const s of samples) {
    latencies.set(s.latencies, at);
    at += s.latencies.length;
  }
  const sum = (f: (s: Sample) => number) => samples.reduce((a, s) => a + f(s), 0);
  return { count: sum((s) => s.count), seconds: sum((s) => s.seconds), latencies, non2xx: sum((s) => s.non2xx), errors: sum((s) => s.errors), proxyCpuMs: sum((s) => s.proxyCpuMs), starved: sum((s) => s.starved) };
}

function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
}

/**
 * Throughput of `num` over `den` as the median of the per-round ratios: round i of each was measured back to back, so
 * each ratio compares the two under the same machine load, and the median ignores a round a neighbour disturbed
 * (a ratio of totals lets one such round move the result).
 */
export function pairedMedianRatio(num: readonly Sample[], den: readonly Sample[]): number {
  const ratios = num.map((s, i) => s.count / s.seconds / ((den[i]?.count ?? Number.NaN) / (den[i]?.seconds ?? Number.NaN))).sort((a, b) => a - b);
  if (ratios.length === 0 || ratios.length !== den.length) return Number.NaN;
  const mid = ratios.length >> 1;
  return ratios.length % 2 === 1 ? (ratios[mid] as number) : ((ratios[mid - 1] as number) + (ratios[mid] as number)) / 2;
}

/** The variants in the order round `round` measures them: alternating, so no variant always follows the same one. */
export function roundOrder<T>(variants: readonly T[], round: number): T[] {
  return round % 2 === 0 ? [...variants] : [...variants].reverse();
}

/** Settings in which two announced agents (servers/child.ts describeAgent) differ, as "name: a ≠ b"; [] when alike. */
export function agentDifferences(a: unknown, b: unknown): string[] {
  if (typeof a !== 'object' || a === null || typeof b !== 'object' || b === null) return [`agent not announced (${JSON.stringify(a)} vs ${JSON.stringify(b)})`];
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  return [...new Set([...Object.keys(x), ...Object.keys(y)])].filter((k) => JSON.stringify(x[k]) !== JSON.stringify(y[k])).map((k) => `${k}: ${JSON.stringify(x[k])} ≠ ${JSON.stringify(y[k])}`);
}

interface Stats {
  rps: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  cpuUsPerReq: number;
  /** Paced requests that were due while every connection was busy (phase 2 only). */
  starved: number;
}

export function stats(s: Sample): Stats {
  const sorted = s.latencies.slice().sort();
  return { rps: s.count / s.seconds, p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), non2xx: s.non2xx, errors: s.errors, cpuUsPerReq: (s.proxyCpuMs * 1000) / s.count, starved: s.starved };
}

// ---------------------------------------------------------------------------------------------------------------
// Report

const fmt = (v: number, digits = 2) => (Number.isFinite(v) ? v.toFixed(digits) : '-');
const pad = (s: string, n: number) => (s.length >= n ? s : s + ' '.repeat(n - s.length));
const lpad = (s: string, n: number) => (s.length >= n ? s : ' '.repeat(n - s.length) + s);
const verdict = (ok: boolean) => (ok ? 'PASS' : 'MISS');

function table(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? pad(c, widths[i] as number) : lpad(c, widths[i] as number))).join('  ');
  console.log(line(header));
  for (const r of rows) console.log(line(r));
}

/** Requests per target in the gateway's log, to show the flag really split the traffic. */
function logSplit(file: string): { lines: number; service: number; legacy: number } {
  let lines = 0;
  let service = 0;
  let legacy = 0;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.includes('"request.completed"')) continue;
    lines++;
    if (line.includes('"target":"service"')) service++;
    else if (line.includes('"target":"legacy"')) legacy++;
  }
  return { lines, service, legacy };
}

// ---------------------------------------------------------------------------------------------------------------

interface Variant {
  name: string;
  url: string;
  pid: number | null;
}

/**
 * Stops the run when a proxy's upstream agent differs from the bare proxy's: the comparison is defined "with the same
 * keep-alive agent". A candidate (another build) only gets a warning.
 */
function checkSameAgent(bare: ServerProcess, proxy: ServerProcess, required: boolean): void {
  const diff = agentDifferences(bare.info.agent, proxy.info.agent);
  if (diff.length === 0) return;
  const message = `${proxy.name} and ${bare.name} do not use the same upstream keep-alive agent: ${diff.join('; ')}`;
  if (required) throw new Error(`${message}; the comparison would not be fair, fix bench/servers first`);
  console.log(`WARNING ${message}`);
}

export default {
  name: 'gateway proxy overhead',
  async run() {
    const dir = mkdtempSync(join(tmpdir(), 'strangler-gateway-bench-'));
    const servers: ServerProcess[] = [];
    try {
      const upstream = await spawnServer('upstream', 'upstream.ts', []);
      servers.push(upstream);
      const [legacyPort, servicePort] = upstream.info.ports as [number, number];
      const legacyUrl = `http://127.0.0.1:${legacyPort}`;
      const serviceUrl = `http://127.0.0.1:${servicePort}`;
      const bare = await spawnServer('bare http-proxy', 'bare-proxy.ts', [legacyUrl], { nodeFlags: PROXY_NODE_FLAGS });
      servers.push(bare);
      const variants: Variant[] = [
        { name: 'direct', url: legacyUrl, pid: null },
        { name: 'bare http-proxy', url: `http://127.0.0.1:${bare.info.port as number}`, pid: bare.pid },
      ];
      /** Starts a proxy like bench/servers/gateway.ts (same arguments) and measures it as one more variant. */
      const addProxy = async (name: string, file: string, logFile: string, env: NodeJS.ProcessEnv = {}): Promise<void> => {
        const s = await spawnServer(name, file, [legacyUrl, serviceUrl, dir], { env, stdoutFile: join(dir, logFile), nodeFlags: PROXY_NODE_FLAGS });
        servers.push(s);
        checkSameAgent(bare, s, file === 'gateway.ts');
        variants.push({ name, url: `http://127.0.0.1:${s.info.port as number}`, pid: s.pid });
      };
      await addProxy('gateway', 'gateway.ts', 'gateway.log');
      // For comparison only (the verdict is the gateway logging every request): the same gateway with the request-log
      // sampling the production ConfigMap in deploy/k8s uses (errors and fallbacks are always logged).
      await addProxy('gateway, 1 % of successes logged', 'gateway.ts', 'sampled.log', { BENCH_LOG_SAMPLE_RATE: String(PRODUCTION_LOG_SAMPLE_RATE) });
      for (const [i, entry] of CANDIDATES.entries()) {
        const name = CANDIDATES.length === 1 ? 'candidate' : `candidate ${i + 1} (${basename(entry)})`;
        await addProxy(name, resolve(entry), `candidate-${i + 1}.log`);
      }
      if (PROFILE) {
        const extra: [string, NodeJS.ProcessEnv][] = [
          ['gw: log level warn', { BENCH_LOG_LEVEL: 'warn' }],
          ['gw: log lines made, not written', { BENCH_LOG_SINK: 'none' }],
          ['gw: log lines to /dev/null', { BENCH_LOG_SINK: 'devnull' }],
          ['gw: flag 0% (no breaker)', { BENCH_FLAG_PERCENT: '0' }],
          ['gw: flag 100% (all breaker)', { BENCH_FLAG_PERCENT: '100' }],
          ['gw: legacy-only route', { BENCH_LEGACY_ONLY: '1' }],
          ['gw: no x-strangler-* headers', { BENCH_RESPONSE_HEADERS: '0' }],
          ['gw: warn + legacy-only', { BENCH_LOG_LEVEL: 'warn', BENCH_LEGACY_ONLY: '1' }],
        ];
        for (const [name, env] of extra) await addProxy(name, 'gateway.ts', 'profile.log', env);
      }

      const roundSeconds = PHASE1_SECONDS / ROUNDS;
      console.log(`upstream: one process, two ports; gateway: flag at 50 % over ${USERS} user ids, default breaker, log level info to a file${PROXY_NODE_FLAGS.length ? `; proxies run with node ${PROXY_NODE_FLAGS.join(' ')}` : ''}`);
      console.log(`phase 1: max throughput, ${CONNECTIONS} connections, ${WARMUP_SECONDS} s warm-up, then ${ROUNDS} interleaved rounds of ${roundSeconds} s per variant`);
      for (const v of variants) await load({ url: v.url, proxyPid: null, seconds: WARMUP_SECONDS, connections: CONNECTIONS, rate: null, settleSeconds: 0 });
      const phase1 = new Map<string, Sample[]>(variants.map((v) => [v.name, []]));
      for (let round = 0; round < ROUNDS; round++) {
        for (const v of roundOrder(variants, round)) phase1.get(v.name)?.push(await load({ url: v.url, proxyPid: v.pid, seconds: roundSeconds, connections: CONNECTIONS, rate: null, settleSeconds: 0 }));
      }
      const t = new Map(variants.map((v) => [v.name, stats(merge(phase1.get(v.name) ?? []))]));
      const bareRounds = phase1.get('bare http-proxy') ?? [];
      const vsBare = (name: string) => pairedMedianRatio(phase1.get(name) ?? [], bareRounds);
      table(
        ['variant', 'req/s', 'p50 ms', 'p99 ms', 'vs bare', 'proxy CPU µs/req', 'non-2xx', 'errors'],
        variants.map((v) => {
          const s = t.get(v.name) as Stats;
          return [v.name, fmt(s.rps, 0), fmt(s.p50), fmt(s.p99), `${fmt(vsBare(v.name))}×`, v.pid === null ? '-' : fmt(s.cpuUsPerReq, 1), String(s.non2xx), String(s.errors)];
        }),
      );

      const ratio = vsBare('gateway');
      const gw = t.get('gateway') as Stats;
      const bareStats = t.get('bare http-proxy') as Stats;
      const perRound = (phase1.get('gateway') ?? []).map((g, i) => g.count / (bareRounds[i]?.count ?? Number.NaN));
      console.log(`gateway vs bare http-proxy per round: ${perRound.map((r) => `${fmt(r)}×`).join(' ')} (median ${fmt(ratio, 3)}×; ratio of totals ${fmt(gw.rps / bareStats.rps, 3)}×; bare/gateway CPU per request ${fmt(bareStats.cpuUsPerReq / gw.cpuUsPerReq, 3)}×)`);
      const spread = Math.max(...perRound) - Math.min(...perRound);
      if (spread > NOISY_ROUND_SPREAD) console.log(`WARNING gateway/bare ratios of the rounds span ${fmt(spread)} (more than ${NOISY_ROUND_SPREAD}): another load on this machine moved them; the verdict is within noise, rerun on a quiet machine`);
      const valid1 = gw.non2xx + gw.errors + bareStats.non2xx + bareStats.errors === 0;
      const targets: string[][] = [['gateway req/s vs bare http-proxy (median of rounds)', `${fmt(ratio, 3)}×`, `≥ ${TARGETS.throughputRatio}×`, valid1 ? verdict(ratio >= TARGETS.throughputRatio) : 'INVALID (non-2xx or errors)']];

      if (PHASE2_SECONDS > 0) {
        const rateRound = PHASE2_SECONDS / RATE_ROUNDS;
        console.log(`\nphase 2: fixed ${RATE} req/s, open loop over ${RATE_CONNECTIONS} connections, ${RATE_ROUNDS} interleaved rounds of ${RATE_SETTLE_SECONDS} s settle + ${rateRound} s measured per variant`);
        const phase2 = new Map<string, Sample[]>(variants.map((v) => [v.name, []]));
        for (let round = 0; round < RATE_ROUNDS; round++) {
          for (const v of roundOrder(variants, round)) phase2.get(v.name)?.push(await load({ url: v.url, proxyPid: v.pid, seconds: rateRound, connections: RATE_CONNECTIONS, rate: RATE, settleSeconds: RATE_SETTLE_SECONDS }));
        }
        const rated = new Map(variants.map((v) => [v.name, stats(merge(phase2.get(v.name) ?? []))]));
        const direct = rated.get('direct') as Stats;
        table(
          ['variant', 'req/s', 'p50 ms', 'p99 ms', '+p50 ms', '+p99 ms', 'proxy CPU µs/req', 'non-2xx', 'errors', 'late'],
          variants.map((v) => {
            const s = rated.get(v.name) as Stats;
            return [v.name, fmt(s.rps, 0), fmt(s.p50, 3), fmt(s.p99, 3), fmt(s.p50 - direct.p50, 3), fmt(s.p99 - direct.p99, 3), v.pid === null ? '-' : fmt(s.cpuUsPerReq, 1), String(s.non2xx), String(s.errors), String(s.starved)];
          }),
        );
        const gateway = rated.get('gateway') as Stats;
        const addedP50 = gateway.p50 - direct.p50;
        const addedP99 = gateway.p99 - direct.p99;
        const valid2 = gateway.non2xx + gateway.errors + direct.non2xx + direct.errors === 0 && gateway.starved + direct.starved === 0;
        const judge = (ok: boolean) => (valid2 ? verdict(ok) : 'INVALID (non-2xx, errors or late requests)');
        targets.push(
          [`added p50 at ${RATE} req/s`, `${fmt(addedP50, 3)} ms`, `≤ ${TARGETS.addedP50Ms} ms`, judge(addedP50 <= TARGETS.addedP50Ms)],
          [`added p99 at ${RATE} req/s`, `${fmt(addedP99, 3)} ms`, `≤ ${TARGETS.addedP99Ms} ms`, judge(addedP99 <= TARGETS.addedP99Ms)],
        );
      }

      const split = logSplit(join(dir, 'gateway.log'));
      console.log(`\ngateway log: ${split.lines} request lines, target service ${fmt((100 * split.service) / Math.max(1, split.lines), 1)} % / legacy ${fmt((100 * split.legacy) / Math.max(1, split.lines), 1)} %`);
      console.log('targets:');
      table(['target', 'measured', 'goal', ''], targets);
    } finally {
      for (const s of servers.reverse()) await s.stop();
      if (process.env.GATEWAY_BENCH_KEEP === '1') console.log(`kept the servers' output in ${dir}`);
      else rmSync(dir, { recursive: true, force: true });
    }
  },
} satisfies Bench;
