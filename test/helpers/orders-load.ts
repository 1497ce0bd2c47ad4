/**
 * A bounded load generator for the demo's orders API behind the gateway: N virtual users, each a loop of
 * GET list / GET one / POST create with an `x-user-id` header drawn from a fixed pool of user ids (so every user
 * id keeps its flag bucket). Every answer is recorded with the phase it started in, the target the gateway names,
 * fallbacks, and how it failed (status, network error or client timeout = a hang). Order ids from 201 answers are
 * the acknowledged writes. `stop()` ends every loop and resolves when the last request has settled.
 */
import { setTimeout as delay } from 'node:timers/promises';

export type Kind = 'list' | 'get' | 'create';

export interface Sample {
  phase: string;
  kind: Kind;
  userId: string;
  /** performance.now() when the request was sent and when its answer (or failure) arrived. */
  startMs: number;
  endMs: number;
  /** HTTP status; 0 for a network error, -1 for a client-side timeout (a hang). */
  status: number;
  /** x-strangler-target, x-served-by and x-strangler-fallback as answered. */
  target: string | null;
  servedBy: string | null;
  fallback: string | null;
  /** error.code of a JSON error body, or the network error's message. */
  error: string | null;
}

export interface PhaseStats {
  requests: number;
  byKind: Record<Kind, number>;
  byTarget: Record<string, number>;
  fallbacks: number;
  readFailures: number;
  read404: number;
  writeAcked: number;
  writeFailures: number;
  hangs: number;
}

export interface LoadOptions {
  baseUrl: string;
  users: number;
  /** Distinct x-user-id values (default 200), so shares follow the flag percentage. */
  userIds?: number;
  /** Pause between one user's requests (pacing, not synchronisation). */
  thinkMs?: number;
  /** A request still unanswered after this long counts as a hang (default 8 s). */
  timeoutMs?: number;
  customers?: number;
  products?: number;
}

export class OrdersLoad {
  readonly samples: Sample[] = [];
  /** Order ids from 201 answers: the writes a client saw acknowledged. */
  readonly acknowledged = new Set<string>();
  phase = 'start';
  readonly #o: Required<LoadOptions>;
  #running = false;
  #loops: Promise<void>[] = [];
  readonly #idsByUser = new Map<string, string[]>();

  constructor(options: LoadOptions) {
    this.#o = { userIds: 200, thinkMs: 20, timeoutMs: 8_000, customers: 8, products: 12, ...options };
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#loops = Array.from({ length: this.#o.users }, (_, i) => this.#loop(i));
  }

  async stop(): Promise<void> {
    this.#running = false;
    await Promise.all(this.#loops);
  }

  /** Resolves once `count` more requests have completed in the current phase, or rejects after `timeoutMs`. */
  async waitForRequests(count: number, timeoutMs = 20_000, predicate: (s: Sample) => boolean = () => true): Promise<void> {
    const phase = this.phase;
    const deadline = performance.now() + timeoutMs;
    const counted = () => this.samples.filter((s) => s.phase === phase && predicate(s)).length;
    while (counted() < count) {
      if (performance.now() > deadline) throw new Error(`load: only ${counted()} of ${count} matching requests in phase "${phase}" within ${timeoutMs} ms`);
      await delay(25);
    }
  }

  stats(phase?: string): PhaseStats {
    const st: PhaseStats = { requests: 0, byKind: { list: 0, get: 0, create: 0 }, byTarget: {}, fallbacks: 0, readFailures: 0, read404: 0, writeAcked: 0, writeFailures: 0, hangs: 0 };
    for (const s of this.samples) {
      if (phase !== undefined && s.phase !== phase) continue;
      st.requests++;
      st.byKind[s.kind]++;
      const t = s.target ?? 'none';
      st.byTarget[t] = (st.byTarget[t] ?? 0) + 1;
      if (s.fallback) st.fallbacks++;
      if (s.status === -1) st.hangs++;
      if (s.kind === 'create') {
        if (s.status === 201) st.writeAcked++;
        else st.writeFailures++;
      } else if (s.status === 404) st.read404++;
      else if (s.status !== 200) st.readFailures++;
    }
    return st;
  }

  phases(): string[] {
    return [...new Set(this.samples.map((s) => s.phase))];
  }

  async #loop(worker: number): Promise<void> {
    let n = worker * 7919;
    while (this.#running) {
      n++;
      const userId = `user-${(n * 2654435761) % this.#o.userIds}`;
      const mine = this.#idsByUser.get(userId) ?? [];
      const roll = (n * 40503) % 10;
      const kind: Kind = roll < 3 ? 'create' : roll < 6 && mine.length > 0 ? 'get' : 'list';
      await this.#one(kind, userId, n, mine);
      if (this.#o.thinkMs > 0) await delay(this.#o.thinkMs);
    }
  }

  async #one(kind: Kind, userId: string, n: number, mine: string[]): Promise<void> {
    const { baseUrl, customers, products, timeoutMs } = this.#o;
    const customerId = 1 + (n % customers);
    let url: string;
    let init: RequestInit;
    const headers: Record<string, string> = { 'x-user-id': userId };
    if (kind === 'create') {
      headers['content-type'] = 'application/json';
      url = `${baseUrl}/api/orders`;
      init = { method: 'POST', body: JSON.stringify({ customerId, items: [{ productId: 1 + (n % products), quantity: 1 + (n % 3) }], notes: `load ${userId} #${n}` }) };
    } else if (kind === 'get') {
      url = `${baseUrl}/api/orders/${mine[n % mine.length]}`;
      init = { method: 'GET' };
    } else {
      url = `${baseUrl}/api/orders?customerId=${customerId}&limit=10`;
      init = { method: 'GET' };
    }
    const phase = this.phase;
    const startMs = performance.now();
    const sample: Sample = { phase, kind, userId, startMs, endMs: startMs, status: 0, target: null, servedBy: null, fallback: null, error: null };
    try {
      const res = await fetch(url, { ...init, headers, signal: AbortSignal.timeout(timeoutMs) });
      const text = await res.text();
      sample.status = res.status;
      sample.target = res.headers.get('x-strangler-target');
      sample.servedBy = res.headers.get('x-served-by');
      sample.fallback = res.headers.get('x-strangler-fallback');
      let body: unknown = null;
      try {
        body = JSON.parse(text);
      } catch {
        body = null;
      }
      if (res.status === 201 && kind === 'create') {
        const id = (body as { id?: unknown } | null)?.id;
        if (typeof id === 'string') {
          this.acknowledged.add(id);
          mine.push(id);
          this.#idsByUser.set(userId, mine);
        } else {
          sample.error = 'no id in 201 body';
        }
      } else if (res.status >= 400) {
        sample.error = (body as { error?: { code?: string } } | null)?.error?.code ?? `unparsed body: ${text.slice(0, 80)}`;
      }
    } catch (err) {
      const e = err as Error;
      sample.status = e.name === 'TimeoutError' ? -1 : 0;
      sample.error = `${e.name}: ${e.message}`;
    }
    sample.endMs = performance.now();
    this.samples.push(sample);
  }
}
