/**
 * Idempotent-producer deduplication for one partition, as Kafka does it: per producer id the epoch and the
 * sequence ranges of its last 5 batches. A retried batch that was already stored is answered with its original
 * offset instead of being stored twice; a gap in sequences is OUT_OF_ORDER_SEQUENCE_NUMBER. The state is rebuilt
 * from the log's batch headers at start, so a retry after a broker restart is still recognised.
 * Batches with producer id −1 (plain producers, librdkafka's default) skip all of this.
 */
import { KafkaError } from '../protocol/error-codes.ts';

const RETAINED_BATCHES = 5;

interface SeqRange { readonly firstSeq: number; readonly lastSeq: number; readonly baseOffset: number }
interface ProducerEntry { epoch: number; batches: SeqRange[] }

export interface ProducerFields { readonly producerId: bigint; readonly epoch: number; readonly baseSequence: number; readonly lastOffsetDelta: number }

export type ProducerVerdict =
  | { kind: 'append' }
  | { kind: 'duplicate'; baseOffset: number }
  | { kind: 'reject'; error: number; reason: string };

export function producerFields(batch: Buffer): ProducerFields {
  return { producerId: batch.readBigInt64BE(43), epoch: batch.readInt16BE(51), baseSequence: batch.readInt32BE(53), lastOffsetDelta: batch.readInt32BE(23) };
}

export class ProducerStates {
  readonly #producers = new Map<bigint, ProducerEntry>();

  check(f: ProducerFields): ProducerVerdict {
    if (f.producerId < 0n || f.baseSequence < 0) return { kind: 'append' };
    const entry = this.#producers.get(f.producerId);
    if (!entry || f.epoch > entry.epoch) return { kind: 'append' }; // a new producer or epoch may start at any sequence
    if (f.epoch < entry.epoch) return { kind: 'reject', error: KafkaError.INVALID_PRODUCER_EPOCH, reason: `epoch ${f.epoch} is older than ${entry.epoch}` };
    const lastSeq = f.baseSequence + f.lastOffsetDelta;
    const dup = entry.batches.find((b) => b.firstSeq === f.baseSequence && b.lastSeq === lastSeq);
    if (dup) return { kind: 'duplicate', baseOffset: dup.baseOffset };
    const last = entry.batches[entry.batches.length - 1];
    if (last && f.baseSequence !== (last.lastSeq + 1) % 2 ** 31) {
      return { kind: 'reject', error: KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, reason: `sequence ${f.baseSequence}, expected ${last.lastSeq + 1}` };
    }
    return { kind: 'append' };
  }

  /** Records a stored batch (after append, or while recovering the log at start). */
  record(f: ProducerFields, baseOffset: number): void {
    if (f.producerId < 0n || f.baseSequence < 0) return;
    let entry = this.#producers.get(f.producerId);
    if (!entry || f.epoch > entry.epoch) this.#producers.set(f.producerId, (entry = { epoch: f.epoch, batches: [] }));
    entry.batches.push({ firstSeq: f.baseSequence, lastSeq: f.baseSequence + f.lastOffsetDelta, baseOffset });
    if (entry.batches.length > RETAINED_BATCHES) entry.batches.shift();
  }
}
