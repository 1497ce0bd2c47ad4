/**
 * Regression: the gateway's flag client against a real unleash-server when flags.token reads another environment than
 * flags.environment. The flags commands and the controller write to flags.environment; the gateway follows whatever
 * environment its token reads, so a rollback written by `flags rollback` never reaches it through Unleash. That must be
 * an error on the gateway's status (admin API, `flags status`, the controller's "cannot read Unleash"), not silence.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FlagClient } from '../../../flags/client.ts';
import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../../common/logger.ts';
import { flagsSchema } from '../../../gateway/config/schema.ts';
import { useTestUnleash, type TestUnleash } from '../../helpers/unleash.ts';

describe('flag client: the token\'s environment against flags.environment', () => {
  let unleash: TestUnleash;
  before(async () => {
    unleash = await useTestUnleash();
  });
  after(() => unleash.stop());

  const client = (environment: string, log: Logger) => new FlagClient(flagsSchema.parse({
    url: unleash.apiUrl, token: unleash.backendToken, environment, backupPath: null, disableMetrics: true, refreshIntervalMs: 0,
  }), log, { instanceId: 'client-environment-test' });
  const capture = () => {
    const lines: { msg?: string; err?: string }[] = [];
    const log = createLogger({ level: 'warn', destination: new Writable({ write(chunk: Buffer, _e, done) { lines.push(...chunk.toString().trim().split('\n').map((l) => JSON.parse(l) as { msg?: string })); done(); } }) });
    return { log, lines };
  };

  test('a token for another environment is reported on the status, and stays reported after a 304', async () => {
    const other = unleash.environment === 'production' ? 'development' : 'production';
    const { log, lines } = capture();
    const c = client(other, log);
    try {
      await c.start();
      assert.equal(c.status.ready, true, 'it still serves what the token reads');
      assert.match(c.status.lastError ?? '', new RegExp(`flags\\.token reads environment "${unleash.environment}".*flags\\.environment is "${other}"`));
      await c.refresh(); // answered 304: the mismatch has not gone away
      await c.refresh();
      assert.match(c.status.lastError ?? '', /flags\.token reads environment/);
      assert.equal(lines.filter((l) => l.msg === 'flags.error').length, 1, 'logged once, not on every poll');
    } finally {
      c.close();
    }
  });

  test('the matching environment reports no error', async () => {
    const { log, lines } = capture();
    const c = client(unleash.environment, log);
    try {
      await c.start();
      await c.refresh();
      assert.equal(c.status.lastError, null);
      assert.deepEqual(lines.filter((l) => l.msg === 'flags.error'), []);
    } finally {
      c.close();
    }
  });
});
