export type { Message } from '@aws-sdk/client-sqs';
export {
  ConfigError,
  LockCompletedError,
  LockContendedError,
  LockLostError,
  type LockLostReason,
  QuorumUnavailableError,
  ShutdownError,
  SqsRedlockWorkerError,
  VisibilityLostError,
} from './errors.ts';
export { BaseHandler, type HandlerContext } from './handler/base-handler.ts';
export type { Outcome, OutcomeKind } from './handler/outcome.ts';
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
export type { MessageEvent, WorkerEvents } from './observability/events.ts';
export { createLogger } from './observability/logger.ts';
export {
  LAMBDA_DEFAULTS,
  type LambdaOptions,
  REDLOCK_DEFAULTS,
  type RedlockOptions,
  WORKER_DEFAULTS,
  type WorkerOptions,
} from './options.ts';
export { createLambdaHandler, type LambdaEvents, type LambdaHandler } from './runtime/lambda.ts';
export { POISON_ATTRIBUTES } from './runtime/sqs-actions.ts';
export { Worker, type WorkerState } from './runtime/worker.ts';
