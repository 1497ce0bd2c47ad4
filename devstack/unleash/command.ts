import type { Command } from '../../cli/command.ts';
import { usageError } from '../../cli/command.ts';

// Placeholder until this part lands; it says so rather than pretending to work.
export const unleashCommand: Command = {
  name: 'devstack unleash',
  summary: '',
  help: 'strangler devstack unleash: not built yet.',
  async run() {
    throw usageError('devstack unleash', 'not built yet');
  },
};
