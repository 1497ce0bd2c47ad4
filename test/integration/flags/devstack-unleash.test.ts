import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { useTestUnleash, uniqueFlag, type TestUnleash } from '../../helpers/unleash.ts';

describe('devstack unleash (real unleash-server 7.5.1)', () => {
  let unleash: TestUnleash;
  before(async () => { unleash = await useTestUnleash(); });
  after(() => unleash.stop());

  test('/health answers and auth is on: the admin API refuses a request without a token', async () => {
    assert.equal((await fetch(`${unleash.url}/health`)).status, 200);
    assert.equal((await fetch(`${unleash.url}/api/admin/projects/default/features`)).status, 401);
  });

  test('the backend token reads the configured environment', async () => {
    const res = await fetch(`${unleash.apiUrl}client/features`, { headers: { Authorization: unleash.backendToken } });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { query: { environment: string } };
    assert.equal(body.query.environment, unleash.environment);
  });

  test('the default strategy is 0 %: /on on a flag without strategies does not expose anyone', async () => {
    const flag = uniqueFlag('devstack');
    const H = { Authorization: unleash.adminToken, 'Content-Type': 'application/json' };
    const P = `${unleash.url}/api/admin/projects/default/features`;
    assert.equal((await fetch(P, { method: 'POST', headers: H, body: JSON.stringify({ name: flag, type: 'release' }) })).status, 201);
    assert.equal((await fetch(`${P}/${flag}/environments/${unleash.environment}/on`, { method: 'POST', headers: H })).status, 200);
    const state = (await (await fetch(`${P}/${flag}/environments/${unleash.environment}`, { headers: H })).json()) as {
      enabled: boolean; strategies: { name: string; parameters: Record<string, string> }[];
    };
    assert.equal(state.enabled, true);
    assert.equal(state.strategies.length, 1);
    assert.equal(state.strategies[0]?.name, 'flexibleRollout');
    assert.equal(state.strategies[0]?.parameters.rollout, '0');
    assert.equal(state.strategies[0]?.parameters.groupId, flag);
  });
});
