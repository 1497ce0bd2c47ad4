import type { Command } from '../cli/command.ts';
import { usageError } from '../cli/command.ts';

// Placeholder until this area lands; it says so rather than pretending to work.
export const gatewayCommand: Command = {
  name: 'gateway',
  summary: '',
  help: 'strangler gateway: not built yet.',
  async run() {
    throw usageError('gateway', 'this command is not built yet');
  },
};
