import type { Command } from '../../cli/command.ts';
import { usageError } from '../../cli/command.ts';

// Placeholder until this area lands; it says so rather than pretending to work.
export const demoCommand: Command = {
  name: 'start',
  summary: '',
  help: 'strangler start: not built yet.',
  async run() {
    throw usageError('start', 'this command is not built yet');
  },
};
