import type { Command } from '../cli/command.ts';
import { usageError } from '../cli/command.ts';

// Placeholder until this area lands; it says so rather than pretending to work.
export const syncCommand: Command = {
  name: 'sync',
  summary: '',
  help: 'strangler sync: not built yet.',
  async run() {
    throw usageError('sync', 'this command is not built yet');
  },
};
