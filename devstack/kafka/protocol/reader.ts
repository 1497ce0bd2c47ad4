/**
 * Bounds-checked reader for Kafka's big-endian wire types. Every read that would run past the end throws
 * ProtocolError, which the connection turns into "close this connection" (never a crash of the broker).
 */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

export class Reader {
  readonly #buf: Buffer;
  #pos: number;

  constructor(buf: Buffer, pos = 0) {
    this.#buf = buf;
    this.#pos = pos;
  }

  get position(): number { return this.#pos; }
  get remaining(): number { return this.#buf.length - this.#pos; }

  #need(n: number, what: string): number {
    if (n < 0 || this.#pos + n > this.#buf.length) throw new ProtocolError(`truncated ${what}: need ${n} bytes at ${this.#pos}, have ${this.remaining}`);
    const at = this.#pos;
    this.#pos += n;
    return at;
  }

  int8(): number { return this.#buf.readInt8(this.#need(1, 'int8')); }
  bool(): boolean { return this.int8() !== 0; }
  int16(): number { return this.#buf.readInt16BE(this.#need(2, 'int16')); }
  int32(): number { return this.#buf.readInt32BE(this.#need(4, 'int32')); }
  /** int64 kept exact (producer ids, sentinels). */
  int64(): bigint { return this.#buf.readBigInt64BE(this.#need(8, 'int64')); }
  /** int64 as a number: offsets and timestamps fit in 2^53. */
  int64n(): number { return Number(this.int64()); }

  nullableString(): string | null {
    const len = this.int16();
    if (len === -1) return null;
    if (len < -1) throw new ProtocolError(`invalid string length ${len}`);
    const at = this.#need(len, 'string');
    return this.#buf.toString('utf8', at, at + len);
  }

  string(): string {
    const s = this.nullableString();
    if (s === null) throw new ProtocolError('null where a string is required');
    return s;
  }

  /** int32-length bytes; null for -1. Returns a view, not a copy. */
  nullableBytes(): Buffer | null {
    const len = this.int32();
    if (len === -1) return null;
    if (len < -1) throw new ProtocolError(`invalid bytes length ${len}`);
    const at = this.#need(len, 'bytes');
    return this.#buf.subarray(at, at + len);
  }

  bytes(): Buffer { return this.nullableBytes() ?? Buffer.alloc(0); }

  /** int32-count array; null for -1. The count is checked against the bytes left so an absurd count cannot allocate. */
  nullableArray<T>(item: (r: Reader) => T): T[] | null {
    const n = this.int32();
    if (n === -1) return null;
    if (n < -1 || n > this.remaining) throw new ProtocolError(`invalid array length ${n} with ${this.remaining} bytes left`);
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(item(this));
    return out;
  }

  array<T>(item: (r: Reader) => T): T[] { return this.nullableArray(item) ?? []; }

  uvarint(): number {
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = this.#buf.readUInt8(this.#need(1, 'varint'));
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
    }
    throw new ProtocolError('varint longer than 5 bytes');
  }

  /** Zigzag varint (record fields). */
  varint(): number {
    const u = this.uvarint();
    return u % 2 === 0 ? u / 2 : -(u + 1) / 2;
  }

  /** Zigzag varlong, 64-bit safe. */
  varlong(): bigint {
    let result = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      const b = this.#buf.readUInt8(this.#need(1, 'varlong'));
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return (result >> 1n) ^ -(result & 1n);
    }
    throw new ProtocolError('varlong longer than 10 bytes');
  }

  compactNullableString(): string | null {
    const n = this.uvarint();
    if (n === 0) return null;
    const at = this.#need(n - 1, 'compact string');
    return this.#buf.toString('utf8', at, at + n - 1);
  }

  /** Skips a tagged-field section (flexible versions). */
  skipTags(): void {
    const count = this.uvarint();
    for (let i = 0; i < count; i++) {
      this.uvarint();
      this.#need(this.uvarint(), 'tagged field');
    }
  }

  raw(n: number): Buffer {
    const at = this.#need(n, 'raw bytes');
    return this.#buf.subarray(at, at + n);
  }
}
