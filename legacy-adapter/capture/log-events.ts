/** Log event names of change capture and the relay (the `event` field of each line). */
export const CAPTURE_LOG = {
  installed: 'sync.capture.installed',
  uninstalled: 'sync.capture.uninstalled',
  relayStarted: 'sync.relay.started',
  relayStopped: 'sync.relay.stopped',
  relayRetry: 'sync.relay.retry',
  published: 'sync.relay.published',
  /** error: a change the relay cannot get past (SYNC_EVENT_TOO_LARGE, SYNC_SCHEMA_CHANGED, SYNC_DECODE_FAILED) or a lost slot (SYNC_SLOT_LOST); the relay stops. */
  relayFailed: 'sync.relay.failed',
  originsUnavailable: 'sync.capture.origins_unavailable',
  /** warn: install/uninstall gave up one attempt at a synced table's lock (lock_timeout) and retries after a pause. */
  lockRetry: 'sync.capture.lock_retry',
} as const;
