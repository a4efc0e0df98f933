export {
  ConfigError,
  LockCompletedError,
  LockContendedError,
  LockLostError,
  type LockLostReason,
  QuorumUnavailableError,
  SqsRedlockWorkerError,
} from './errors.ts';
export { Lock, type LockState } from './lock/lock.ts';
export type { RedisClient } from './lock/node.ts';
export {
  type AcquireOptions,
  type AcquireResult,
  isLock,
  type LockLostEvent,
  type LockRefusal,
  type QuorumStatus,
  Redlock,
  type RedlockEvents,
} from './lock/redlock.ts';
export { createLogger } from './observability/logger.ts';
export { REDLOCK_DEFAULTS, type RedlockOptions } from './options.ts';
