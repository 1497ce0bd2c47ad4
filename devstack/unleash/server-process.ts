/**
 * Child process that runs one unleash-server (ESM, its own event loop, its own unhandled-rejection hooks). The
 * launcher (launcher.ts) forks it with an IPC channel so the server can be stopped cleanly or killed outright
 * without taking the parent down.
 *
 * Protocol (IPC messages):
 *   parent → child  { type: 'start', options: ChildStartOptions }   once
 *   child  → parent { type: 'listening', port } | { type: 'failed', message }
 *   parent → child  { type: 'stop' }                                 graceful stop, then exit 0
 * Losing the IPC channel (parent died) also stops the server, so no orphan keeps the port or the database.
 *
 * Unleash's own log lines go to stdout as JSON ({ level, category, msg }); the launcher forwards them to its logger.
 */
import { start, ApiTokenType, IAuthType, type IUnleash, type LogProvider } from 'unleash-server';

export interface ChildStartOptions {
  databaseUrl: string;
  host: string;
  port: number;
  adminToken: string;
  backendToken: string;
  adminUser: { username: string; password: string };
  logLevel: 'debug' | 'info' | 'warn' | 'error';
}

export type ChildMessage = { type: 'listening'; port: number } | { type: 'failed'; message: string };

const LEVELS = ['debug', 'info', 'warn', 'error', 'fatal'] as const;

function logProvider(minLevel: string): LogProvider {
  const min = LEVELS.indexOf(minLevel as (typeof LEVELS)[number]);
  return (category?: string) => {
    const line = (level: (typeof LEVELS)[number]) => (message: unknown, ...args: unknown[]) => {
      if (LEVELS.indexOf(level) < min) return;
      const rest = args.map((a) => (a instanceof Error ? a.message : typeof a === 'string' ? a : safeJson(a))).join(' ');
      const msg = `${message instanceof Error ? message.message : String(message)}${rest ? ` ${rest}` : ''}`;
      process.stdout.write(`${JSON.stringify({ level, category, msg })}\n`);
    };
    return { debug: line('debug'), info: line('info'), warn: line('warn'), error: line('error'), fatal: line('fatal') };
  };
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

function send(message: ChildMessage): void {
  process.send?.(message);
}

let unleash: IUnleash | undefined;
let stopping = false;

async function stopAndExit(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  try {
    await unleash?.stop();
  } finally {
    process.exit(code);
  }
}

async function run(options: ChildStartOptions): Promise<void> {
  unleash = await start({
    databaseUrl: options.databaseUrl,
    db: { ssl: false },
    server: { host: options.host, port: options.port, gracefulShutdownEnable: false, enableRequestLogger: false },
    authentication: {
      type: IAuthType.OPEN_SOURCE,
      enableApiToken: true,
      createAdminUser: true,
      initialAdminUser: options.adminUser,
      initApiTokens: [
        { tokenName: 'strangler-admin', type: ApiTokenType.ADMIN, projects: ['*'], environment: '*', secret: options.adminToken },
        {
          tokenName: 'strangler-backend',
          type: ApiTokenType.BACKEND,
          projects: ['*'],
          environment: options.backendToken.slice(options.backendToken.indexOf(':') + 1, options.backendToken.indexOf('.')),
          secret: options.backendToken,
        },
      ],
    },
    versionCheck: { enable: false },
    telemetry: false,
    getLogger: logProvider(options.logLevel),
  });
  const address = unleash.server?.address();
  if (!address || typeof address !== 'object') throw new Error('unleash-server started but reports no TCP address');
  send({ type: 'listening', port: address.port });
}

process.on('message', (message: { type: string; options?: ChildStartOptions }) => {
  if (message.type === 'start' && message.options) {
    run(message.options).catch((err: unknown) => {
      send({ type: 'failed', message: err instanceof Error ? err.message : String(err) });
      void stopAndExit(1);
    });
  } else if (message.type === 'stop') {
    void stopAndExit(0);
  }
});
process.on('disconnect', () => void stopAndExit(0));
process.on('SIGTERM', () => void stopAndExit(0));
