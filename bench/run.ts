/**
 * `npm run bench`: runs every bench/*.bench.ts in turn (or those whose name contains an argument:
 * `npm run bench -- proxy`). Each prints its own table with ratios against a baseline measured in the same run.
 * Benchmarks measure; they never fail the build. Targets are printed beside the figures.
 */
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export interface Bench {
  readonly name: string;
  run(): Promise<void>;
}

const here = dirname(fileURLToPath(import.meta.url));
const filters = process.argv.slice(2);
const files = readdirSync(here).filter((f) => f.endsWith('.bench.ts') && (filters.length === 0 || filters.some((x) => f.includes(x)))).sort();
for (const file of files) {
  const mod = (await import(pathToFileURL(join(here, file)).href)) as { default: Bench };
  console.log(`\n=== ${mod.default.name} (${file}) ===`);
  await mod.default.run();
}
if (files.length === 0) console.log('no benchmark matched', filters.join(' '));
