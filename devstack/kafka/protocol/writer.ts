/**
 * Writer for Kafka's big-endian wire types. Small fields go into a growing scratch buffer; large byte blobs
 * (fetched record batches) are kept as separate chunks so they are never copied (see `chunks()`).
 */
export class Writer {
  #buf: Buffer;
  #pos = 0;
  readonly #chunks: Buffer[] = [];
  #chunkBytes = 0;

  constructor(initial = 256) {
    this.#buf = Buffer.allocUnsafe(initial);
  }

  #ensure(n: number): void {
    if (this.#pos + n <= this.#buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.#buf.length * 2, this.#pos + n));
    this.#buf.copy(next, 0, 0, this.#pos);
    this.#buf = next;
  }

  int8(v: number): this { this.#ensure(1); this.#buf.writeInt8(v, this.#pos); this.#pos += 1; return this; }
  bool(v: boolean): this { return this.int8(v ? 1 : 0); }
  int16(v: number): this { this.#ensure(2); this.#buf.writeInt16BE(v, this.#pos); this.#pos += 2; return this; }
  int32(v: number): this { this.#ensure(4); this.#buf.writeInt32BE(v, this.#pos); this.#pos += 4; return this; }
  int64(v: number | bigint): this {
    this.#ensure(8);
    this.#buf.writeBigInt64BE(typeof v === 'bigint' ? v : BigInt(v), this.#pos);
    this.#pos += 8;
    return this;
  }

  nullableString(s: string | null): this {
    if (s === null) return this.int16(-1);
    const len = Buffer.byteLength(s);
    this.int16(len);
    this.#ensure(len);
    this.#buf.write(s, this.#pos, 'utf8');
    this.#pos += len;
    return this;
  }

  string(s: string): this { return this.nullableString(s); }

  nullableBytes(b: Buffer | null): this {
    if (b === null) return this.int32(-1);
    this.int32(b.length);
    return this.raw(b);
  }

  bytes(b: Buffer): this { return this.nullableBytes(b); }

  /** Bytes whose parts are already separate buffers (fetched batches): written without copying. */
  bytesChunks(parts: readonly Buffer[]): this {
    let total = 0;
    for (const p of parts) total += p.length;
    this.int32(total);
    for (const p of parts) this.raw(p);
    return this;
  }

  array<T>(items: readonly T[], item: (w: Writer, v: T) => void): this {
    this.int32(items.length);
    for (const v of items) item(this, v);
    return this;
  }

  uvarint(v: number): this {
    let n = v;
    while (n >= 0x80) {
      this.int8(((n & 0x7f) | 0x80) << 24 >> 24);
      n = Math.floor(n / 128);
    }
    return this.int8(n << 24 >> 24);
  }

  varint(v: number): this { return this.uvarint(v >= 0 ? v * 2 : -v * 2 - 1); }

  compactString(s: string): this {
    const b = Buffer.from(s, 'utf8');
    this.uvarint(b.length + 1);
    return this.raw(b);
  }

  /** An empty tagged-field section. */
  tags(): this { return this.uvarint(0); }

  raw(b: Buffer): this {
    if (b.length >= 4096) {
      this.#flush();
      this.#chunks.push(b);
      this.#chunkBytes += b.length;
      return this;
    }
    this.#ensure(b.length);
    b.copy(this.#buf, this.#pos);
    this.#pos += b.length;
    return this;
  }

  #flush(): void {
    if (this.#pos === 0) return;
    const done = this.#buf.subarray(0, this.#pos);
    this.#chunks.push(done);
    this.#chunkBytes += done.length;
    this.#buf = Buffer.allocUnsafe(Math.max(256, this.#buf.length - this.#pos));
    this.#pos = 0;
  }

  get length(): number { return this.#chunkBytes + this.#pos; }

  /** The written bytes as a list of buffers (no copy of large blobs). */
  chunks(): Buffer[] {
    this.#flush();
    return this.#chunks;
  }

  toBuffer(): Buffer {
    const parts = this.chunks();
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }
}
