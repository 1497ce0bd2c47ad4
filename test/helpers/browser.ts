/** A real browser for the dashboard tests: Debian's chromium driven by playwright-core. */
import { existsSync } from 'node:fs';
import type { Page } from 'playwright-core';

/** The Chromium executable: CHROMIUM_PATH, else the Debian and Chrome locations. */
export function chromiumPath(): string {
  const candidates = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].filter((p): p is string => !!p);
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`no Chromium found (tried ${candidates.join(', ')}); set CHROMIUM_PATH`);
  return found;
}

/**
 * Collects the page's uncaught errors and console errors into `into`. Chromium logs every non-2xx fetch as
 * "Failed to load resource"; those answers are part of the tests, so they are left out.
 */
export function collectPageErrors(page: Page, into: string[]): void {
  page.on('pageerror', (err) => into.push(err.message));
  page.on('console', (msg) => { if (msg.type() === 'error' && !/^Failed to load resource/.test(msg.text())) into.push(msg.text()); });
}
