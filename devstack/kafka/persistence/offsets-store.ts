/**
 * Committed group offsets. With a data dir: an append-only JSON-lines log (`offsets.log`), written before
 * OffsetCommit is answered and replayed at start; a torn last line (kill -9 mid-write) is ignored. At start the
 * replayed state is compacted into a fresh file (written atomically), without the offsets of topics that no longer
 * exist. As on Kafka, deleting a topic deletes every group's offsets for it, and a group left with none is gone.
 */
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../../common/logger.ts';
import { KAFKA_LOG } from '../log-events.ts';
import { AppendOnlyFile } from './append-file.ts';
import { writeFileAtomic } from './json-file.ts';

export interface CommittedOffset { readonly offset: number; readonly metadata: string | null }

type Line = { g: string; t: string; p: number; o: number; m: string | null } | { g: string; deleted: true } | { t: string; topicDeleted: true };

export class OffsetsStore {
  /** group → topic → partition → offset */
  readonly #groups = new Map<string, Map<string, Map<number, CommittedOffset>>>();
  readonly #file: AppendOnlyFile | undefined;

  /** `topicExists`: offsets of other topics are dropped at start (a topic deletion whose offsets line was not written). */
  constructor(dataDir: string | undefined, log: Logger, topicExists: (topic: string) => boolean = () => true) {
    if (!dataDir) return;
    const path = join(dataDir, 'offsets.log');
    if (existsSync(path)) {
      const lines = readFileSync(path, 'utf8').split('\n');
      lines.forEach((line, i) => {
        if (!line) return;
        try {
          this.#apply(JSON.parse(line) as Line);
        } catch (err) {
          if (i < lines.length - 2) throw err; // only the last line may be torn
          log.warn({ path }, KAFKA_LOG.offsetsTornTail);
        }
      });
    }
    const gone = new Set([...this.#groups.values()].flatMap((topics) => [...topics.keys()]).filter((t) => !topicExists(t)));
    for (const t of gone) this.#dropTopic(t);
    const snapshot = this.#snapshot();
    writeFileAtomic(path, snapshot);
    this.#file = new AppendOnlyFile(openSync(path, 'a'), Buffer.byteLength(snapshot));
  }

  #apply(line: Line): void {
    if ('topicDeleted' in line) {
      this.#dropTopic(line.t);
      return;
    }
    if ('deleted' in line) {
      this.#groups.delete(line.g);
      return;
    }
    let topics = this.#groups.get(line.g);
    if (!topics) this.#groups.set(line.g, (topics = new Map()));
    let parts = topics.get(line.t);
    if (!parts) topics.set(line.t, (parts = new Map()));
    parts.set(line.p, { offset: line.o, metadata: line.m });
  }

  #dropTopic(topic: string): void {
    for (const [g, topics] of this.#groups) {
      topics.delete(topic);
      if (topics.size === 0) this.#groups.delete(g);
    }
  }

  #snapshot(): string {
    let out = '';
    for (const [g, topics] of this.#groups) for (const [t, parts] of topics) for (const [p, c] of parts) {
      out += `${JSON.stringify({ g, t, p, o: c.offset, m: c.metadata } satisfies Line)}\n`;
    }
    return out;
  }

  /** All or nothing: a failed write (disk full) throws with no partial line left to break the replay at start. */
  #write(lines: Line[]): void {
    if (this.#file === undefined) return;
    this.#file.append(Buffer.from(lines.map((l) => `${JSON.stringify(l)}\n`).join('')));
  }

  /**
   * Stores offsets exactly as given (negative values included) and writes them to the log before returning;
   * throws, storing nothing, if that write fails.
   */
  commit(group: string, entries: readonly { topic: string; partition: number; offset: number; metadata: string | null }[]): void {
    const lines: Line[] = entries.map((e) => ({ g: group, t: e.topic, p: e.partition, o: e.offset, m: e.metadata }));
    this.#write(lines);
    for (const l of lines) this.#apply(l);
  }

  get(group: string, topic: string, partition: number): CommittedOffset | undefined {
    return this.#groups.get(group)?.get(topic)?.get(partition);
  }

  hasGroup(group: string): boolean { return this.#groups.has(group); }
  groups(): string[] { return [...this.#groups.keys()]; }

  /** Every committed offset of the group, by topic. */
  all(group: string): Map<string, Map<number, CommittedOffset>> {
    return this.#groups.get(group) ?? new Map();
  }

  deleteGroup(group: string): void {
    if (!this.#groups.has(group)) return;
    this.#write([{ g: group, deleted: true }]);
    this.#groups.delete(group);
  }

  /**
   * The topic was deleted: every group's offsets for it go too (Kafka's onPartitionsDeleted), so a group on a
   * topic recreated under the same name starts by its reset policy instead of at an offset of the old log.
   * Dropped from memory even if the log line cannot be written (it throws then); the next start drops them anyway.
   */
  deleteTopic(topic: string): void {
    try {
      this.#write([{ t: topic, topicDeleted: true }]);
    } finally {
      this.#dropTopic(topic);
    }
  }

  async sync(): Promise<void> {
    await this.#file?.sync();
  }

  close(): void {
    if (this.#file !== undefined) closeSync(this.#file.fd);
  }
}
