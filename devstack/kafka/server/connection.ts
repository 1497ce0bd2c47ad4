/**
 * One client connection: framing, serial dispatch, ordered writes.
 *
 *   bytes ─► frames (int32 size + request) ─► queue ─► one handler at a time ─► response (size, correlation id, body)
 *
 * Requests are processed one at a time and answered in order, as Kafka does by muting the channel: a parked
 * JoinGroup/SyncGroup/Fetch delays only later requests on the same connection. A frame whose size is below 8 or
 * above maxFrameBytes, a truncated or malformed request, or an unadvertised API closes this connection only.
 */
import type { Socket } from 'node:net';
import { KAFKA_LOG } from '../log-events.ts';
import { ApiKey, isAdvertised } from '../protocol/api-keys.ts';
import { KafkaError } from '../protocol/error-codes.ts';
import { ProtocolError, Reader } from '../protocol/reader.ts';
import { encodeApiVersions } from '../handlers/api-versions.ts';
import type { Writer } from '../protocol/writer.ts';
import type { BrokerState, RequestHeader } from './context.ts';
import { HANDLERS } from './handlers.ts';

const MIN_FRAME_BYTES = 8;
/** Stop reading from a client that pipelines this many unanswered requests. */
const MAX_QUEUED = 64;

export class Connection {
  readonly #socket: Socket;
  readonly #broker: BrokerState;
  readonly #maxFrameBytes: number;
  readonly #remote: string;
  #chunks: Buffer[] = [];
  #buffered = 0;
  readonly #queue: Buffer[] = [];
  #busy = false;
  #closed = false;
  #paused = false;

  constructor(socket: Socket, broker: BrokerState, maxFrameBytes: number) {
    this.#socket = socket;
    this.#broker = broker;
    this.#maxFrameBytes = maxFrameBytes;
    this.#remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (err) => broker.logger.debug({ remote: this.#remote, err: err.message }, KAFKA_LOG.socketError));
    socket.on('close', () => {
      this.#closed = true;
      broker.logger.debug({ remote: this.#remote }, KAFKA_LOG.connectionClosed);
    });
    broker.logger.debug({ remote: this.#remote }, KAFKA_LOG.connectionOpened);
  }

  #close(event: string, fields: Record<string, unknown>): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#broker.logger.warn({ remote: this.#remote, ...fields }, event);
    this.#queue.length = 0;
    this.#chunks = [];
    this.#socket.destroy();
  }

  #onData(chunk: Buffer): void {
    if (this.#closed) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    while (this.#buffered >= 4) {
      if (this.#chunks[0]!.length < 4) this.#chunks = [Buffer.concat(this.#chunks)];
      const size = this.#chunks[0]!.readInt32BE(0);
      if (size < MIN_FRAME_BYTES || size > this.#maxFrameBytes) {
        this.#close(KAFKA_LOG.badFrameSize, { size, maxFrameBytes: this.#maxFrameBytes });
        return;
      }
      if (this.#buffered < 4 + size) break;
      const all = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks);
      this.#queue.push(all.subarray(4, 4 + size));
      const rest = all.subarray(4 + size);
      this.#chunks = rest.length ? [rest] : [];
      this.#buffered = rest.length;
    }
    if (this.#queue.length >= MAX_QUEUED && !this.#paused) {
      this.#paused = true;
      this.#socket.pause();
    }
    void this.#pump();
  }

  async #pump(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        const frame = this.#queue.shift()!;
        await this.#handle(frame);
        if (this.#socket.writableNeedDrain && !this.#closed) {
          await new Promise<void>((resolve) => {
            const done = (): void => { this.#socket.off('drain', done); this.#socket.off('close', done); resolve(); };
            this.#socket.on('drain', done);
            this.#socket.on('close', done);
          });
        }
      }
      if (this.#paused && !this.#closed) {
        this.#paused = false;
        this.#socket.resume();
      }
    } finally {
      this.#busy = false;
    }
  }

  async #handle(frame: Buffer): Promise<void> {
    let header: RequestHeader | undefined;
    try {
      const r = new Reader(frame);
      const apiKey = r.int16();
      const apiVersion = r.int16();
      const correlationId = r.int32();
      const clientId = r.nullableString();
      header = { apiKey, apiVersion, correlationId, clientId, clientHost: this.#socket.remoteAddress ?? '' };
      if (apiKey === ApiKey.ApiVersions && apiVersion > 3) {
        // KIP-511: answer an unknown ApiVersions version with error 35 and a v0 body; the client retries lower.
        this.#write(correlationId, encodeApiVersions(0, KafkaError.UNSUPPORTED_VERSION));
        return;
      }
      const handler = HANDLERS.get(apiKey);
      if (!handler || !isAdvertised(apiKey, apiVersion)) {
        this.#close(KAFKA_LOG.unsupportedApi, { apiKey, apiVersion, clientId });
        return;
      }
      if (apiKey === ApiKey.ApiVersions && apiVersion >= 3) r.skipTags(); // request header v2
      const body = await handler(this.#broker, header, r);
      if (body && !this.#closed) this.#write(correlationId, body);
    } catch (err) {
      const fields = { apiKey: header?.apiKey, apiVersion: header?.apiVersion, clientId: header?.clientId, err: (err as Error).message };
      if (err instanceof ProtocolError || err instanceof RangeError) this.#close(KAFKA_LOG.badFrame, fields);
      else this.#close(KAFKA_LOG.handlerFailed, { ...fields, stack: (err as Error).stack });
    }
  }

  #write(correlationId: number, body: Writer): void {
    if (this.#closed) return;
    const chunks = body.chunks();
    const head = Buffer.allocUnsafe(8);
    head.writeInt32BE(4 + body.length, 0);
    head.writeInt32BE(correlationId, 4);
    this.#socket.cork();
    this.#socket.write(head);
    for (const c of chunks) this.#socket.write(c);
    this.#socket.uncork();
  }

  destroy(): void {
    this.#closed = true;
    this.#socket.destroy();
  }
}
