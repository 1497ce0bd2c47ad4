/**
 * ApiVersions v0–3. v3 (librdkafka's first request) has a flexible body and compact arrays, but the response
 * header stays v0 (no tag byte). Versions above 3 get UNSUPPORTED_VERSION with a v0 body, as KIP-511 specifies,
 * and clients retry lower.
 */
import { ADVERTISED } from '../protocol/api-keys.ts';
import { KafkaError } from '../protocol/error-codes.ts';
import { Writer } from '../protocol/writer.ts';
import type { Handler } from '../server/context.ts';

export function encodeApiVersions(version: number, error: number = KafkaError.NONE): Writer {
  const w = new Writer(256);
  w.int16(error);
  if (version >= 3) {
    w.uvarint(ADVERTISED.size + 1);
    for (const [key, r] of ADVERTISED) w.int16(key).int16(r.min).int16(r.max).tags();
    w.int32(0).tags();
    return w;
  }
  w.int32(ADVERTISED.size);
  for (const [key, r] of ADVERTISED) w.int16(key).int16(r.min).int16(r.max);
  if (version >= 1) w.int32(0);
  return w;
}

export const handleApiVersions: Handler = (_broker, header) => {
  // The v3 body (client software name and version) is informational; nothing in it changes the answer.
  if (header.apiVersion > 3) return encodeApiVersions(0, KafkaError.UNSUPPORTED_VERSION);
  return encodeApiVersions(header.apiVersion);
};
