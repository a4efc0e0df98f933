import { SQSClient } from '@aws-sdk/client-sqs';
import type { Logger } from 'winston';
import { ConfigError } from '../errors.ts';
import { assertHydrates, type BaseHandler } from '../handler/base-handler.ts';
import type { Redlock } from '../lock/redlock.ts';
import { defaultLogger } from '../observability/logger.ts';
import {
  boolean,
  checkHandoffSecret,
  dropUndefined,
  integer,
  MAX_REDIS_TTL_MS,
  number,
} from '../validate.ts';

// ---- Worker ----

/** Options of {@link Worker}. Defaults are resolved by {@link resolveWorkerOptions}. */
export interface WorkerOptions<T> {
  /** The queue to consume. A URL ending in `.fifo` is a FIFO queue. */
  queueUrl: string;
  /** The BaseHandler subclass instance that hydrates and handles messages. */
  handler: BaseHandler<T>;
  /** The quorum lock engine every message runs under. */
  redlock: Redlock;
  /**
   * The SQS client (set `endpoint` for LocalStack or fauxqs).
   * @defaultValue new SQSClient() (region and endpoint from the environment)
   */
  sqs?: SQSClient;
  /**
   * A winston logger; each message gets a child carrying messageId, lockKey and fencingToken.
   * @defaultValue JSON to stdout at `LOG_LEVEL` (default `info`)
   */
  logger?: Logger;
  /**
   * Messages per ReceiveMessage call, 1 to 10. One batch costs one lock round trip per Redis node.
   * @defaultValue 10
   */
  batchSize?: number;
  /**
   * How many batches are processed at once (one poller each).
   * @defaultValue 1
   */
  concurrency?: number;
  /**
   * Visibility timeout requested on receive, in seconds; the heartbeat keeps extending it.
   * @defaultValue 30
   */
  visibilityTimeoutSec?: number;
  /**
   * Extend the visibility of in-flight messages on every heartbeat. Turning it off lets SQS redeliver
   * a message while it is being handled: the lock still keeps the second delivery from running.
   * @defaultValue true
   */
  extendVisibility?: boolean;
  /**
   * Interval of the visibility heartbeat: each beat extends the visibility of every in-flight message
   * (one ChangeMessageVisibilityBatch per 10), its call cut at the next beat. Locks are not renewed by
   * it: the Redlock's own extender does that on its own timer, so SQS can never stall lock renewal.
   * Below half of `visibilityTimeoutSec`.
   * @defaultValue a third of the visibility timeout
   */
  heartbeatIntervalMs?: number;
  /**
   * Deadline of every SQS call the worker makes except ReceiveMessage (delete, change visibility,
   * dead-letter send, GetQueueAttributes, GetQueueUrl), in ms: a hung connection would otherwise hold a
   * call for the SDK's 900 s socket timeout. A call past it counts as failed (`sqs_error`); the message
   * stays in the queue. 100 to 60000, and at most the visibility timeout.
   * @defaultValue the smaller of 10000 and a third of the visibility timeout
   */
  sqsTimeoutMs?: number;
  /**
   * Long-poll wait of each receive, 0 to 20 seconds.
   * @defaultValue 20
   */
  waitTimeSeconds?: number;
  /**
   * Where poison messages go. `undefined`: found from the queue's RedrivePolicy at start. `false`:
   * none, poison messages are left to the queue's redrive (and logged).
   * @defaultValue undefined (discovered)
   */
  deadLetterQueueUrl?: string | false;
  /**
   * Base of the exponential backoff after a handler failure: base * 2^(receiveCount - 1) seconds.
   * @defaultValue 2
   */
  retryBaseSec?: number;
  /**
   * Cap of every backoff, in seconds (SQS allows up to 43200).
   * @defaultValue 900
   */
  retryMaxSec?: number;
  /**
   * Backoff of messages that found no Redis quorum, in seconds (plus jitter).
   * @defaultValue 5
   */
  quorumBackoffSec?: number;
  /**
   * While polling is paused for lack of a quorum, how often the quorum is probed, in ms.
   * @defaultValue 1000
   */
  quorumProbeIntervalMs?: number;
  /**
   * TTL of completion markers, in ms: how long a redelivered duplicate is recognised.
   * @defaultValue the Redlock's completionTtlMs
   */
  completionTtlMs?: number;
  /**
   * How long a message whose handler finished waits, in ms, for others of its batch to finish before its
   * lock is completed and it is deleted: those that finish within the window share one round trip per
   * Redis node and one DeleteMessageBatch. The batch's last message never waits; 0 waits one turn of the
   * event loop. At most a third of the lock TTL.
   * @defaultValue 50
   */
  completionWindowMs?: number;
  /**
   * Include message bodies in error logs. Off: bodies may carry personal data.
   * @defaultValue false
   */
  logMessageBodies?: boolean;
  /**
   * The secret shared with the {@link Publisher}s that dispatch to this queue (at least 32 characters):
   * a handed-over lock is adopted only if its signature verifies under it. Without it, handoffs are not
   * trusted: their messages run as ordinary messages (under the handler's `lockKey`), with a warning.
   * @defaultValue undefined (handoffs are ignored)
   */
  handoffSecret?: string;
}

export interface ResolvedWorkerOptions<T> {
  readonly queueUrl: string;
  readonly handler: BaseHandler<T>;
  readonly redlock: Redlock;
  readonly sqs: SQSClient;
  readonly logger: Logger;
  readonly fifo: boolean;
  readonly batchSize: number;
  readonly concurrency: number;
  readonly visibilityTimeoutSec: number;
  readonly extendVisibility: boolean;
  readonly heartbeatIntervalMs: number;
  readonly sqsTimeoutMs: number;
  readonly waitTimeSeconds: number;
  readonly deadLetterQueueUrl: string | false | undefined;
  readonly retryBaseSec: number;
  readonly retryMaxSec: number;
  readonly quorumBackoffSec: number;
  readonly quorumProbeIntervalMs: number;
  readonly completionTtlMs: number | undefined;
  readonly completionWindowMs: number;
  readonly logMessageBodies: boolean;
  readonly handoffSecret: string | undefined;
}

export const WORKER_DEFAULTS = {
  batchSize: 10,
  concurrency: 1,
  visibilityTimeoutSec: 30,
  extendVisibility: true,
  waitTimeSeconds: 20,
  retryBaseSec: 2,
  retryMaxSec: 900,
  quorumBackoffSec: 5,
  quorumProbeIntervalMs: 1_000,
  completionWindowMs: 50,
  logMessageBodies: false,
} as const;

/** Bounds of `sqsTimeoutMs` (Worker and Lambda): below 100 ms calls fail on a healthy network. */
export const SQS_TIMEOUT_RANGE_MS = { min: 100, max: 60_000 } as const;

/** The longest completion window a lock TTL allows: a finished message's lock waits that long unextended. */
export function maxCompletionWindowMs(lockTtlMs: number): number {
  return lockTtlMs / 3;
}

/** Applies defaults and checks every rule, alone and across options. Throws {@link ConfigError}. */
export function resolveWorkerOptions<T>(options: WorkerOptions<T>): ResolvedWorkerOptions<T> {
  if (options === null || typeof options !== 'object')
    throw new ConfigError('options', options, 'must be an object');
  const o = { ...WORKER_DEFAULTS, ...dropUndefined(options) };
  if (typeof o.queueUrl !== 'string' || !/^https?:\/\/\S+$/.test(o.queueUrl)) {
    throw new ConfigError('queueUrl', o.queueUrl, 'must be an SQS queue URL (http:// or https://)');
  }
  const handler = o.handler as unknown;
  if (
    !handler ||
    typeof (handler as BaseHandler<T>).hydrate !== 'function' ||
    typeof (handler as BaseHandler<T>).handle !== 'function'
  ) {
    throw new ConfigError(
      'handler',
      handler,
      'must be a BaseHandler instance (with hydrate and handle methods)',
    );
  }
  assertHydrates(handler);
  if (!o.redlock || typeof (o.redlock as Redlock).acquireMany !== 'function') {
    throw new ConfigError('redlock', o.redlock, 'must be a Redlock instance');
  }
  integer('batchSize', o.batchSize, { min: 1, max: 10 });
  integer('concurrency', o.concurrency, { min: 1, max: 100 });
  integer('visibilityTimeoutSec', o.visibilityTimeoutSec, { min: 1, max: 43_200 });
  boolean('extendVisibility', o.extendVisibility);
  integer('waitTimeSeconds', o.waitTimeSeconds, { min: 0, max: 20 });
  number('retryBaseSec', o.retryBaseSec, { min: 0, max: 43_200 });
  number('retryMaxSec', o.retryMaxSec, { min: 0, max: 43_200 });
  if (o.retryMaxSec < o.retryBaseSec) {
    throw new ConfigError('retryMaxSec', o.retryMaxSec, `must be >= retryBaseSec (${o.retryBaseSec})`);
  }
  number('quorumBackoffSec', o.quorumBackoffSec, { min: 0, max: 43_200 });
  integer('quorumProbeIntervalMs', o.quorumProbeIntervalMs, { min: 10 });
  boolean('logMessageBodies', o.logMessageBodies);
  if (o.handoffSecret !== undefined) checkHandoffSecret('handoffSecret', o.handoffSecret);
  if (o.completionTtlMs !== undefined)
    integer('completionTtlMs', o.completionTtlMs, { min: 1, max: MAX_REDIS_TTL_MS });
  const dlq = o.deadLetterQueueUrl;
  if (dlq !== undefined && dlq !== false && (typeof dlq !== 'string' || !/^https?:\/\/\S+$/.test(dlq))) {
    throw new ConfigError('deadLetterQueueUrl', dlq, 'must be a queue URL, false, or left out (discovered)');
  }
  const lockTtlMs = o.redlock.options.ttlMs;
  integer('completionWindowMs', o.completionWindowMs, { min: 0 });
  if (o.completionWindowMs > maxCompletionWindowMs(lockTtlMs)) {
    throw new ConfigError(
      'completionWindowMs',
      o.completionWindowMs,
      `must be at most a third of the Redlock's ttlMs (${lockTtlMs}): a finished message's lock waits that long`,
    );
  }
  const visibilityMs = o.visibilityTimeoutSec * 1000;
  // Visibility only: the lock TTL does not bound it, the Redlock's extender renews the locks.
  const heartbeatIntervalMs = o.heartbeatIntervalMs ?? Math.floor(visibilityMs / 3);
  integer('heartbeatIntervalMs', heartbeatIntervalMs, { min: 10 });
  if (o.extendVisibility && heartbeatIntervalMs >= visibilityMs / 2) {
    throw new ConfigError(
      'heartbeatIntervalMs',
      heartbeatIntervalMs,
      `must be below half of visibilityTimeoutSec (${o.visibilityTimeoutSec} s) so visibility is extended in time`,
    );
  }
  const sqsTimeoutMs = o.sqsTimeoutMs ?? Math.min(10_000, Math.floor(visibilityMs / 3));
  integer('sqsTimeoutMs', sqsTimeoutMs, { min: SQS_TIMEOUT_RANGE_MS.min, max: SQS_TIMEOUT_RANGE_MS.max });
  if (sqsTimeoutMs > visibilityMs) {
    throw new ConfigError(
      'sqsTimeoutMs',
      sqsTimeoutMs,
      `must be at most visibilityTimeoutSec (${o.visibilityTimeoutSec} s): a call that outlives the message's visibility answers too late to matter`,
    );
  }
  return {
    ...o,
    queueUrl: o.queueUrl,
    handler: handler as BaseHandler<T>,
    redlock: o.redlock,
    sqs: o.sqs ?? new SQSClient({}),
    logger: o.logger ?? defaultLogger(),
    fifo: o.queueUrl.endsWith('.fifo'),
    heartbeatIntervalMs,
    sqsTimeoutMs,
    deadLetterQueueUrl: dlq,
    completionTtlMs: o.completionTtlMs,
    handoffSecret: o.handoffSecret,
  };
}

// ---- Lambda ----

/**
 * Options of {@link createLambdaHandler}. Defaults are resolved by {@link resolveLambdaOptions}.
 *
 * Create the handler, and with it the Redlock and its Redis clients, at module scope, outside the
 * exported function: Lambda keeps the module alive between invocations of a container, so the
 * connections are made once per container and reused.
 */
export interface LambdaOptions {
  /**
   * The quorum lock engine every message runs under, or a factory that makes it. A factory is called
   * on the first invocation only (once per container), and again only if it threw.
   */
  redlock: Redlock | (() => Redlock);
  /**
   * The SQS client used to dead-letter poison messages, set visibility backoffs and read the queue's
   * RedrivePolicy (set `endpoint` for LocalStack or fauxqs). Deletes are left to the event source mapping.
   * @defaultValue new SQSClient() (region and endpoint from the environment), once per container
   */
  sqs?: SQSClient;
  /**
   * The queue the events come from.
   * @defaultValue derived from each record's `eventSourceARN` (`https://sqs.{region}.amazonaws.com/{account}/{name}`)
   */
  queueUrl?: string;
  /**
   * Where poison messages go. `undefined`: found from the queue's RedrivePolicy on the first invocation
   * and cached for the container. `false`: none, poison messages are reported as failures and left to
   * the queue's redrive (and logged).
   * @defaultValue undefined (discovered)
   */
  deadLetterQueueUrl?: string | false;
  /**
   * A winston logger; each invocation gets a child carrying awsRequestId, each message one carrying
   * messageId, lockKey and fencingToken.
   * @defaultValue JSON to stdout at `LOG_LEVEL` (default `info`)
   */
  logger?: Logger;
  /**
   * Running handlers are aborted this long before the function's timeout (from
   * `context.getRemainingTimeInMillis()`), in ms: their signal fires, their locks are released and
   * their messages reported as failures, with time left to settle the batch. It covers everything after
   * it: the handlers' grace, the dead-letter lookup and settling. Never more than half of what is left at
   * the start of an invocation: a larger margin is shrunk to that, with a warning once per container
   * (otherwise nothing would run and every record would loop back at once). With less than 600 ms left,
   * nothing is started: the records are reported as failures and come back after their visibility timeout.
   * @defaultValue 2000
   */
  safetyMarginMs?: number;
  /**
   * How long an invocation waits at its start, in ms, for Redis clients that are reconnecting, until a
   * quorum is connected: after a container thaws, Redis has often closed its idle connections, and
   * without the wait the batch would fail for lack of a quorum. At most half of the time left before
   * the safety margin. 0: no wait. 0 to 60000.
   * @defaultValue 1000
   */
  reconnectWaitMs?: number;
  /**
   * TTL of completion markers, in ms: how long a redelivered duplicate is recognised.
   * @defaultValue the Redlock's completionTtlMs
   */
  completionTtlMs?: number;
  /**
   * Base of the exponential backoff after a handler failure: base * 2^(receiveCount - 1) seconds.
   * @defaultValue 2
   */
  retryBaseSec?: number;
  /**
   * Cap of every backoff, in seconds (SQS allows up to 43200).
   * @defaultValue 900
   */
  retryMaxSec?: number;
  /**
   * Backoff of messages that found no Redis quorum, in seconds (plus jitter).
   * @defaultValue 5
   */
  quorumBackoffSec?: number;
  /**
   * Include message bodies in error logs. Off: bodies may carry personal data.
   * @defaultValue false
   */
  logMessageBodies?: boolean;
  /**
   * The secret shared with the {@link Publisher}s that dispatch to this queue (at least 32 characters):
   * a handed-over lock is adopted only if its signature verifies under it. Without it, handoffs are not
   * trusted: their messages run as ordinary messages (under the handler's `lockKey`), with a warning.
   * @defaultValue undefined (handoffs are ignored)
   */
  handoffSecret?: string;
  /**
   * Deadline of every SQS call the handler makes (change visibility, dead-letter send,
   * GetQueueAttributes), in ms: a hung connection must not run the function into its timeout. A call
   * past it counts as failed (`sqs_error`); the message is reported as a failure. 100 to 60000.
   * @defaultValue 5000
   */
  sqsTimeoutMs?: number;
}

export interface ResolvedLambdaOptions {
  readonly redlock: Redlock | (() => Redlock);
  readonly sqs: SQSClient;
  readonly queueUrl: string | undefined;
  readonly deadLetterQueueUrl: string | false | undefined;
  readonly logger: Logger;
  readonly safetyMarginMs: number;
  readonly reconnectWaitMs: number;
  readonly completionTtlMs: number | undefined;
  readonly retryBaseSec: number;
  readonly retryMaxSec: number;
  readonly quorumBackoffSec: number;
  readonly logMessageBodies: boolean;
  readonly handoffSecret: string | undefined;
  readonly sqsTimeoutMs: number;
}

export const LAMBDA_DEFAULTS = {
  safetyMarginMs: 2_000,
  reconnectWaitMs: 1_000,
  sqsTimeoutMs: 5_000,
  retryBaseSec: 2,
  retryMaxSec: 900,
  quorumBackoffSec: 5,
  logMessageBodies: false,
} as const;

/** Applies defaults and checks every rule, alone and across options. Throws {@link ConfigError}. */
export function resolveLambdaOptions(options: LambdaOptions): ResolvedLambdaOptions {
  if (options === null || typeof options !== 'object')
    throw new ConfigError('options', options, 'must be an object');
  const o = { ...LAMBDA_DEFAULTS, ...dropUndefined(options) };
  const redlock = o.redlock as unknown;
  if (typeof redlock !== 'function' && (!redlock || typeof (redlock as Redlock).acquireMany !== 'function')) {
    throw new ConfigError('redlock', redlock, 'must be a Redlock instance or a function that returns one');
  }
  if (o.queueUrl !== undefined && (typeof o.queueUrl !== 'string' || !/^https?:\/\/\S+$/.test(o.queueUrl))) {
    throw new ConfigError(
      'queueUrl',
      o.queueUrl,
      'must be an SQS queue URL (http:// or https://), or left out',
    );
  }
  const dlq = o.deadLetterQueueUrl;
  if (dlq !== undefined && dlq !== false && (typeof dlq !== 'string' || !/^https?:\/\/\S+$/.test(dlq))) {
    throw new ConfigError('deadLetterQueueUrl', dlq, 'must be a queue URL, false, or left out (discovered)');
  }
  integer('safetyMarginMs', o.safetyMarginMs, { min: 0, max: 900_000 });
  integer('reconnectWaitMs', o.reconnectWaitMs, { min: 0, max: 60_000 });
  if (o.completionTtlMs !== undefined)
    integer('completionTtlMs', o.completionTtlMs, { min: 1, max: MAX_REDIS_TTL_MS });
  number('retryBaseSec', o.retryBaseSec, { min: 0, max: 43_200 });
  number('retryMaxSec', o.retryMaxSec, { min: 0, max: 43_200 });
  if (o.retryMaxSec < o.retryBaseSec) {
    throw new ConfigError('retryMaxSec', o.retryMaxSec, `must be >= retryBaseSec (${o.retryBaseSec})`);
  }
  number('quorumBackoffSec', o.quorumBackoffSec, { min: 0, max: 43_200 });
  boolean('logMessageBodies', o.logMessageBodies);
  if (o.handoffSecret !== undefined) checkHandoffSecret('handoffSecret', o.handoffSecret);
  integer('sqsTimeoutMs', o.sqsTimeoutMs, { min: SQS_TIMEOUT_RANGE_MS.min, max: SQS_TIMEOUT_RANGE_MS.max });
  return {
    redlock: redlock as Redlock | (() => Redlock),
    sqs: o.sqs ?? new SQSClient({}),
    queueUrl: o.queueUrl,
    deadLetterQueueUrl: dlq,
    logger: o.logger ?? defaultLogger(),
    safetyMarginMs: o.safetyMarginMs,
    reconnectWaitMs: o.reconnectWaitMs,
    completionTtlMs: o.completionTtlMs,
    retryBaseSec: o.retryBaseSec,
    retryMaxSec: o.retryMaxSec,
    quorumBackoffSec: o.quorumBackoffSec,
    logMessageBodies: o.logMessageBodies,
    handoffSecret: o.handoffSecret,
    sqsTimeoutMs: o.sqsTimeoutMs,
  };
}
