import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { jsonSchema, renderReadme } from '../../scripts/docs.ts';
import { ERROR_CATALOGUE } from '../../common/errors.ts';

test('README config reference and error table match the schema and the catalogue (run `npm run docs`)', () => {
  const readme = readFileSync('README.md', 'utf8');
  assert.equal(readme, renderReadme(readme));
  for (const code of Object.keys(ERROR_CATALOGUE)) assert.ok(readme.includes(`| \`${code}\` |`), `${code} is documented`);
});

test('the published JSON Schema is current', () => {
  assert.deepEqual(JSON.parse(readFileSync('docs/strangler.schema.json', 'utf8')), jsonSchema());
});
