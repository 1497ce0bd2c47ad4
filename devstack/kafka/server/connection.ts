/**
 * One client connection: framing, serial dispatch, ordered writes.
 *
 *   bytes ─► frames (int32 size + request) ─► queue ─► one handler at a time ─► response (size, correlation id, body)
 *
 * Requests are processed one at a time and answered in order, as Kafka does by muting the channel: a parked
 * JoinGroup/SyncGroup/Fetch delays only later requests on the same connection. A frame whose size is below 8 or
 * above maxFrameBytes, a truncated or malformed request, or an unadvertised API closes this connection only.
 * With SASL configured, a connection must authenticate first (sasl.ts); until then frames are capped at 512 KiB
 * (Kafka's sasl.server.max.receive.size) and only ApiVersions, SaslHandshake and SaslAuthenticate are served.
 */
import type { Socket } from 'node:net';
import { KAFKA_LOG } from '../log-events.ts';
import { ApiKey, hasFlexibleHeader, isAdvertised } from '../protocol/api-keys.ts';
import { KafkaError } from '../protocol/error-codes.ts';
import { ProtocolError, Reader } from '../protocol/reader.ts';
import { encodeApiVersions } from '../handlers/api-versions.ts';
import type { Writer } from '../protocol/writer.ts';
import type { BrokerState, RequestHeader } from './context.ts';
import { HANDLERS } from './handlers.ts';
import { allowedBeforeAuthentication, SaslSession } from './sasl.ts';

const MIN_FRAME_BYTES = 8;
/** Kafka's sasl.server.max.receive.size: the largest frame accepted before authentication. */
const MAX_UNAUTHENTICATED_FRAME_BYTES = 512 * 1024;
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
  readonly #sasl: SaslSession | undefined;

  constructor(socket: Socket, broker: BrokerState, maxFrameBytes: number) {
    this.#socket = socket;
    this.#broker = broker;
    this.#maxFrameBytes = maxFrameBytes;
    this.#sasl = broker.sasl ? new SaslSession(broker.sasl) : undefined;
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

  /**
   * Stops serving this connection and logs why. `afterWrite`: end it once the pending writes are flushed (a response
   * that explains the close goes out first; destroyed if the client does not read it within 5 s), else at once.
   */
  #close(event: string, fields: Record<string, unknown>, afterWrite = false): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#broker.logger.warn({ remote: this.#remote, ...fields }, event);
    this.#queue.length = 0;
    this.#chunks = [];
    if (!afterWrite) {
      this.#socket.destroy();
      return;
    }
    this.#socket.end();
    this.#socket.setTimeout(5_000, () => this.#socket.destroy());
  }

  #onData(chunk: Buffer): void {
    if (this.#closed) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    while (this.#buffered >= 4) {
      if (this.#chunks[0]!.length < 4) this.#chunks = [Buffer.concat(this.#chunks)];
      const size = this.#chunks[0]!.readInt32BE(0);
      const authenticating = this.#sasl !== undefined && !this.#sasl.authenticated;
      const max = authenticating ? Math.min(this.#maxFrameBytes, MAX_UNAUTHENTICATED_FRAME_BYTES) : this.#maxFrameBytes;
      // Bare SASL tokens (after SaslHandshake v0) have no request header, so they may be shorter than 8 bytes.
      const min = this.#sasl?.expectsRawToken ? 0 : MIN_FRAME_BYTES;
      if (size < min || size > max) {
        this.#close(KAFKA_LOG.badFrameSize, { size, maxFrameBytes: max });
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
      if (this.#sasl?.expectsRawToken) {
        await this.#rawSaslToken(this.#sasl, frame);
        return;
      }
      const r = new Reader(frame);
      const apiKey = r.int16();
      const apiVersion = r.int16();
      const correlationId = r.int32();
      const clientId = r.nullableString();
      header = { apiKey, apiVersion, correlationId, clientId, clientHost: this.#socket.remoteAddress ?? '' };
      if (apiKey === ApiKey.ApiVersions && apiVersion > 3) {
        // KIP-511: answer an unknown ApiVersions version with error 35 and a v0 body; the client retries lower.
        this.#write(correlationId, encodeApiVersions(0, KafkaError.UNSUPPORTED_VERSION, this.#sasl !== undefined));
        return;
      }
      const sasl = this.#sasl;
      if (sasl && !sasl.authenticated && !allowedBeforeAuthentication(apiKey)) {
        this.#close(KAFKA_LOG.unauthenticated, { apiKey, apiVersion, clientId });
        return;
      }
      // The SASL APIs are advertised only with SASL configured, and served here rather than by a HANDLERS entry.
      const saslApi = sasl !== undefined && (apiKey === ApiKey.SaslHandshake || apiKey === ApiKey.SaslAuthenticate);
      const handler = HANDLERS.get(apiKey);
      if (!isAdvertised(apiKey, apiVersion, sasl !== undefined) || !(saslApi || handler)) {
        this.#close(KAFKA_LOG.unsupportedApi, { apiKey, apiVersion, clientId });
        return;
      }
      if (hasFlexibleHeader(apiKey, apiVersion)) r.skipTags(); // request header v2
      if (saslApi) {
        await this.#saslRequest(sasl, header, r);
        return;
      }
      const body = await handler!(this.#broker, header, r);
      if (body && !this.#closed) this.#write(correlationId, body);
    } catch (err) {
      const fields = { apiKey: header?.apiKey, apiVersion: header?.apiVersion, clientId: header?.clientId, err: (err as Error).message };
      if (err instanceof ProtocolError || err instanceof RangeError) this.#close(KAFKA_LOG.badFrame, fields);
      else this.#close(KAFKA_LOG.handlerFailed, { ...fields, stack: (err as Error).stack });
    }
  }

  async #saslRequest(sasl: SaslSession, header: RequestHeader, r: Reader): Promise<void> {
    const before = sasl.authenticated;
    const outcome = header.apiKey === ApiKey.SaslHandshake ? sasl.handshake(header.apiVersion, r) : await sasl.authenticate(header.apiVersion, r);
    if (outcome.body) this.#write(header.correlationId, outcome.body);
    const who = { mechanism: sasl.mechanism, user: sasl.user, clientId: header.clientId };
    if (outcome.close) this.#close(KAFKA_LOG.saslFailed, { ...who, reason: outcome.reason }, true);
    else if (!before && sasl.authenticated) this.#broker.logger.debug({ remote: this.#remote, ...who }, KAFKA_LOG.saslAuthenticated);
  }

  async #rawSaslToken(sasl: SaslSession, token: Buffer): Promise<void> {
    const { reply, reason } = await sasl.rawToken(token);
    if (reply === null) {
      this.#close(KAFKA_LOG.saslFailed, { mechanism: sasl.mechanism, user: sasl.user, reason });
      return;
    }
    if (this.#closed) return;
    const size = Buffer.allocUnsafe(4);
    size.writeInt32BE(reply.length, 0);
    this.#socket.cork();
    this.#socket.write(size);
    this.#socket.write(reply);
    this.#socket.uncork();
    if (sasl.authenticated) this.#broker.logger.debug({ remote: this.#remote, mechanism: sasl.mechanism, user: sasl.user }, KAFKA_LOG.saslAuthenticated);
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
