/**
 * Runs the broker as its own process (tests, the benchmark, the crash test):
 *   node --import tsx devstack/kafka/main.ts --port 0 --data-dir DIR
 * Same options as `strangler devstack kafka`; the "kafka: broker listening" JSON log line on stdout carries the port.
 */
import { isStranglerError, messageOf } from '../../common/errors.ts';
import { exitCodeOf } from '../../cli/command.ts';
import { kafkaCommand } from './command.ts';

kafkaCommand.run(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    process.stderr.write(`kafka: ${isStranglerError(err) ? `${err.code}: ${err.message}` : messageOf(err)}\n`);
    process.exitCode = exitCodeOf(err);
  },
);
