import type { Command } from '../cli/command.ts';
import { usageError } from '../cli/command.ts';

/** `strangler devstack <part>`: the development parts, each runnable on its own. */
const PARTS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  kafka: { summary: 'Single-node, Kafka-wire-compatible development broker', load: async () => (await import('./kafka/command.ts')).kafkaCommand },
  unleash: { summary: 'Embedded PostgreSQL + a real unleash-server with auth and tokens', load: async () => (await import('./unleash/command.ts')).unleashCommand },
};

export const devstackCommand: Command = {
  name: 'devstack',
  summary: 'Development parts: dev Kafka broker, Unleash on embedded PostgreSQL',
  handlesHelp: true,
  help: `Usage: strangler devstack <part> [options]\n\nParts:\n${Object.entries(PARTS).map(([n, p]) => `  ${n.padEnd(8)} ${p.summary}`).join('\n')}\n\nRun \`strangler devstack <part> --help\` for its options.`,
  async run(argv) {
    const [part, ...rest] = argv;
    const entry = part ? PARTS[part] : undefined;
    if (!entry) throw usageError('devstack', part ? `unknown part "${part}"` : 'name a part (kafka, unleash)');
    const command = await entry.load();
    if (rest.includes('--help') || rest.includes('-h')) {
      process.stdout.write(`${command.help}\n`);
      return 0;
    }
    return command.run(rest);
  },
};
