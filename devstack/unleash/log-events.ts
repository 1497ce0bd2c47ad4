/** Log event names of the Unleash dev launcher (devstack/unleash). One place, so logs stay greppable. */
export const UNLEASH_LOG = {
  starting: 'unleash: starting',
  postgresStarted: 'unleash: embedded postgresql started',
  childOutput: 'unleash: server output',
  childExited: 'unleash: server process exited',
  childExitedUnexpectedly: 'unleash: server process exited unexpectedly; flags and the Unleash UI are down until restarted',
  ready: 'unleash: ready',
  stopping: 'unleash: stopping',
  stopped: 'unleash: stopped',
  killed: 'unleash: server process did not stop in time; killed',
} as const;
