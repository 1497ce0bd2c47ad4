import type { Command } from '../../cli/command.ts';
import { parseCommandArgs, usageError } from '../../cli/command.ts';
import { createLogger } from '../../common/logger.ts';
import { startUnleash } from './launcher.ts';

const HELP = `Usage: strangler devstack unleash [options]

Starts a real unleash-server 7.5.1 on embedded PostgreSQL with auth (open-source), an admin API token, a backend
(SDK) token for one environment, a dashboard login, and that environment's default strategy set to 0 % so that
switching a flag on never exposes everyone. Runs until Ctrl-C. Tokens and login are printed once at start; with a
--data-dir they are kept in <dir>/unleash-secrets.json and reused on the next start.

Options:
  --port N             HTTP port (default 4242; 0 picks a free port)
  --data-dir DIR       embedded PostgreSQL + kept secrets (default .data/unleash)
  --database-url URL   use this PostgreSQL database instead of the embedded one
  --environment ENV    environment of the backend token (default development)
  --admin-token T      admin token to create ("*:*.<secret>"; default generated)
  --backend-token T    backend token to create ("*:<env>.<secret>"; default generated)
  -h, --help           this text`;

export const unleashCommand: Command = {
  name: 'devstack unleash',
  summary: 'Embedded PostgreSQL + a real unleash-server with auth and tokens',
  help: HELP,
  async run(argv) {
    const { values, positionals } = parseCommandArgs('devstack unleash', argv, {
      port: { type: 'string' },
      'data-dir': { type: 'string' },
      'database-url': { type: 'string' },
      environment: { type: 'string' },
      'admin-token': { type: 'string' },
      'backend-token': { type: 'string' },
    });
    if (positionals.length > 0) throw usageError('devstack unleash', `unexpected argument "${positionals[0]}"`);
    const port = values.port === undefined ? 4242 : Number(values.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw usageError('devstack unleash', `--port must be an integer 0..65535, got "${values.port}"`);
    const log = createLogger({ name: 'devstack-unleash' });
    const unleash = await startUnleash({
      ...(values['database-url'] ? { databaseUrl: values['database-url'] } : { dataDir: values['data-dir'] ?? '.data/unleash' }),
      port,
      ...(values.environment ? { environment: values.environment } : {}),
      ...(values['admin-token'] ? { adminToken: values['admin-token'] } : {}),
      ...(values['backend-token'] ? { backendToken: values['backend-token'] } : {}),
      log,
    });
    process.stdout.write(
      [
        '',
        `Unleash ${unleash.url} is ready (${unleash.startMs} ms). Dashboard login: ${unleash.adminUser.username} / ${unleash.adminUser.password}`,
        `  UNLEASH_URL=${unleash.apiUrl}`,
        `  UNLEASH_ENVIRONMENT=${unleash.environment}`,
        `  UNLEASH_ADMIN_TOKEN='${unleash.adminToken}'`,
        `  UNLEASH_BACKEND_TOKEN='${unleash.backendToken}'`,
        'Press Ctrl-C to stop.',
        '',
      ].join('\n'),
    );
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await unleash.stop();
    return 0;
  },
};
