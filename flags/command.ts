import type { Command } from '../cli/command.ts';
import { usageError } from '../cli/command.ts';

// Placeholder until this area lands; it says so rather than pretending to work.
export const flagsCommand: Command = {
  name: 'flags',
  summary: '',
  help: 'strangler flags: not built yet.',
  async run() {
    throw usageError('flags', 'this command is not built yet');
  },
};
