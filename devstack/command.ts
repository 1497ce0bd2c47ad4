import type { Command } from '../cli/command.ts';
import { usageError } from '../cli/command.ts';

// Placeholder until this area lands; it says so rather than pretending to work.
export const devstackCommand: Command = {
  name: 'devstack',
  summary: '',
  help: 'strangler devstack: not built yet.',
  async run() {
    throw usageError('devstack', 'this command is not built yet');
  },
};
