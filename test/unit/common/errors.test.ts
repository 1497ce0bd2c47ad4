import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ERROR_CATALOGUE, RETIRED_CODES, StranglerError } from '../../../common/errors.ts';

test('every error code maps to a status and serialises with its code', () => {
  for (const code of Object.keys(ERROR_CATALOGUE) as (keyof typeof ERROR_CATALOGUE)[]) {
    const err = new StranglerError(code, 'x');
    assert.equal(err.toJSON().error.code, code);
    assert.ok(err.status >= 400 && err.status < 600, `${code} has an HTTP status`);
  }
});

test('no retired code is reused', () => {
  for (const code of RETIRED_CODES) assert.ok(!(code in ERROR_CATALOGUE), `${code} was retired and must not come back`);
});
