/**
 * Reload on file change survives the ways a config file is really changed: written in place, replaced by an
 * editor's atomic save (again and again), swapped by Kubernetes (the ConfigMap mount's `..data` symlink), or edited
 * through a symlink into another directory. Same bytes or other files in the directory cause no reload.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { watchConfigFile, type ConfigWatcher } from '../../../gateway/config/watch.ts';

/** Watches `file` and records what it holds at each onChange; `next()` resolves at the next onChange. */
function watching(file: string): { seen: string[]; next(): Promise<string>; watcher: ConfigWatcher } {
  const seen: string[] = [];
  let waiter: ((text: string) => void) | null = null;
  const watcher = watchConfigFile(file, () => {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      text = '<missing>';
    }
    seen.push(text);
    waiter?.(text);
    waiter = null;
  }, 20);
  return { seen, watcher, next: () => new Promise((resolve) => (waiter = resolve)) };
}

/** A config file holding 'v: 1', alone in a new directory. */
function configFile(): string {
  const file = join(mkdtempSync(join(tmpdir(), 'watch-')), 'strangler.yaml');
  writeFileSync(file, 'v: 1\n');
  return file;
}

/** An editor's atomic save: a temporary file renamed over the config. */
function atomicSave(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

/** Time for events that must cause nothing (a negative can only be observed over a quiet period). */
const quiet = () => new Promise((resolve) => setTimeout(resolve, 250));

describe('watchConfigFile', { timeout: 10_000 }, () => {
  const watchers: ConfigWatcher[] = [];
  // The watcher does not hold the process open (a gateway's listeners do); this test's awaits need something that does.
  let keepAlive: NodeJS.Timeout;
  before(() => (keepAlive = setInterval(() => {}, 1000)));
  after(() => clearInterval(keepAlive));
  afterEach(() => {
    for (const w of watchers.splice(0)) w.close();
  });

  test('a file written in place', async () => {
    const file = configFile();
    const w = watching(file);
    watchers.push(w.watcher);
    for (const v of [2, 3]) {
      const changed = w.next();
      writeFileSync(file, `v: ${v}\n`);
      assert.equal(await changed, `v: ${v}\n`);
    }
  });

  test('an editor saving atomically, three times (a watch on the file itself went quiet after the first)', async () => {
    const file = configFile();
    const w = watching(file);
    watchers.push(w.watcher);
    for (const v of [2, 3, 4]) {
      const changed = w.next();
      atomicSave(file, `v: ${v}\n`);
      assert.equal(await changed, `v: ${v}\n`);
    }
  });

  test('a Kubernetes ConfigMap mount: each update swaps the ..data symlink to a new directory and removes the old one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'watch-cm-'));
    const version = (v: number): string => {
      mkdirSync(join(dir, `..2026_v${v}`));
      writeFileSync(join(dir, `..2026_v${v}`, 'strangler.yaml'), `v: ${v}\n`);
      return `..2026_v${v}`;
    };
    symlinkSync(version(1), join(dir, '..data'));
    symlinkSync('..data/strangler.yaml', join(dir, 'strangler.yaml'));
    const file = join(dir, 'strangler.yaml');
    const w = watching(file);
    watchers.push(w.watcher);
    for (const v of [2, 3, 4]) {
      const changed = w.next();
      symlinkSync(version(v), join(dir, '..data_tmp'));
      renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
      rmSync(join(dir, `..2026_v${v - 1}`), { recursive: true });
      assert.equal(await changed, `v: ${v}\n`);
    }
  });

  test('a symlink into another directory: the target edited in place is seen', async () => {
    const real = join(mkdtempSync(join(tmpdir(), 'watch-real-')), 'strangler.yaml');
    writeFileSync(real, 'v: 1\n');
    const file = join(mkdtempSync(join(tmpdir(), 'watch-link-')), 'strangler.yaml');
    symlinkSync(real, file);
    const w = watching(file);
    watchers.push(w.watcher);
    const changed = w.next();
    writeFileSync(real, 'v: 2\n');
    assert.equal(await changed, 'v: 2\n');
  });

  test('the same bytes written again, and other files in the directory, cause no reload', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'watch-'));
    const file = join(dir, 'strangler.yaml');
    writeFileSync(file, 'v: 1\n');
    const w = watching(file);
    watchers.push(w.watcher);
    writeFileSync(file, 'v: 1\n');
    atomicSave(file, 'v: 1\n');
    writeFileSync(join(dir, 'other.yaml'), 'x: 1\n');
    await quiet();
    assert.deepEqual(w.seen, []);
    // Still watching after those events.
    const changed = w.next();
    atomicSave(file, 'v: 2\n');
    assert.equal(await changed, 'v: 2\n');
  });

  test('a file removed (the reload then reports it) and created again is reloaded both times', async () => {
    const file = configFile();
    const w = watching(file);
    watchers.push(w.watcher);
    let changed = w.next();
    unlinkSync(file);
    assert.equal(await changed, '<missing>');
    changed = w.next();
    writeFileSync(file, 'v: 2\n');
    assert.equal(await changed, 'v: 2\n');
  });

  test('close() stops reloads', async () => {
    const file = configFile();
    const w = watching(file);
    w.watcher.close();
    atomicSave(file, 'v: 2\n');
    await quiet();
    assert.deepEqual(w.seen, []);
  });
});
