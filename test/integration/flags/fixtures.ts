/** Shared pieces of the flags integration tests: a config pointing at the test Unleash, and a fake gateway control plane. */
import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { validateConfig, type LoadedConfig } from '../../../gateway/config/load.ts';
import type { TestUnleash } from '../../helpers/unleash.ts';
import type { RouteStatus } from '../../../gateway/admin/types.ts';
import type { UnleashAdminApi } from '../../../flags/admin-api.ts';

export interface RouteSpec {
  id: string;
  flag?: Record<string, unknown>;
  service?: boolean;
  guard?: Record<string, unknown>;
  plan?: Record<string, unknown>;
}

export function flagsConfig(unleash: TestUnleash, routes: RouteSpec[], extra: { gateways?: { url: string; token: string | null }[]; controller?: Record<string, unknown>; environment?: string } = {}): LoadedConfig {
  return validateConfig({
    upstreams: [
      { id: 'legacy', url: 'http://127.0.0.1:9' },
      { id: 'svc', url: 'http://127.0.0.1:9' },
    ],
    routes: routes.map((r) => ({
      id: r.id,
      match: { pathPrefix: `/api/${r.id}` },
      legacy: 'legacy',
      ...(r.service === false ? {} : { service: 'svc' }),
      ...(r.flag ? { flag: r.flag } : {}),
      ...(r.guard ? { guard: r.guard } : {}),
      ...(r.plan ? { plan: r.plan } : {}),
    })),
    flags: {
      url: unleash.apiUrl,
      token: unleash.backendToken,
      adminToken: unleash.adminToken,
      environment: extra.environment ?? unleash.environment,
      backupPath: null,
      gateways: extra.gateways ?? [],
    },
    ...(extra.controller ? { controller: extra.controller } : {}),
  }, 'flags-test.yaml');
}

export interface RefreshCall {
  authorization: string | undefined;
  body: { flag: string; action: string; percent?: number };
}

/** A flag's on/off state and rollout percentage as Unleash holds it now. */
export async function liveRollout(api: UnleashAdminApi, unleash: TestUnleash, flag: string): Promise<{ enabled: boolean; percent: number }> {
  const s = await api.getFeatureEnvironment('default', flag, unleash.environment);
  return { enabled: s.enabled, percent: Number(s.strategies[0]?.parameters.rollout) };
}

/** A stand-in gateway control plane that records POST /admin/flags/refresh calls (and can serve GET /admin/routes). */
export class FakeGateway {
  readonly calls: RefreshCall[] = [];
  routes: unknown = { gateway: {}, routes: [] };
  status = 200;
  /** When true, a push changes the served routes' flagState as a real gateway's flag client would (shift: that percentage; rollback: local override; resume: on, override lifted). */
  followPushes = false;
  #server: Server;
  url = '';

  constructor() {
    this.#server = createServer((req, res) => {
      void readBody(req).then((text) => {
        if (req.method === 'POST' && req.url === '/admin/flags/refresh') {
          this.calls.push({ authorization: req.headers.authorization, body: JSON.parse(text) as RefreshCall['body'] });
          if (this.followPushes && this.status === 200) this.#follow(this.calls.at(-1)!.body);
          res.writeHead(this.status, { 'content-type': 'application/json' }).end('{"ok":true}');
        } else if (req.method === 'GET' && req.url === '/admin/routes') {
          res.writeHead(this.status, { 'content-type': 'application/json' }).end(JSON.stringify(this.routes));
        } else {
          res.writeHead(404).end();
        }
      });
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    const address = this.#server.address();
    if (!address || typeof address !== 'object') throw new Error('fake gateway has no address');
    this.url = `http://127.0.0.1:${address.port}`;
    return this;
  }

  #follow(push: RefreshCall['body']): void {
    const routes = (this.routes as { routes?: RouteStatus[] }).routes ?? [];
    for (const r of routes.filter((x) => x.flag.name === push.flag)) {
      if (push.action === 'rollback') r.flagState = { ...r.flagState, enabled: false, localOverride: 'legacy' };
      if (push.action === 'resume') r.flagState = { ...r.flagState, enabled: true, localOverride: null };
      if (push.action === 'shift') r.flagState = { ...r.flagState, known: true, rolloutPercent: push.percent ?? 0 };
    }
  }

  stop(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** Runs `strangler ARGS` (bin/strangler.js) to its end with `env` added and its own logging off: exit code and output. */
export function strangler(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['bin/strangler.js', ...args], { env: { ...process.env, ...env, STRANGLER_LOG_LEVEL: 'silent' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('exit', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}
