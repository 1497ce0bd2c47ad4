/** A one-line progress bar: rows, rate and ETA. Redraws in place on a TTY, prints a line per second otherwise. */
export class ProgressBar {
  readonly #out: NodeJS.WriteStream | NodeJS.WritableStream;
  readonly #label: string;
  readonly #started = Date.now();
  #lastPrint = 0;
  constructor(label: string, out: NodeJS.WriteStream | NodeJS.WritableStream = process.stderr) {
    this.#label = label;
    this.#out = out;
  }
  static format(label: string, done: number, total: number | null, elapsedMs: number): string {
    const rate = elapsedMs > 0 ? (done * 1000) / elapsedMs : 0;
    const pct = total && total > 0 ? Math.min(1, done / total) : null;
    const width = 24;
    const bar = pct === null ? '' : `[${'#'.repeat(Math.round(pct * width)).padEnd(width, '.')}] ${(pct * 100).toFixed(1).padStart(5)}% `;
    const eta = total && rate > 0 ? Math.max(0, (total - done) / rate) : null;
    const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
    return `${label} ${bar}${fmt(done)}${total ? `/${fmt(total)}` : ''} rows  ${fmt(rate)} rows/s  ETA ${eta === null ? '?' : `${eta.toFixed(1)}s`}`;
  }
  update(done: number, total: number | null, force = false): void {
    const now = Date.now();
    const tty = (this.#out as NodeJS.WriteStream).isTTY === true;
    if (!force && now - this.#lastPrint < (tty ? 100 : 1000)) return;
    this.#lastPrint = now;
    const line = ProgressBar.format(this.#label, done, total, now - this.#started);
    this.#out.write(tty ? `\r${line}\x1b[K` : `${line}\n`);
  }
  finish(done: number, total: number | null): void {
    this.update(done, total, true);
    if ((this.#out as NodeJS.WriteStream).isTTY) this.#out.write('\n');
  }
}
