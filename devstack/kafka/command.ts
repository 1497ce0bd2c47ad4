import type { Command } from '../../cli/command.ts';
import { usageError } from '../../cli/command.ts';

// Placeholder until this part lands; it says so rather than pretending to work.
export const kafkaCommand: Command = {
  name: 'devstack kafka',
  summary: '',
  help: 'strangler devstack kafka: not built yet.',
  async run() {
    throw usageError('devstack kafka', 'not built yet');
  },
};
