/**
 * Topics and their partition logs. With a data dir: `topics.json` (written atomically) lists topics and configs;
 * each partition's batches are in `logs/<topic>/<partition>.log`.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../../common/logger.ts';
import { KAFKA_LOG } from '../log-events.ts';
import { writeFileAtomic } from '../persistence/json-file.ts';
import { FileLogStore, MemoryLogStore, type LogStore } from '../persistence/log-store.ts';
import { PartitionLog } from './partition-log.ts';

export interface Topic {
  readonly name: string;
  readonly partitions: PartitionLog[];
  readonly configs: Readonly<Record<string, string | null>>;
  readonly maxMessageBytes: number;
  /** message.timestamp.type=LogAppendTime: batches are stamped with the broker's time on append. */
  readonly logAppendTime: boolean;
}

/** Kafka's two values of the message.timestamp.type topic config. */
export const TIMESTAMP_TYPES: readonly string[] = ['CreateTime', 'LogAppendTime'];

interface TopicsFile { topics: { name: string; partitions: number; configs: Record<string, string | null> }[] }

const TOPIC_NAME = /^[a-zA-Z0-9._-]{1,249}$/;

export function isValidTopicName(name: string): boolean {
  return TOPIC_NAME.test(name) && name !== '.' && name !== '..';
}

export class TopicRegistry {
  readonly #topics = new Map<string, Topic>();
  readonly #dataDir: string | undefined;
  readonly #log: Logger;
  readonly #defaultMaxMessageBytes: number;

  constructor(options: { dataDir: string | undefined; logger: Logger; maxMessageBytes: number }) {
    this.#dataDir = options.dataDir;
    this.#log = options.logger;
    this.#defaultMaxMessageBytes = options.maxMessageBytes;
    if (this.#dataDir) this.#load(this.#dataDir);
  }

  #load(dataDir: string): void {
    mkdirSync(join(dataDir, 'logs'), { recursive: true });
    const file = join(dataDir, 'topics.json');
    if (!existsSync(file)) return;
    let parsed: TopicsFile;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8')) as TopicsFile;
    } catch (err) {
      throw new Error(`kafka dev broker: ${file} is not valid JSON (${(err as Error).message}); fix it or move the data dir aside`, { cause: err });
    }
    for (const t of parsed.topics) {
      const topic = this.#open(t.name, t.partitions, t.configs);
      this.#topics.set(topic.name, topic);
    }
  }

  #open(name: string, count: number, configs: Record<string, string | null>): Topic {
    const partitions: PartitionLog[] = [];
    try {
      for (let p = 0; p < count; p++) {
        let store: LogStore;
        const recovered: [number, number, number, number, number, Buffer][] = [];
        if (this.#dataDir) {
          const dir = join(this.#dataDir, 'logs', name);
          mkdirSync(dir, { recursive: true });
          store = new FileLogStore(join(dir, `${p}.log`),
            (b) => recovered.push([b.position, b.size, b.baseOffset, b.lastOffsetDelta, b.maxTimestamp, b.header]),
            (valid, total) => this.#log.warn({ topic: name, partition: p, validBytes: valid, fileBytes: total }, KAFKA_LOG.tornTail));
        } else {
          store = new MemoryLogStore();
        }
        const log = new PartitionLog(store);
        for (const r of recovered) log.recover(...r);
        partitions.push(log);
      }
    } catch (err) {
      for (const log of partitions) log.store.close();
      throw err;
    }
    const max = Number(configs['max.message.bytes'] ?? this.#defaultMaxMessageBytes);
    return {
      name, partitions, configs, maxMessageBytes: Number.isFinite(max) && max > 0 ? max : this.#defaultMaxMessageBytes,
      logAppendTime: configs['message.timestamp.type'] === 'LogAppendTime',
    };
  }

  /** Writes topics.json listing `topics`; throws (disk full, I/O error) with the old file left in place. */
  #save(topics: readonly Topic[]): void {
    if (!this.#dataDir) return;
    const file: TopicsFile = { topics: topics.map((t) => ({ name: t.name, partitions: t.partitions.length, configs: { ...t.configs } })) };
    writeFileAtomic(join(this.#dataDir, 'topics.json'), `${JSON.stringify(file, null, 2)}\n`);
  }

  get(name: string): Topic | undefined { return this.#topics.get(name); }
  list(): Topic[] { return [...this.#topics.values()]; }

  /**
   * Creates the topic's files, then records it in topics.json, and only then serves it: if either write fails
   * (disk full) the error is thrown and the topic does not exist, rather than living in memory only and
   * vanishing with its acknowledged data at the next start.
   */
  create(name: string, partitions: number, configs: Record<string, string | null> = {}): Topic {
    const dir = this.#dataDir ? join(this.#dataDir, 'logs', name) : undefined;
    if (dir) rmSync(dir, { recursive: true, force: true });
    const topic = this.#open(name, partitions, configs);
    try {
      this.#save([...this.#topics.values(), topic]);
    } catch (err) {
      for (const p of topic.partitions) p.store.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    this.#topics.set(name, topic);
    this.#log.info({ topic: name, partitions }, KAFKA_LOG.topicCreated);
    return topic;
  }

  /** Removes the topic from topics.json first (a failed write throws and keeps the topic), then from memory. */
  delete(name: string): boolean {
    const topic = this.#topics.get(name);
    if (!topic) return false;
    this.#save(this.list().filter((t) => t !== topic));
    this.#topics.delete(name);
    for (const p of topic.partitions) {
      p.store.close();
      p.wakeAll();
    }
    if (this.#dataDir) rmSync(join(this.#dataDir, 'logs', name), { recursive: true, force: true });
    this.#log.info({ topic: name }, KAFKA_LOG.topicDeleted);
    return true;
  }

  async syncAll(): Promise<void> {
    await Promise.all(this.list().flatMap((t) => t.partitions.map((p) => p.store.sync())));
  }

  close(): void {
    for (const t of this.#topics.values()) for (const p of t.partitions) {
      p.wakeAll();
      p.store.close();
    }
  }
}
