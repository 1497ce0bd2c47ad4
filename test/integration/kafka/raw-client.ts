/** A bare TCP client for protocol-level tests: writes raw frames, collects response frames, reports close. */
import { connect, type Socket } from 'node:net';
import { Writer } from '../../../devstack/kafka/protocol/writer.ts';

export function requestFrame(apiKey: number, apiVersion: number, correlationId: number, body: Buffer = Buffer.alloc(0), clientId: string | null = 'raw', headerTags = false): Buffer {
  const w = new Writer();
  w.int16(apiKey).int16(apiVersion).int32(correlationId).nullableString(clientId);
  if (headerTags) w.tags();
  w.raw(body);
  const payload = w.toBuffer();
  const size = Buffer.allocUnsafe(4);
  size.writeInt32BE(payload.length);
  return Buffer.concat([size, payload]);
}

export class RawClient {
  readonly socket: Socket;
  readonly frames: Buffer[] = [];
  readonly closed: Promise<void>;
  #buf = Buffer.alloc(0);
  #waiters: (() => void)[] = [];
  isClosed = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      while (this.#buf.length >= 4 && this.#buf.length >= 4 + this.#buf.readInt32BE(0)) {
        const size = this.#buf.readInt32BE(0);
        this.frames.push(this.#buf.subarray(4, 4 + size));
        this.#buf = this.#buf.subarray(4 + size);
      }
      this.#wake();
    });
    socket.on('error', () => {});
    this.closed = new Promise((r) => socket.once('close', () => { this.isClosed = true; this.#wake(); r(); }));
  }

  static open(port: number, host = '127.0.0.1'): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = connect({ port, host }, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  write(data: Buffer): void { this.socket.write(data); }

  /** Resolves once `n` response frames arrived or the connection closed. */
  async waitFrames(n: number): Promise<Buffer[]> {
    while (this.frames.length < n && !this.isClosed) await new Promise<void>((r) => this.#waiters.push(r));
    return this.frames;
  }

  close(): void { this.socket.destroy(); }
}

/**
 * Commits offsets as a simple (non-member) client: OffsetCommit v5 with generation −1 and no member id, which is
 * what kafkajs's admin.setOffsets ends up sending, without the consumer it runs (and waits maxWait for) first.
 */
export async function commitOffsets(port: number, groupId: string, topic: string, partitions: { partition: number; offset: number }[]): Promise<number[]> {
  const c = await RawClient.open(port);
  const body = new Writer().string(groupId).int32(-1).string('').int32(1).string(topic)
    .array(partitions, (w, p) => w.int32(p.partition).int64(p.offset).nullableString(null)).toBuffer();
  c.write(requestFrame(8, 5, 1, body));
  const [frame] = await c.waitFrames(1);
  c.close();
  if (!frame) throw new Error('OffsetCommit: connection closed without an answer');
  // correlation id, throttle, topic count, topic name, partition count, then {partition, error}
  let at = 4 + 4 + 4;
  at += 2 + frame.readInt16BE(at);
  const count = frame.readInt32BE(at);
  at += 4;
  return Array.from({ length: count }, (_, i) => frame.readInt16BE(at + i * 6 + 4));
}
