/** Log event names of change capture and the relay (the `event` field of each line). */
export const CAPTURE_LOG = {
  installed: 'sync.capture.installed',
  uninstalled: 'sync.capture.uninstalled',
  relayStarted: 'sync.relay.started',
  relayStopped: 'sync.relay.stopped',
  relayRetry: 'sync.relay.retry',
  published: 'sync.relay.published',
  originsUnavailable: 'sync.capture.origins_unavailable',
} as const;
