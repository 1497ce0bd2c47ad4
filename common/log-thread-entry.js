// The log thread's entry point (common/log-thread.ts). Worker threads do not inherit the TypeScript loader that
// bin/strangler.js or `node --import tsx` registers on the main thread, so the thread registers its own.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
const { runLogThread } = await import('./log-thread.ts');
runLogThread(workerData);
