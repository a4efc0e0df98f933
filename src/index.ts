export type { Message } from '@aws-sdk/client-sqs';
export {
  ConfigError,
  InvalidBodyError,
  LockCompletedError,
  LockContendedError,
  LockLostError,
  type LockLostReason,
  QuorumUnavailableError,
  ShutdownError,
  SqsEntryError,
  SqsRedlockWorkerError,
  VisibilityLostError,
} from './errors.ts';
export {
  BaseHandler,
  defineHandler,
  type HandlerContext,
  type HandlerDefinition,
  SchemaHandler,
} from './handler/base-handler.ts';
export type { Outcome, OutcomeKind } from './handler/outcome.ts';
export type { AdoptOptions, AdoptRefusal, AdoptResult, LockHandoff } from './lock/adopt.ts';
export { Lock, type LockState } from './lock/lock.ts';
export type { RedisClient } from './lock/node.ts';
export { REDLOCK_DEFAULTS, type RedlockOptions } from './lock/options.ts';
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
export {
  checkReadiness,
  type MetricsServer,
  type MetricsServerOptions,
  type Readiness,
  startMetricsServer,
} from './observability/http.ts';
export { createLogger } from './observability/logger.ts';
export {
  createMetrics,
  type MessageOutcomeLabel,
  type Metrics,
  type MetricsOptions,
  type MetricsRedlock,
  type MetricsWorker,
  OTEL_METRICS,
  OUTCOME_EVENTS,
} from './observability/metrics.ts';
export { createLambdaHandler, type LambdaEvents, type LambdaHandler } from './runtime/lambda.ts';
export {
  LAMBDA_DEFAULTS,
  type LambdaOptions,
  WORKER_DEFAULTS,
  type WorkerOptions,
} from './runtime/options.ts';
export {
  DEFAULT_PENDING_TTL_MS,
  type DispatchRequest,
  type DispatchResult,
  LOCK_HANDOFF_ATTRIBUTES,
  lockHandoffAttributes,
  Publisher,
  type PublisherOptions,
  readLockHandoff,
} from './runtime/publisher.ts';
export { POISON_ATTRIBUTES } from './runtime/sqs-actions.ts';
export { Worker, type WorkerState } from './runtime/worker.ts';
