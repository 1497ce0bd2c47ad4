/** Seeded random writers for the sync test schema (both shapes), and a pump that runs relays and consumers until quiet. */
import type { Pool } from 'pg';
import type { Pools } from '../../../migration-scripts/db.ts';
import type { SyncConfig } from '../../../migration-scripts/config-schema.ts';
import { ChangeRelay } from '../../../legacy-adapter/capture/relay.ts';
import { Applier } from '../../../migration-scripts/apply.ts';
import type { CompiledTable } from '../../../migration-scripts/mapping.ts';
import type { Logger } from '../../../common/logger.ts';
import { MemoryBus, MemoryConsumer } from './fixture.ts';


const WORDS = ['alpha', 'beta', 'gamma', 'delta', 'ümlaut', 'naïve', '東京', 'quote\'s', 'back\\slash', 'emoji😀'];

export function randomWriter(r: () => number) {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;
  const maybe = <T>(v: () => T, pNull = 0.15): T | null => (r() < pNull ? null : v());
  const ts = () => new Date(1_600_000_000_000 + Math.floor(r() * 1e11)).toISOString().replace('Z', `${String(Math.floor(r() * 1000)).padStart(3, '0')}+0${Math.floor(r() * 9)}:00`);
  const json = () => JSON.stringify({ n: Math.floor(r() * 1e6), f: Math.round(r() * 1e6) / 1e3, s: pick(WORDS), list: [1, pick(WORDS), null], nested: { ok: r() < 0.5 } });
  const big = () => (r() < 0.1 ? pick(WORDS).repeat(2_000 + Math.floor(r() * 2_000)) : pick(WORDS));
  const amount = () => `${Math.floor(r() * 1e12)}.${String(Math.floor(r() * 1e6)).padStart(6, '0')}`;
  const names = () => (r() < 0.2 ? [null, null] : [pick(['Ann', 'Bob', 'Chloé', 'Dmitri']), pick(['Lee', 'Smith', 'Øster'])]);
  return {
    async legacy(pool: Pool, keys: number): Promise<void> {
      const id = 1 + Math.floor(r() * keys);
      const email = `u${1 + Math.floor(r() * keys)}@x`;
      const op = r();
      if (op < 0.45) {
        const [f, l] = names();
        await pool.query(`INSERT INTO items (id, name, price_cents, body, data, happened_at, first_name, last_name, amount, flag) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)
          ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, price_cents = EXCLUDED.price_cents, body = EXCLUDED.body, data = EXCLUDED.data, happened_at = EXCLUDED.happened_at,
          first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, amount = EXCLUDED.amount, flag = EXCLUDED.flag`,
        [id, pick(WORDS), maybe(() => Math.floor(r() * 1e6)), maybe(big), maybe(json), maybe(ts), f, l, maybe(amount), maybe(() => r() < 0.5)]);
      } else if (op < 0.75) {
        await pool.query('UPDATE items SET name = $2, price_cents = $3, data = $4 WHERE id = $1', [id, pick(WORDS), maybe(() => Math.floor(r() * 1e6)), maybe(json)]);
      } else if (op < 0.85) {
        await pool.query('DELETE FROM items WHERE id = $1', [id]);
      } else if (op < 0.95) {
        await pool.query(`INSERT INTO people VALUES ($1, $2, $3, $4, $5) ON CONFLICT (email) DO UPDATE SET street = EXCLUDED.street, city = EXCLUDED.city, zip = EXCLUDED.zip, updated = EXCLUDED.updated`,
          [email, maybe(() => pick(WORDS)), maybe(() => pick(WORDS)), maybe(() => String(Math.floor(r() * 99999))), maybe(() => ts().slice(0, 26))]);
      } else {
        await pool.query('DELETE FROM people WHERE email = $1', [email]);
      }
    },
    async service(pool: Pool, keys: number): Promise<void> {
      const id = 1 + Math.floor(r() * keys);
      const email = `u${1 + Math.floor(r() * keys)}@x`;
      const op = r();
      if (op < 0.45) {
        const [f, l] = names();
        await pool.query(`INSERT INTO catalog_items (item_id, title, price, body, data, happened_at, full_name, amount, flag) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)
          ON CONFLICT (item_id) DO UPDATE SET title = EXCLUDED.title, price = EXCLUDED.price, body = EXCLUDED.body, data = EXCLUDED.data, happened_at = EXCLUDED.happened_at,
          full_name = EXCLUDED.full_name, amount = EXCLUDED.amount, flag = EXCLUDED.flag`,
        [id, pick(WORDS), maybe(() => (Math.floor(r() * 1e6) / 100).toFixed(2)), maybe(big), maybe(json), maybe(ts), f === null ? null : `${f} ${l}`, maybe(amount), maybe(() => r() < 0.5)]);
      } else if (op < 0.75) {
        await pool.query('UPDATE catalog_items SET title = $2, amount = $3 WHERE item_id = $1', [id, pick(WORDS), maybe(amount)]);
      } else if (op < 0.85) {
        await pool.query('DELETE FROM catalog_items WHERE item_id = $1', [id]);
      } else if (op < 0.95) {
        const addr = r() < 0.2 ? null : JSON.stringify({ street: pick(WORDS), city: pick(WORDS), zip: String(Math.floor(r() * 99999)) });
        await pool.query('INSERT INTO persons VALUES ($1, $2, $3) ON CONFLICT (email) DO UPDATE SET address = EXCLUDED.address, updated = EXCLUDED.updated',
          [email, addr === null ? JSON.stringify({ street: null, city: null, zip: null }) : addr, maybe(() => ts().slice(0, 26))]);
      } else {
        await pool.query('DELETE FROM persons WHERE email = $1', [email]);
      }
    },
  };
}

/** Relays and appliers for both directions over one memory bus. */
export class Pipeline {
  readonly bus = new MemoryBus(2);
  readonly relays: Record<'legacy' | 'service', ChangeRelay>;
  readonly appliers: Record<'legacy' | 'service', Applier>;
  readonly consumers: Record<'legacy' | 'service', MemoryConsumer>;
  constructor(config: SyncConfig, pools: Pools, tables: readonly CompiledTable[], batch = 200, log?: Logger) {
    this.relays = {
      legacy: new ChangeRelay({ config, pool: pools.legacy, side: 'legacy', sink: this.bus, batchSize: batch, log }),
      service: new ChangeRelay({ config, pool: pools.service, side: 'service', sink: this.bus, batchSize: batch, log }),
    };
    this.appliers = {
      legacy: new Applier({ pool: pools.legacy, config, target: 'legacy', tables, log }),
      service: new Applier({ pool: pools.service, config, target: 'service', tables, log }),
    };
    // consumers are keyed by the SOURCE side whose topics they read
    this.consumers = {
      legacy: new MemoryConsumer(this.bus, 'legacy', (b) => this.appliers.service.applyBatch(b)),
      service: new MemoryConsumer(this.bus, 'service', (b) => this.appliers.legacy.applyBatch(b)),
    };
  }
  /** One round: publish what both sides captured, apply what is on the bus. Returns events moved. */
  async round(max = 200): Promise<number> {
    let n = 0;
    n += await this.relays.legacy.step();
    n += await this.relays.service.step();
    n += await this.consumers.legacy.drain(max);
    n += await this.consumers.service.drain(max);
    return n;
  }
  async settle(): Promise<void> {
    for (let i = 0; i < 10_000; i++) if ((await this.round()) === 0) return;
    throw new Error('pipeline did not settle');
  }
}
