/**
 * Reload on file change. The config file itself is not watched: an editor's atomic save (write a temporary file,
 * rename it over the config) and a Kubernetes ConfigMap update (the mount's `..data` symlink swapped to a new
 * directory) replace the file, and a watch on the replaced file goes quiet after its first event. Instead the
 * directory holding the path is watched (and, for a symlinked file, the directory holding its target), as Traefik's
 * file provider does; each burst of events (debounced) re-reads the file and calls `onChange` only when its bytes
 * differ from the last read, so unrelated files in the directory cost a read, not a reload.
 */
import { readFileSync, realpathSync, watch, type FSWatcher } from 'node:fs';
import { dirname, resolve } from 'node:path';

export interface ConfigWatcher {
  close(): void;
}

/** Quiet time after the last event of a burst (an editor's save or a symlink swap) before the file is read. */
const DEBOUNCE_MS = 100;

export function watchConfigFile(file: string, onChange: () => void, debounceMs = DEBOUNCE_MS): ConfigWatcher {
  const path = resolve(file);
  /** The file's bytes at the last read; null when it could not be read (a reload then reports why). */
  let last = read(path);
  const watchers = new Map<string, FSWatcher>();
  let timer: NodeJS.Timeout | undefined;
  let closed = false;

  const check = (): void => {
    timer = undefined;
    if (closed) return;
    arm(); // a swapped symlink may point into another directory now
    const now = read(path);
    if (now === last || (now !== null && last !== null && now.equals(last))) return;
    last = now;
    onChange();
  };
  const onEvent = (): void => {
    clearTimeout(timer);
    timer = setTimeout(check, debounceMs);
  };
  /** Watches the directories the path and its symlink target live in, and no others. */
  const arm = (): void => {
    const dirs = new Set([dirname(path)]);
    try {
      dirs.add(dirname(realpathSync(path)));
    } catch {
      // missing for now: its directory is watched, which sees it come back
    }
    for (const [dir, w] of watchers) {
      if (dirs.has(dir)) continue;
      w.close();
      watchers.delete(dir);
    }
    for (const dir of dirs) {
      if (watchers.has(dir)) continue;
      try {
        const w = watch(dir, { persistent: false }, onEvent);
        w.on('error', () => {
          w.close();
          watchers.delete(dir);
        });
        watchers.set(dir, w);
      } catch {
        // an unreadable directory: SIGHUP still reloads
      }
    }
  };
  arm();
  return {
    close(): void {
      closed = true;
      clearTimeout(timer);
      for (const w of watchers.values()) w.close();
      watchers.clear();
    },
  };
}

function read(path: string): Buffer | null {
  try {
    return readFileSync(path);
  } catch {
    return null;
  }
}
