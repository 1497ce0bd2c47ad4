/**
 * ApiVersions v0–3. v3 (librdkafka's first request) has a flexible body and compact arrays, but the response
 * header stays v0 (no tag byte). Versions above 3 get UNSUPPORTED_VERSION with a v0 body, as KIP-511 specifies,
 * and clients retry lower.
 */
import { advertised } from '../protocol/api-keys.ts';
import { KafkaError } from '../protocol/error-codes.ts';
import { Writer } from '../protocol/writer.ts';
import type { Handler } from '../server/context.ts';

/** `sasl`: also list SaslHandshake and SaslAuthenticate (only a broker with SASL configured does). */
export function encodeApiVersions(version: number, error: number = KafkaError.NONE, sasl = false): Writer {
  const apis = advertised(sasl);
  const w = new Writer(256);
  w.int16(error);
  if (version >= 3) {
    w.uvarint(apis.size + 1);
    for (const [key, r] of apis) w.int16(key).int16(r.min).int16(r.max).tags();
    w.int32(0).tags();
    return w;
  }
  w.int32(apis.size);
  for (const [key, r] of apis) w.int16(key).int16(r.min).int16(r.max);
  if (version >= 1) w.int32(0);
  return w;
}

export const handleApiVersions: Handler = (broker, header) => {
  // The v3 body (client software name and version) is informational; nothing in it changes the answer.
  const sasl = broker.sasl !== undefined;
  if (header.apiVersion > 3) return encodeApiVersions(0, KafkaError.UNSUPPORTED_VERSION, sasl);
  return encodeApiVersions(header.apiVersion, KafkaError.NONE, sasl);
};
