/**
 * After every flag change, tell each configured gateway control plane to refresh now (POST /admin/flags/refresh),
 * so a rollback reaches every pod without waiting for the next poll. A push that fails is reported, never thrown:
 * the change is already in Unleash and the gateways converge on their next poll anyway.
 */
import { messageOf } from '../common/errors.ts';
import type { FlagsControl } from './control.ts';
import { FLAGS_LOG } from './log-events.ts';

export interface RefreshRequest {
  flag: string;
  action: 'rollback' | 'shift' | 'resume';
  percent?: number;
}

export interface RefreshResult {
  url: string;
  ok: boolean;
  status?: number;
  error?: string;
  ms: number;
}

export async function pushRefresh(control: FlagsControl, body: RefreshRequest): Promise<RefreshResult[]> {
  return Promise.all(control.gateways.map(async (gateway): Promise<RefreshResult> => {
    const started = performance.now();
    const url = `${gateway.url.replace(/\/+$/, '')}/admin/flags/refresh`;
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...(gateway.token ? { Authorization: `Bearer ${gateway.token}` } : {}) },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(control.refreshTimeoutMs),
      });
      await res.body?.cancel();
      const ms = Math.round(performance.now() - started);
      if (!res.ok) {
        control.log.warn({ gateway: gateway.url, status: res.status, flag: body.flag }, FLAGS_LOG.refreshFailed);
        return { url: gateway.url, ok: false, status: res.status, error: `HTTP ${res.status}`, ms };
      }
      control.log.debug({ gateway: gateway.url, flag: body.flag, ms }, FLAGS_LOG.refreshPushed);
      return { url: gateway.url, ok: true, status: res.status, ms };
    } catch (err) {
      const why = (err as { cause?: { code?: string } }).cause?.code ?? messageOf(err);
      control.log.warn({ gateway: gateway.url, err: why, flag: body.flag }, FLAGS_LOG.refreshFailed);
      return { url: gateway.url, ok: false, error: why, ms: Math.round(performance.now() - started) };
    }
  }));
}
