/**
 * The intended state of a route's flag, recorded in the title of its flexibleRollout strategy:
 *
 *   strangler rollout=25 enabled=true · shift by alice: error rate flat for an hour
 *
 * Percentages change at run time (shift, rollback, the controller), so the config cannot say what they should be.
 * Every strangler write also rewrites this title, so a difference between the title and the live parameters means
 * somebody changed the flag by hand (Unleash UI or API): that is the drift `flags sync` reports. The title is
 * visible in the Unleash UI and lands in the event log's data/preData, with who and why.
 */
export interface Intended {
  rollout: number;
  enabled: boolean;
}

const PATTERN = /^strangler rollout=(\d{1,3}) enabled=(true|false)(?: · (.*))?$/s;
const MAX_NOTE = 160;

export function formatTitle(intended: Intended, note?: string): string {
  const base = `strangler rollout=${intended.rollout} enabled=${intended.enabled}`;
  const clean = note?.replace(/\s+/g, ' ').trim();
  return clean ? `${base} · ${clean.length > MAX_NOTE ? `${clean.slice(0, MAX_NOTE - 1)}…` : clean}` : base;
}

/** The recorded intent, or undefined when the title was not written by strangler. */
export function parseTitle(title: string | null | undefined): (Intended & { note: string | null }) | undefined {
  const m = title ? PATTERN.exec(title) : null;
  if (!m) return undefined;
  const rollout = Number(m[1]);
  if (rollout > 100) return undefined;
  return { rollout, enabled: m[2] === 'true', note: m[3] ?? null };
}

/** "shift by alice: reason" */
export function note(action: string, actor: string, reason: string | undefined): string {
  return `${action} by ${actor}${reason ? `: ${reason}` : ''}`;
}
