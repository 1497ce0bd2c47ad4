/**
 * TLS client settings, the same wherever strangler dials a TLS peer (Kafka brokers, https:// upstreams): the config
 * shape, and the PEM files read into node TLS options. Callers turn a problem into their own error (a Kafka error
 * code, a config problem), each naming the field and the file.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { createSecureContext, type ConnectionOptions } from 'node:tls';
import { z } from 'zod';
import { messageOf } from './errors.ts';

/** The TLS settings object. */
export const tlsClientSchema = z.object({
  caFile: z.string().min(1).optional().describe('PEM file of the CA(s) that signed the server certificates; omitted = the system CAs. A relative path is resolved against the working directory.'),
  certFile: z.string().min(1).optional().describe('PEM client certificate, for servers that require mutual TLS (together with keyFile).'),
  keyFile: z.string().min(1).optional().describe('PEM private key of certFile.'),
  rejectUnauthorized: z.boolean().default(true).describe('Verify the server certificates and host names; false only for throwaway test setups.'),
  servername: z.string().min(1).optional().describe('TLS SNI / certificate host name to expect, when it differs from the host dialled.'),
}).strict().refine((t) => (t.certFile === undefined) === (t.keyFile === undefined), 'certFile and keyFile together (mutual TLS needs both) or neither');

export type TlsClientConfig = z.output<typeof tlsClientSchema>;

export type TlsFileProblem =
  | { kind: 'unreadable'; field: 'caFile' | 'certFile' | 'keyFile'; file: string; code: string }
  | { kind: 'key-mismatch'; certFile: string; keyFile: string; code: string; detail: string };

/** Node TLS options with the PEM files read now, or the first problem with them. */
export function tlsClientOptions(config: TlsClientConfig): { options: ConnectionOptions } | { problem: TlsFileProblem } {
  const files: Partial<Record<'caFile' | 'certFile' | 'keyFile', Buffer>> = {};
  for (const field of ['caFile', 'certFile', 'keyFile'] as const) {
    const file = config[field];
    if (file === undefined) continue;
    try {
      files[field] = readFileSync(resolve(file));
    } catch (err) {
      return { problem: { kind: 'unreadable', field, file, code: (err as NodeJS.ErrnoException).code ?? messageOf(err) } };
    }
  }
  const options: ConnectionOptions = {
    rejectUnauthorized: config.rejectUnauthorized,
    ...(files.caFile !== undefined ? { ca: [files.caFile] } : {}),
    ...(files.certFile !== undefined ? { cert: files.certFile } : {}),
    ...(files.keyFile !== undefined ? { key: files.keyFile } : {}),
    ...(config.servername !== undefined ? { servername: config.servername } : {}),
  };
  if (options.cert !== undefined) {
    // A certificate and key that do not make a pair would otherwise fail each handshake, far from the config.
    try {
      createSecureContext({ cert: options.cert, key: options.key });
    } catch (err) {
      return { problem: { kind: 'key-mismatch', certFile: config.certFile ?? '', keyFile: config.keyFile ?? '', code: (err as NodeJS.ErrnoException).code ?? 'ERR', detail: messageOf(err).split('\n')[0] ?? '' } };
    }
  }
  return { options };
}
