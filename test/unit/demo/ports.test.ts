import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { startDemo } from '../../../devstack/demo/stack.ts';
import { freePort } from '../../../common/net.ts';
import { silentLogger } from '../../../common/logger.ts';

test('npm start: a taken port is named with the flag and variable that change it, before anything starts', async () => {
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
  const taken = (blocker.address() as AddressInfo).port;
  const dataDir = mkdtempSync(join(tmpdir(), 'strangler-demo-ports-'));
  try {
    await assert.rejects(
      startDemo({ dataDir, log: silentLogger, ports: { proxy: await freePort(), admin: taken, unleash: await freePort(), kafka: await freePort() } }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'PORT_IN_USE');
        assert.match(err.message, new RegExp(`port ${taken} on 127\\.0\\.0\\.1 is already in use; the control plane and dashboard want it; pass --admin-port N or set STRANGLER_ADMIN_PORT`));
        return true;
      },
    );
  } finally {
    blocker.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
