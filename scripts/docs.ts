/**
 * Generated documentation: the JSON Schema published for editors (docs/strangler.schema.json) and the README's
 * config reference and error-code table. `npm run docs` writes them; test/unit/docs.test.ts fails when they are
 * out of date.
 */
import { z } from 'zod';
import { configSchema } from '../gateway/config/schema.ts';
import { ERROR_CATALOGUE } from '../common/errors.ts';

interface JsonSchema {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  additionalProperties?: JsonSchema | boolean;
  anyOf?: JsonSchema[];
  enum?: unknown[];
  default?: unknown;
  description?: string;
  required?: string[];
  pattern?: string;
  minimum?: number;
  maximum?: number;
}

export function jsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return { ...schema, $id: 'https://strangler.dev/schema/strangler.schema.json', title: 'strangler config' };
}

function typeOf(s: JsonSchema): string {
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(' \\| ');
  if (s.anyOf) return s.anyOf.map(typeOf).filter((t, i, all) => all.indexOf(t) === i).join(' \\| ');
  if (s.type === 'array') return `${s.items ? typeOf(s.items) : 'any'}[]`;
  if (s.type === 'object' && s.additionalProperties && typeof s.additionalProperties === 'object') return `map of ${typeOf(s.additionalProperties)}`;
  return Array.isArray(s.type) ? s.type.join(' \\| ') : (s.type ?? 'any');
}

function shortDefault(v: unknown): string {
  if (v === undefined) return '';
  const text = JSON.stringify(v);
  return `\`${text.length > 40 ? `${text.slice(0, 37)}...` : text}\``;
}

function rows(s: JsonSchema, path: string, required: boolean, out: string[]): void {
  const inner = s.anyOf?.find((x) => x.type === 'object' || x.type === 'array') ?? s;
  if (path) out.push(`| \`${path}\` | ${typeOf(s)} | ${required ? 'yes' : ''} | ${shortDefault(s.default)} | ${(s.description ?? '').replace(/\|/g, '\\|')} |`);
  if (inner.type === 'object' && inner.properties) {
    for (const [key, child] of Object.entries(inner.properties)) {
      if (key === '$schema') continue;
      rows(child, path ? `${path}.${key}` : key, inner.required?.includes(key) ?? false, out);
    }
  } else if (inner.type === 'array' && inner.items?.type === 'object') {
    for (const [key, child] of Object.entries(inner.items.properties ?? {})) rows(child, `${path}[].${key}`, inner.items.required?.includes(key) ?? false, out);
  } else if (inner.type === 'object' && inner.additionalProperties && typeof inner.additionalProperties === 'object' && inner.additionalProperties.properties) {
    for (const [key, child] of Object.entries(inner.additionalProperties.properties)) rows(child, `${path}.<name>.${key}`, false, out);
  }
}

export function configReference(): string {
  const out = ['| field | type | required | default | meaning |', '|---|---|---|---|---|'];
  rows(jsonSchema() as JsonSchema, '', true, out);
  return out.join('\n');
}

export function errorTable(): string {
  const out = ['| code | HTTP | retriable | meaning |', '|---|---|---|---|'];
  for (const [code, spec] of Object.entries(ERROR_CATALOGUE)) out.push(`| \`${code}\` | ${spec.status} | ${spec.retriable ? 'yes' : 'no'} | ${spec.doc.replace(/\|/g, '\\|')} |`);
  return out.join('\n');
}

/** Replaces the text between `<!-- name:start -->` and `<!-- name:end -->`. */
export function replaceSection(text: string, name: string, body: string): string {
  const start = `<!-- ${name}:start -->`;
  const end = `<!-- ${name}:end -->`;
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  if (a === -1 || b === -1) throw new Error(`README.md has no ${start} … ${end} section`);
  return `${text.slice(0, a + start.length)}\n${body}\n${text.slice(b)}`;
}

export function renderReadme(readme: string): string {
  return replaceSection(replaceSection(readme, 'config-reference', configReference()), 'error-codes', errorTable());
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { readFileSync, writeFileSync } = await import('node:fs');
  writeFileSync('docs/strangler.schema.json', `${JSON.stringify(jsonSchema(), null, 2)}\n`);
  writeFileSync('README.md', renderReadme(readFileSync('README.md', 'utf8')));
  console.log('wrote docs/strangler.schema.json and README.md sections');
}
