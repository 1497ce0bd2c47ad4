/** `strangler devstack kafka`: runs the dev broker in the foreground until SIGINT/SIGTERM. */
import type { Command } from '../../cli/command.ts';
import { intOption, logLevelOption, parseCommandArgs, usageError } from '../../cli/command.ts';
import { readFileSync } from 'node:fs';
import { createLogger } from '../../common/logger.ts';
import { KAFKA_DEFAULTS, SASL_MECHANISMS, type FsyncPolicy, type KafkaSaslOptions, type KafkaTlsOptions, type SaslMechanism } from './config.ts';
import { startKafkaBroker } from './server/broker.ts';

const NAME = 'devstack kafka';

const HELP = `Usage: strangler devstack kafka [options]

Single-node, Kafka-wire-compatible broker for development, tests and one-machine demos (not for production:
point kafka.brokers at a real Kafka cluster there). kafkajs 2.2.4 and librdkafka/kcat accept it.

Options:
  --port N                    port to listen on; 0 picks a free one (default ${KAFKA_DEFAULTS.port})
  --host H                    interface to bind; localhost binds 127.0.0.1 and ::1 (default ${KAFKA_DEFAULTS.host})
  --advertised-host H         host clients are told to dial (default: the bound address)
  --data-dir DIR              partition logs, topics and committed offsets live here; omitted = in memory
  --partitions N              partitions of auto-created topics (default ${KAFKA_DEFAULTS.defaultPartitions})
  --no-auto-create            answer unknown topics with UNKNOWN_TOPIC_OR_PARTITION instead of creating them
  --fsync POLICY              always | interval | never (default ${KAFKA_DEFAULTS.fsync}); data is always written before
                              it is acknowledged, so it survives kill -9 in every mode; fsync adds power-loss safety
  --fsync-interval-ms N       period of the interval policy (default ${KAFKA_DEFAULTS.fsyncIntervalMs})
  --min-session-timeout-ms N  smallest consumer session timeout accepted (default ${KAFKA_DEFAULTS.groupMinSessionTimeoutMs})
  --tls-cert FILE             serve TLS with this PEM certificate (chain); needs --tls-key (Kafka's SSL listener)
  --tls-key FILE              PEM private key of --tls-cert
  --tls-client-ca FILE        mutual TLS: require every client to present a certificate signed by the CA(s) in
                              this PEM file (Kafka's ssl.client.auth=required); needs --tls-cert
  --sasl-users-file FILE      require SASL authentication and accept the users of FILE: one NAME:PASSWORD per
                              line (blank lines and lines starting with # are skipped); keep it mode 0600
                              (with --tls-cert this is Kafka's SASL_SSL, without it SASL_PLAINTEXT)
  --sasl-user NAME:PASSWORD   the same for one user given on the command line; repeatable. Any local user can read
                              a command line (ps), so prefer --sasl-users-file for a password that matters
  --sasl-mechanisms LIST      comma-separated, of ${SASL_MECHANISMS.join(', ')} (default: all three)
  --log-level LEVEL           pino level (default info)
  -h, --help                  this text

Prints a JSON log line "${'kafka: broker listening'}" with host, port and address once it accepts connections.`;

function readPemOption(file: string, flag: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw usageError(NAME, `${flag}: cannot read "${file}" (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
}

function tlsOption(cert: string | undefined, key: string | undefined, clientCa: string | undefined): KafkaTlsOptions | undefined {
  if (cert === undefined && key === undefined) {
    if (clientCa !== undefined) throw usageError(NAME, '--tls-client-ca needs a TLS listener: pass --tls-cert and --tls-key too');
    return undefined;
  }
  if (cert === undefined || key === undefined) throw usageError(NAME, '--tls-cert and --tls-key go together');
  return {
    cert: readPemOption(cert, '--tls-cert'), key: readPemOption(key, '--tls-key'),
    ...(clientCa !== undefined ? { clientCa: readPemOption(clientCa, '--tls-client-ca') } : {}),
  };
}

/** The NAME:PASSWORD lines of --sasl-users-file (the password never appears in an error). */
function readUsersFile(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw usageError(NAME, `--sasl-users-file: cannot read "${file}" (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  const lines = text.split(/\r?\n/);
  const users: string[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '' || line.trimStart().startsWith('#')) return;
    if (line.indexOf(':') <= 0) throw usageError(NAME, `--sasl-users-file: ${file} line ${i + 1} is not NAME:PASSWORD (a user name, a colon, then the password)`);
    users.push(line);
  });
  if (users.length === 0) throw usageError(NAME, `--sasl-users-file: ${file} holds no NAME:PASSWORD line`);
  return users;
}

function saslOption(users: readonly string[] | undefined, usersFile: string | undefined, mechanisms: string | undefined): KafkaSaslOptions | undefined {
  users = [...(usersFile !== undefined ? readUsersFile(usersFile) : []), ...(users ?? [])];
  if (users.length === 0) {
    if (mechanisms !== undefined) throw usageError(NAME, '--sasl-mechanisms needs --sasl-users-file FILE or at least one --sasl-user NAME:PASSWORD');
    return undefined;
  }
  const byName: Record<string, string> = {};
  for (const u of users) {
    const colon = u.indexOf(':');
    if (colon <= 0) throw usageError(NAME, '--sasl-user expects NAME:PASSWORD (a user name, a colon, then the password)');
    byName[u.slice(0, colon)] = u.slice(colon + 1);
  }
  if (mechanisms === undefined) return { users: byName };
  const list = mechanisms.split(',').map((m) => m.trim().toUpperCase()).filter((m) => m !== '');
  for (const m of list) {
    if (!(SASL_MECHANISMS as readonly string[]).includes(m)) throw usageError(NAME, `--sasl-mechanisms: unknown mechanism "${m}"; expected some of ${SASL_MECHANISMS.join(', ')}`);
  }
  if (list.length === 0) throw usageError(NAME, `--sasl-mechanisms expects some of ${SASL_MECHANISMS.join(', ')}`);
  return { users: byName, mechanisms: list as SaslMechanism[] };
}

export const kafkaCommand: Command = {
  name: NAME,
  summary: 'Single-node, Kafka-wire-compatible development broker',
  help: HELP,
  async run(argv) {
    const { values, positionals } = parseCommandArgs(NAME, argv, {
      port: { type: 'string' },
      host: { type: 'string' },
      'advertised-host': { type: 'string' },
      'data-dir': { type: 'string' },
      partitions: { type: 'string' },
      'no-auto-create': { type: 'boolean' },
      fsync: { type: 'string' },
      'fsync-interval-ms': { type: 'string' },
      'min-session-timeout-ms': { type: 'string' },
      'log-level': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'tls-client-ca': { type: 'string' },
      'sasl-user': { type: 'string', multiple: true },
      'sasl-users-file': { type: 'string' },
      'sasl-mechanisms': { type: 'string' },
    });
    if (values.help) {
      process.stdout.write(`${HELP}\n`);
      return 0;
    }
    if (positionals.length > 0) throw usageError(NAME, `unexpected argument "${positionals[0]}"`);
    const fsync = values.fsync ?? KAFKA_DEFAULTS.fsync;
    if (fsync !== 'always' && fsync !== 'interval' && fsync !== 'never') throw usageError(NAME, `--fsync expects always, interval or never, got "${fsync}"`);
    const logger = createLogger({ name: 'kafka', ...(values['log-level'] ? { level: logLevelOption('devstack kafka', values['log-level']) } : {}) });
    const broker = await startKafkaBroker({
      port: intOption(NAME, '--port', values.port, { max: 65_535 }) ?? KAFKA_DEFAULTS.port,
      host: values.host ?? KAFKA_DEFAULTS.host,
      advertisedHost: values['advertised-host'],
      dataDir: values['data-dir'],
      defaultPartitions: intOption(NAME, '--partitions', values.partitions, { min: 1 }) ?? KAFKA_DEFAULTS.defaultPartitions,
      autoCreateTopics: !values['no-auto-create'],
      fsync: fsync satisfies FsyncPolicy,
      fsyncIntervalMs: intOption(NAME, '--fsync-interval-ms', values['fsync-interval-ms'], { min: 1 }) ?? KAFKA_DEFAULTS.fsyncIntervalMs,
      groupMinSessionTimeoutMs: intOption(NAME, '--min-session-timeout-ms', values['min-session-timeout-ms']) ?? KAFKA_DEFAULTS.groupMinSessionTimeoutMs,
      tls: tlsOption(values['tls-cert'], values['tls-key'], values['tls-client-ca']),
      sasl: saslOption(values['sasl-user'], values['sasl-users-file'], values['sasl-mechanisms']),
      logger,
    });
    await new Promise<void>((resolve) => {
      const stop = (): void => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        resolve();
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    await broker.close();
    return 0;
  },
};
