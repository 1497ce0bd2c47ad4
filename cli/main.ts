/**
 * `strangler <command>`: the single entry point. Each area owns its command; this file only dispatches.
 */
import { isStranglerError, messageOf } from '../common/errors.ts';
import { exitCodeOf, type Command } from './command.ts';

const COMMANDS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  start: { summary: 'Run the whole demo on embedded defaults (PostgreSQL, Unleash, Kafka, monolith, service, sync, gateway)', load: async () => (await import('../devstack/demo/command.ts')).demoCommand },
  gateway: { summary: 'Run the gateway (data plane + control plane) from a config file', load: async () => (await import('../gateway/command.ts')).gatewayCommand },
  flags: { summary: 'Flags as code and traffic control: sync, status, shift, rollback, resume, controller', load: async () => (await import('../flags/command.ts')).flagsCommand },
  sync: { summary: 'Two-way data sync: capture, relay, apply, backfill, verify, repair, status', load: async () => (await import('../migration-scripts/command.ts')).syncCommand },
  devstack: { summary: 'Development parts: dev Kafka broker, embedded PostgreSQL, Unleash', load: async () => (await import('../devstack/command.ts')).devstackCommand },
};

function mainHelp(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `strangler: move a live monolith to extracted services one route at a time.\n\nUsage: strangler <command> [options]\n\nCommands:\n${lines.join('\n')}\n\nRun \`strangler <command> --help\` for a command's options.\n`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(mainHelp());
    return name ? 0 : 2;
  }
  const entry = COMMANDS[name];
  if (!entry) {
    process.stderr.write(`strangler: unknown command "${name}".\n\n${mainHelp()}`);
    return 2;
  }
  const command = await entry.load();
  const wantsHelp = rest.includes('--help') || rest.includes('-h');
  if (wantsHelp && (!command.handlesHelp || rest[0] === '--help' || rest[0] === '-h')) {
    process.stdout.write(command.help.endsWith('\n') ? command.help : `${command.help}\n`);
    return 0;
  }
  return command.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    const code = (err as { code?: unknown } | null)?.code;
    if (isStranglerError(err)) process.stderr.write(`strangler: ${err.code}: ${err.message}\n`);
    // An error from the system or a driver (ECONNREFUSED, a PostgreSQL SQLSTATE) says what happened without our
    // stack; anything else is a bug, and its stack is what a report needs.
    else if (typeof code === 'string' && code !== '') process.stderr.write(`strangler: ${code}: ${messageOf(err)}\n`);
    else process.stderr.write(`strangler: ${err instanceof Error && err.stack ? err.stack : messageOf(err)}\n`);
    process.exitCode = exitCodeOf(err);
  },
);
