/**
 * Real parts that integration tests share, started once per `npm test` run and handed to test files through
 * environment variables. A test file run on its own (node --import tsx --test FILE) starts what it needs itself
 * through the same helpers, so nothing depends on the runner.
 */
export interface SharedStack {
  env: Record<string, string>;
  stop(): Promise<void>;
}

export async function startSharedStack(): Promise<SharedStack> {
  return { env: {}, stop: async () => {} };
}
