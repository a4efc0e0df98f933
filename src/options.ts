import { SQSClient } from '@aws-sdk/client-sqs';
import type { Logger } from 'winston';
import { ConfigError } from './errors.ts';
import type { BaseHandler } from './handler/base-handler.ts';
import type { Redlock } from './lock/redlock.ts';
import { defaultLogger } from './observability/logger.ts';

/** Options of {@link Redlock}. Every field is optional; defaults are resolved by {@link resolveRedlockOptions}. */
export interface RedlockOptions {
  /**
   * How long a lock lives on each node without an extension, in ms.
   * @defaultValue 30000
   */
  ttlMs?: number;
  /**
   * Clock drift allowance as a fraction of the TTL: validity = ttl - elapsed - (ttl * driftFactor + 2 ms).
   * @defaultValue 0.01
   */
  driftFactor?: number;
  /**
   * How many times `acquire` tries again after a failed attempt (held or no quorum). `acquireMany`
   * takes the same default; the worker passes 0 and backs off through SQS instead.
   * @defaultValue 3
   */
  retryCount?: number;
  /**
   * Base delay between attempts, in ms.
   * @defaultValue 200
   */
  retryDelayMs?: number;
  /**
   * Up to this much random delay is added to each retry delay, in ms.
   * @defaultValue 100
   */
  retryJitterMs?: number;
  /**
   * Upper bound on the whole acquisition, retries included, in ms: no attempt starts after it.
   * @defaultValue 10000
   */
  acquireTimeoutMs?: number;
  /**
   * How long one command to one node may take before that node counts as a "no", in ms. A dead, slow
   * or paused node never stalls an operation for longer. Must be below a third of `ttlMs`.
   * @defaultValue 500
   */
  commandTimeoutMs?: number;
  /**
   * How long to wait for a client that is still making its first connection (a Lambda cold start)
   * before it counts as a "no", in ms. Clients that were connected before and are now reconnecting
   * are not waited for.
   * @defaultValue 5000
   */
  connectTimeoutMs?: number;
  /**
   * Extend held locks automatically (one batched call per node per tick, about ttl/3).
   * @defaultValue true
   */
  autoExtend?: boolean;
  /**
   * How long a completion marker written by `complete()` lives, in ms: the window in which a
   * redelivered duplicate is recognised and acked without running the handler again.
   * @defaultValue 86400000 (24 h)
   */
  completionTtlMs?: number;
  /**
   * How long an idle key's fencing counter is kept, in ms (0 keeps it forever). Counters are seeded
   * from the clock, so tokens stay monotonic after an idle counter expires; see the README.
   * @defaultValue 86400000 (24 h)
   */
  fencingTtlMs?: number;
  /**
   * Prefix of every Redis key the engine writes.
   * @defaultValue 'srw:'
   */
  keyPrefix?: string;
  /**
   * A winston logger for warnings (a single node is not fault tolerant) and lock events.
   * @defaultValue a JSON logger at `LOG_LEVEL` (see createLogger)
   */
  logger?: Logger;
}

export type ResolvedRedlockOptions = Required<Omit<RedlockOptions, 'logger'>> & {
  logger: Logger | undefined;
};

export const REDLOCK_DEFAULTS = {
  ttlMs: 30_000,
  driftFactor: 0.01,
  retryCount: 3,
  retryDelayMs: 200,
  retryJitterMs: 100,
  acquireTimeoutMs: 10_000,
  commandTimeoutMs: 500,
  connectTimeoutMs: 5_000,
  autoExtend: true,
  completionTtlMs: 86_400_000,
  fencingTtlMs: 86_400_000,
  keyPrefix: 'srw:',
} as const satisfies Required<Omit<RedlockOptions, 'logger'>>;

/** Applies defaults and checks every rule, alone and across options. Throws {@link ConfigError}. */
export function resolveRedlockOptions(options: RedlockOptions = {}): ResolvedRedlockOptions {
  const o = { ...REDLOCK_DEFAULTS, ...dropUndefined(options), logger: options.logger };
  integer('ttlMs', o.ttlMs, { min: 10 });
  number('driftFactor', o.driftFactor, { min: 0, max: 0.5 });
  integer('retryCount', o.retryCount, { min: 0 });
  integer('retryDelayMs', o.retryDelayMs, { min: 0 });
  integer('retryJitterMs', o.retryJitterMs, { min: 0 });
  integer('acquireTimeoutMs', o.acquireTimeoutMs, { min: 0 });
  integer('commandTimeoutMs', o.commandTimeoutMs, { min: 1 });
  integer('connectTimeoutMs', o.connectTimeoutMs, { min: 0 });
  boolean('autoExtend', o.autoExtend);
  integer('completionTtlMs', o.completionTtlMs, { min: 1 });
  integer('fencingTtlMs', o.fencingTtlMs, { min: 0 });
  if (typeof o.keyPrefix !== 'string') throw new ConfigError('keyPrefix', o.keyPrefix, 'must be a string');
  if (o.commandTimeoutMs * 3 >= o.ttlMs) {
    throw new ConfigError(
      'commandTimeoutMs',
      o.commandTimeoutMs,
      `must be below a third of ttlMs (${o.ttlMs}) so an extension can fail and be retried before the lock expires`,
    );
  }
  if (o.fencingTtlMs !== 0 && o.fencingTtlMs <= o.ttlMs) {
    throw new ConfigError('fencingTtlMs', o.fencingTtlMs, `must be 0 (forever) or above ttlMs (${o.ttlMs})`);
  }
  return o;
}

/** A per-call TTL override is checked against the same rules as the option. */
export function checkTtl(option: string, ttlMs: number, commandTimeoutMs: number): number {
  integer(option, ttlMs, { min: 10 });
  if (commandTimeoutMs * 3 >= ttlMs) {
    throw new ConfigError(option, ttlMs, `must be above 3 x commandTimeoutMs (${commandTimeoutMs})`);
  }
  return ttlMs;
}

// ---- rule helpers, shared by every options resolver of the package ----

export function dropUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export function number(option: string, value: unknown, range: { min?: number; max?: number } = {}): number {
  const { min = -Infinity, max = Infinity } = range;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw new ConfigError(option, value, `must be a number${rangeText(min, max)}`);
  }
  return value;
}

export function integer(option: string, value: unknown, range: { min?: number; max?: number } = {}): number {
  const { min = -Infinity, max = Infinity } = range;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(option, value, `must be an integer${rangeText(min, max)}`);
  }
  return value;
}

export function boolean(option: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw new ConfigError(option, value, 'must be a boolean');
  return value;
}

function rangeText(min: number, max: number): string {
  if (min !== -Infinity && max !== Infinity) return ` between ${min} and ${max}`;
  if (min !== -Infinity) return ` >= ${min}`;
  if (max !== Infinity) return ` <= ${max}`;
  return '';
}

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
   * Interval of the heartbeat that extends, in one batched call each, the locks and the visibility
   * of every in-flight message.
   * @defaultValue a third of the smaller of the lock TTL and the visibility timeout
   */
  heartbeatIntervalMs?: number;
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
  readonly waitTimeSeconds: number;
  readonly deadLetterQueueUrl: string | false | undefined;
  readonly retryBaseSec: number;
  readonly retryMaxSec: number;
  readonly quorumBackoffSec: number;
  readonly quorumProbeIntervalMs: number;
  readonly completionTtlMs: number | undefined;
  readonly completionWindowMs: number;
  readonly logMessageBodies: boolean;
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
  if (o.completionTtlMs !== undefined) integer('completionTtlMs', o.completionTtlMs, { min: 1 });
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
  const heartbeatIntervalMs =
    o.heartbeatIntervalMs ??
    Math.floor((o.extendVisibility ? Math.min(lockTtlMs, visibilityMs) : lockTtlMs) / 3);
  integer('heartbeatIntervalMs', heartbeatIntervalMs, { min: 10 });
  if (heartbeatIntervalMs >= lockTtlMs / 2) {
    throw new ConfigError(
      'heartbeatIntervalMs',
      heartbeatIntervalMs,
      `must be below half the lock TTL (${lockTtlMs} ms)`,
    );
  }
  if (o.extendVisibility && heartbeatIntervalMs >= visibilityMs / 2) {
    throw new ConfigError(
      'heartbeatIntervalMs',
      heartbeatIntervalMs,
      `must be below half of visibilityTimeoutSec (${o.visibilityTimeoutSec} s) so visibility is extended in time`,
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
    deadLetterQueueUrl: dlq,
    completionTtlMs: o.completionTtlMs,
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
   * their messages reported as failures, with time left to settle the batch.
   * @defaultValue 2000
   */
  safetyMarginMs?: number;
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
}

export interface ResolvedLambdaOptions {
  readonly redlock: Redlock | (() => Redlock);
  readonly sqs: SQSClient;
  readonly queueUrl: string | undefined;
  readonly deadLetterQueueUrl: string | false | undefined;
  readonly logger: Logger;
  readonly safetyMarginMs: number;
  readonly completionTtlMs: number | undefined;
  readonly retryBaseSec: number;
  readonly retryMaxSec: number;
  readonly quorumBackoffSec: number;
  readonly logMessageBodies: boolean;
}

export const LAMBDA_DEFAULTS = {
  safetyMarginMs: 2_000,
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
  if (o.completionTtlMs !== undefined) integer('completionTtlMs', o.completionTtlMs, { min: 1 });
  number('retryBaseSec', o.retryBaseSec, { min: 0, max: 43_200 });
  number('retryMaxSec', o.retryMaxSec, { min: 0, max: 43_200 });
  if (o.retryMaxSec < o.retryBaseSec) {
    throw new ConfigError('retryMaxSec', o.retryMaxSec, `must be >= retryBaseSec (${o.retryBaseSec})`);
  }
  number('quorumBackoffSec', o.quorumBackoffSec, { min: 0, max: 43_200 });
  boolean('logMessageBodies', o.logMessageBodies);
  return {
    redlock: redlock as Redlock | (() => Redlock),
    sqs: o.sqs ?? new SQSClient({}),
    queueUrl: o.queueUrl,
    deadLetterQueueUrl: dlq,
    logger: o.logger ?? defaultLogger(),
    safetyMarginMs: o.safetyMarginMs,
    completionTtlMs: o.completionTtlMs,
    retryBaseSec: o.retryBaseSec,
    retryMaxSec: o.retryMaxSec,
    quorumBackoffSec: o.quorumBackoffSec,
    logMessageBodies: o.logMessageBodies,
  };
}
