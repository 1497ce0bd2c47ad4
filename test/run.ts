/**
 * `npm test`'s test phase: finds every *.test.ts under test/ (or the paths given), starts the real parts that
 * integration tests share once per run (see test/helpers/shared-stack.ts), and runs node's test runner over them.
 *
 *   node --import tsx test/run.ts                 # everything
 *   node --import tsx test/run.ts test/unit       # a folder or single files
 */
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { startSharedStack } from './helpers/shared-stack.ts';

function collect(path: string, out: string[]): void {
  if (statSync(path).isDirectory()) {
    for (const entry of readdirSync(path).sort()) collect(join(path, entry), out);
  } else if (path.endsWith('.test.ts')) {
    out.push(path);
  }
}

const roots = process.argv.slice(2);
const files: string[] = [];
for (const root of roots.length ? roots : ['test']) collect(root, files);
if (files.length === 0) {
  console.error('test/run: no *.test.ts files found under', roots.join(' ') || 'test');
  process.exit(1);
}

const needsStack = files.some((f) => f.includes(`${join('test', 'integration')}`));
const stack = needsStack ? await startSharedStack() : undefined;

// A test that waits on something that never comes (a shared server lost mid-run) fails after 5 minutes instead of
// holding the run until CI's limit; the longest test takes about 35 s here.
const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-timeout=300000', '--test-reporter=spec', ...files.map((f) => relative(process.cwd(), f))], {
  stdio: 'inherit',
  env: { ...process.env, ...stack?.env },
});
const code: number = await new Promise((resolve) => child.on('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0))));
await stack?.stop();
process.exit(code);
