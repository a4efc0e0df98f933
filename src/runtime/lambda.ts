import { EventEmitter } from 'node:events';
import {
  GetQueueAttributesCommand,
  type Message,
  type MessageAttributeValue,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import type { Logger } from 'winston';
import { ConfigError, QuorumUnavailableError, ShutdownError } from '../errors.ts';
import { assertHydrates, type BaseHandler } from '../handler/base-handler.ts';
import type { MessageOutcome, OutcomeKind } from '../handler/outcome.ts';
import { type InFlightMessage, type PipelineDeps, runBatch } from '../handler/pipeline.ts';
import type { Redlock } from '../lock/redlock.ts';
import type { WorkerEvents } from '../observability/events.ts';
import { serializeError } from '../observability/serialize.ts';
import { QueueTelemetry } from '../observability/tracing.ts';
import {
  type LambdaOptions,
  type ResolvedLambdaOptions,
  resolveLambdaOptions,
  WORKER_DEFAULTS,
} from './options.ts';
import { type SettleContext, settleOutcomes } from './settle.ts';
import { fifoGroupCheck } from './sqs-actions.ts';

/** The Worker's per-message events (same payloads) and `sqs_error`: what a Lambda invocation emits. */
export type LambdaEvents = Pick<
  WorkerEvents,
  | 'message_processed'
  | 'duplicate_skipped'
  | 'lock_contended'
  | 'quorum_unavailable'
  | 'poison_message'
  | 'handler_error'
  | 'lock_lost'
  | 'message_released'
  | 'sqs_error'
  | 'batch_locked'
>;

/** The function to export as the Lambda handler, with its events attached. */
export interface LambdaHandler {
  (event: SQSEvent, context: Context): Promise<SQSBatchResponse>;
  /**
   * Typed per-message events, emitted once the batch is settled (before the function returns). A
   * listener that throws is logged, never allowed to fail the batch.
   */
  readonly events: EventEmitter<LambdaEvents>;
  readonly options: ResolvedLambdaOptions;
}

/**
 * An SQS-triggered Lambda handler that runs every record of the batch through the same locked pipeline
 * as the Worker: hydrate, lock the batch in one round trip per node, handle, complete or release. It
 * answers a partial batch response: every message that was not processed, a duplicate, or
 * dead-lettered is in `batchItemFailures`, so SQS redelivers it; the event source mapping deletes
 * the rest. The event source mapping MUST have `FunctionResponseTypes: ["ReportBatchItemFailures"]`:
 * without it Lambda ignores the response and deletes the whole batch.
 *
 * `safetyMarginMs` before the function's timeout, running handlers' signals abort; those that settle
 * within a short grace are released and reported as failures, and so is any handler still running,
 * which keeps its lock until it settles (no one else runs its message meanwhile); messages not
 * started yet are reported unrun. On a FIFO queue, a message that does not succeed holds back (reports as failed) the rest of
 * its group in the batch. Failures get visibility backoffs and poison goes to the dead-letter queue,
 * so the execution role needs `sqs:ChangeMessageVisibility` on the queue and `sqs:SendMessage` on the
 * dead-letter queue, besides what the event source mapping needs.
 *
 * At its start, an invocation waits up to `reconnectWaitMs` for a quorum of Redis clients that are
 * reconnecting (a thawed container whose idle connections Redis closed). When every record still
 * found no quorum, the records get the longest backoff (`retryMaxSec`) and the function throws a
 * QuorumUnavailableError, so Lambda counts an error and the outage is seen, not silently drained.
 *
 * Call it at module scope, with the Redlock (or a factory for it) created there too, so the Redis
 * connections are made once per container and reused by every invocation:
 *
 * @example
 * const redlock = new Redlock([new Redis(url1), new Redis(url2), new Redis(url3)]);
 * export const handler = createLambdaHandler(new OrderHandler(), { redlock });
 */
export function createLambdaHandler<T>(handler: BaseHandler<T>, options: LambdaOptions): LambdaHandler {
  const h = handler as unknown;
  if (
    !h ||
    typeof (h as BaseHandler<T>).hydrate !== 'function' ||
    typeof (h as BaseHandler<T>).handle !== 'function'
  ) {
    throw new ConfigError('handler', h, 'must be a BaseHandler instance (with hydrate and handle methods)');
  }
  assertHydrates(h);
  const o = resolveLambdaOptions(options);
  const events = new EventEmitter<LambdaEvents>();
  // Per container: the Redlock (made once from a factory) and each queue's dead-letter queue.
  let redlock: Redlock | undefined = typeof o.redlock === 'function' ? undefined : o.redlock;
  const deadLetterQueues = new Map<string, Promise<string | undefined>>();
  // Warns once per handler (per container) when a FIFO queue's messages lack their MessageGroupId.
  const checkFifoGroups = fifoGroupCheck();
  // Warned once per container: the safety margin was shrunk to half of the time left.
  let warnedShrunkMargin = false;
  // Per container: each queue's spans and messaging metrics.
  const telemetries = new Map<string, QueueTelemetry>();
  const telemetryFor = (queueUrl: string): QueueTelemetry => {
    let telemetry = telemetries.get(queueUrl);
    if (!telemetry) {
      telemetry = new QueueTelemetry(queueUrl);
      telemetries.set(queueUrl, telemetry);
    }
    return telemetry;
  };

  /**
   * The safety margin of an invocation with `remainingMs` left at its start: never more than half of it.
   * A larger one would leave handlers no time at all, and every record would be released at once and
   * loop back hot toward the dead-letter queue (a 3 s function with a slow init and the 2 s default).
   */
  const marginFor = (remainingMs: number, logger: Logger): number => {
    if (!Number.isFinite(remainingMs) || remainingMs >= 2 * o.safetyMarginMs) return o.safetyMarginMs;
    const margin = Math.max(0, Math.floor(remainingMs / 2));
    if (!warnedShrunkMargin) {
      warnedShrunkMargin = true;
      logger.warn(
        'safetyMarginMs is more than half of the time left at the start of an invocation: shrunk to half of it (raise the function timeout or lower safetyMarginMs); warned once per container',
        { safetyMarginMs: o.safetyMarginMs, remainingMs, shrunkToMs: margin },
      );
    }
    return margin;
  };

  const getRedlock = (): Redlock => {
    if (redlock) return redlock;
    const made = (o.redlock as () => Redlock)();
    if (!made || typeof made.acquireMany !== 'function') {
      throw new ConfigError('redlock', made, 'the factory must return a Redlock instance');
    }
    redlock = made;
    return made;
  };

  const emit = <K extends keyof WorkerEvents>(name: K, ...args: WorkerEvents[K]): void => {
    try {
      (events as unknown as EventEmitter).emit(name, ...args);
    } catch (error) {
      o.logger.error('an event listener threw; ignored', { event: name, err: serializeError(error) });
    }
  };

  const deadLetterQueueFor = (queueUrl: string, logger: Logger): Promise<string | undefined> => {
    if (o.deadLetterQueueUrl === false) return Promise.resolve(undefined);
    if (typeof o.deadLetterQueueUrl === 'string') return Promise.resolve(o.deadLetterQueueUrl);
    let found = deadLetterQueues.get(queueUrl);
    if (!found) {
      found = discoverDeadLetterQueue(o.sqs, queueUrl, o.sqsTimeoutMs);
      deadLetterQueues.set(queueUrl, found);
      found.then(
        (url) => {
          if (url) logger.info('dead-letter queue found in the RedrivePolicy', { deadLetterQueueUrl: url });
          else logger.warn('no dead-letter queue: poison messages are reported as failures for SQS redrive');
        },
        (error: unknown) => {
          // Not cached: the next invocation asks again.
          deadLetterQueues.delete(queueUrl);
          logger.warn('could not read the queue RedrivePolicy; poison messages are reported as failures', {
            err: serializeError(error),
          });
        },
      );
    }
    return found.catch(() => undefined);
  };

  /**
   * Runs one queue's records; answers the MessageIds to report as failures, and `outage` when every
   * record failed for lack of a Redis quorum. Never throws.
   */
  const processQueue = async (
    queueUrl: string,
    records: readonly SQSRecord[],
    shutdown: AbortSignal,
    invocationLogger: Logger,
    remainingMs: () => number,
    safetyMarginMs: number,
  ): Promise<QueueResult> => {
    const logger = invocationLogger.child({ queueUrl });
    const messages = records.map(recordToMessage);
    checkFifoGroups(queueUrl, messages, logger);
    const telemetry = telemetryFor(queueUrl);
    // A process span per record, linked to its creation context (AWSTraceHeader or traceparent).
    const traced = telemetry.beginBatch(messages);
    try {
      const deadLetterQueueUrl = deadLetterQueueFor(queueUrl, logger); // alongside the batch
      const redlock = getRedlock();
      // After a thaw, Redis has often closed the container's idle connections and every client is
      // reconnecting: each would count as a "no" at once, and the whole batch fail for lack of a quorum.
      // So wait for a quorum first, within half of what is left before the margin.
      const reconnectWaitMs = Math.min(
        o.reconnectWaitMs,
        Math.max(0, Math.floor((remainingMs() - safetyMarginMs) / 2)),
      );
      const connected = await redlock.whenConnected(reconnectWaitMs);
      if (!connected.available) {
        logger.warn('no Redis quorum connected at the start of the invocation', {
          down: connected.down,
          waitedMs: reconnectWaitMs,
        });
      }
      const ended: MessageOutcome[] = [];
      const running = new Set<InFlightMessage>();
      const pipeline: PipelineDeps<T> = {
        handler,
        redlock,
        logger,
        fifo: queueUrl.endsWith('.fifo'),
        autoExtendLocks: true, // no heartbeat in Lambda: the lock engine extends
        completionTtlMs: o.completionTtlMs,
        // Nothing is deleted before the response; the window only lets finished handlers share a call.
        completionWindowMs: WORKER_DEFAULTS.completionWindowMs,
        shutdown,
        logBodies: o.logMessageBodies,
        handoffSecret: o.handoffSecret,
        onLocked: (info) => emit('batch_locked', info),
        // Collected as each lock ends (settled below, all at once): at the deadline, a message with no
        // outcome yet is one whose handler still runs.
        settleEarly: async (outcomes) => {
          ended.push(...outcomes);
        },
        inFlight: {
          add: (entries) => {
            for (const entry of entries) running.add(entry);
          },
          remove: (entries) => {
            for (const entry of entries) running.delete(entry);
          },
        },
      };
      const batch = runBatch(pipeline, messages);
      const returned = await unlessAbandoned(
        batch,
        shutdown,
        Math.min(SHUTDOWN_GRACE_MS, safetyMarginMs / 4),
      );
      // Settling must end before the function's timeout (a timed-out invocation redelivers the whole
      // batch, poison already dead-lettered included): each of its two sequential SQS steps (dead-letter
      // sends, then visibility backoffs) gets half of what is left, less a margin for the response.
      const budgetMs = (): number =>
        Math.max(50, Math.min(o.sqsTimeoutMs, Math.floor((remainingMs() - RESPONSE_MARGIN_MS) / 2)));
      const settlerWith = (
        dlq: string | undefined,
        sqsTimeoutMs: number,
        backoff: SettleContext['backoff'] = o,
      ): SettleContext => ({
        sqs: o.sqs,
        queueUrl,
        deadLetterQueueUrl: dlq,
        sqsTimeoutMs,
        backoff,
        logger,
        logBodies: o.logMessageBodies,
        deleteAcked: false, // the event source mapping deletes what is not reported
        telemetry,
        emit,
        onSqsError: (operation, error) => {
          logger.error(`SQS ${operation} failed`, { err: serializeError(error) });
          emit('sqs_error', { operation, error });
        },
      });
      const dlq = await withinMs(deadLetterQueueUrl, budgetMs());
      const outcomes = [...ended.splice(0), ...(returned === ABANDONED ? [] : returned)];
      // Every record that reached the lock step lacked a quorum: an outage, not a bad message. A short
      // backoff would burn a receive every few seconds and drain the queue into the DLQ while Redis is
      // down; give each the longest. Poison and duplicates never reach the lock, so one of them in the
      // batch does not hide the outage.
      const locking = outcomes.filter(
        ({ outcome }) => outcome.kind !== 'poison' && outcome.kind !== 'duplicate',
      );
      const outage =
        returned !== ABANDONED &&
        outcomes.length === messages.length &&
        locking.length > 0 &&
        locking.every(({ outcome }) => outcome.kind === 'quorum');
      // Only a batch of nothing but quorum failures fails the invocation: a thrown invocation brings
      // back every record, and poison already dead-lettered would be sent again.
      const pureOutage = outage && locking.length === outcomes.length;
      const longestSec = Math.min(o.retryMaxSec, OUTAGE_BACKOFF_MAX_SEC);
      const settler = outage
        ? settlerWith(dlq, budgetMs(), {
            retryBaseSec: longestSec,
            retryMaxSec: longestSec,
            quorumBackoffSec: longestSec,
          })
        : settlerWith(dlq, budgetMs());
      if (returned === ABANDONED) {
        // Reported as failures, their locks kept (extended while the container runs, expiring while it
        // is frozen): no one runs them meanwhile. Each ends as usual when its handler settles, even in a
        // later invocation of this container, and is settled then.
        const still = [...running];
        logger.warn(
          'Lambda timeout near: handlers still running are reported as failures; they keep their locks',
          {
            messageIds: still.map((m) => m.message.MessageId),
            lockKeys: still.map((m) => m.lock.key),
          },
        );
        // Settled whenever it ends, outside any invocation's budget: the full sqsTimeoutMs per call.
        batch
          .then((rest) => settleOutcomes(settlerWith(dlq, o.sqsTimeoutMs), [...ended.splice(0), ...rest]))
          .catch((error: unknown) => {
            logger.error('an abandoned batch failed after the invocation returned', {
              err: serializeError(error),
            });
          })
          .finally(() => traced.end());
      }
      const { acked } = await settleOutcomes(settler, outcomes);
      if (returned !== ABANDONED) traced.end();
      // Only what is done with is reported done: anything else, whatever its outcome, is a failure.
      const done = new Set(acked);
      const failed = messages.filter((m) => !done.has(m)).map((m) => m.MessageId as string);
      const kinds: Partial<Record<OutcomeKind, number>> = {};
      for (const { outcome } of outcomes) kinds[outcome.kind] = (kinds[outcome.kind] ?? 0) + 1;
      logger.debug('batch settled', { received: messages.length, failed: failed.length, outcomes: kinds });
      if (!outage) return { failed };
      if (!pureOutage) {
        logger.error('no Redis quorum for any record that needed a lock: they back off as long as allowed', {
          records: locking.length,
          retryInSec: longestSec,
        });
        return { failed };
      }
      const failedNodes = [
        ...new Set(outcomes.flatMap(({ outcome }) => (outcome.kind === 'quorum' ? outcome.failedNodes : []))),
      ];
      return { failed, outage: { failedNodes, quorum: redlock.quorum, backoffSec: longestSec } };
    } catch (error) {
      // Locks were released by the pipeline's finally; nothing may be reported done that was not.
      const messageIds = messages.map((m) => m.MessageId as string);
      traced.end(error);
      logger.error('batch failed unexpectedly: every message is reported as a failure', {
        err: serializeError(error),
        messageIds,
      });
      return { failed: messageIds };
    }
  };

  const invoke = async (event: SQSEvent, context: Context): Promise<SQSBatchResponse> => {
    const records = Array.isArray(event?.Records) ? event.Records : [];
    if (records.length === 0) return { batchItemFailures: [] };
    const logger = o.logger.child({ awsRequestId: context?.awsRequestId });
    const remainingAtStart = remainingMsOf(context);
    const safetyMarginMs = marginFor(remainingAtStart, logger);
    if (safetyMarginMs < Math.min(o.safetyMarginMs, MIN_MARGIN_MS)) {
      // No time to run and settle before the timeout (a timed-out invocation retries the whole batch).
      // Reported untouched: they come back after their visibility timeout, not at once.
      logger.warn('too little time left to start anything: every record is reported as a failure', {
        remainingMs: remainingAtStart,
        messageIds: records.map((r) => r?.messageId),
      });
      return { batchItemFailures: records.map((r) => ({ itemIdentifier: r?.messageId })) };
    }
    const deadline = startDeadline(context, safetyMarginMs, logger);
    try {
      // One event source mapping feeds one queue, but nothing is assumed: each queue settles its own.
      const byQueue = new Map<string | undefined, SQSRecord[]>();
      for (const record of records) {
        const queueUrl = o.queueUrl ?? queueUrlFromArn(record?.eventSourceARN);
        byQueue.set(queueUrl, [...(byQueue.get(queueUrl) ?? []), record]);
      }
      const results = await Promise.all(
        [...byQueue].map(async ([queueUrl, group]): Promise<QueueResult> => {
          if (queueUrl) {
            return telemetryFor(queueUrl).inProcessBatch(group.length, () =>
              processQueue(queueUrl, group, deadline.signal, logger, deadline.remainingMs, safetyMarginMs),
            );
          }
          logger.error('no queue URL (eventSourceARN is not an SQS ARN): set the queueUrl option', {
            eventSourceARN: group[0]?.eventSourceARN,
            messageIds: group.map((r) => r.messageId),
          });
          return { failed: group.map((r) => r.messageId) };
        }),
      );
      const outages = results.flatMap((r) => (r.outage ? [r.outage] : []));
      if (outages.length === results.length && outages[0]) {
        // A normal response would hide the outage: fail the invocation, an error Lambda counts (alarms
        // fire, the event source mapping slows down). Nothing was done, so the whole batch comes back,
        // after the backoff each record was given.
        const failedNodes = [...new Set(outages.flatMap((x) => x.failedNodes))];
        const error = new QuorumUnavailableError(undefined, failedNodes, outages[0].quorum);
        logger.error('no Redis quorum for any record: the invocation fails; the records back off', {
          err: serializeError(error),
          records: records.length,
          retryInSec: outages[0].backoffSec,
        });
        throw error;
      }
      return {
        batchItemFailures: results.flatMap((r) => r.failed).map((itemIdentifier) => ({ itemIdentifier })),
      };
    } finally {
      deadline.clear();
    }
  };

  return Object.assign(invoke, { events, options: o });
}

/** What one queue's records came to: the MessageIds to report, and whether all lacked a quorum. */
interface QueueResult {
  readonly failed: readonly string[];
  readonly outage?: {
    readonly failedNodes: readonly string[];
    readonly quorum: number;
    readonly backoffSec: number;
  };
}

/**
 * The longest outage backoff, in s: SQS refuses a visibility beyond 12 h from the receive, and the event
 * source mapping may have held the records for its batching window (up to 300 s) before an invocation
 * of up to 900 s.
 */
const OUTAGE_BACKOFF_MAX_SEC = 43_200 - 300 - 900;
/** Below this margin (after shrinking it to half of the time left), nothing is started. */
const MIN_MARGIN_MS = 300;
/** How long handlers that honour their aborted signal may take to settle before the response. */
const SHUTDOWN_GRACE_MS = 500;
/** Kept free at the end of an invocation for the response itself. */
const RESPONSE_MARGIN_MS = 200;

/** `promise`'s value, or undefined once `ms` passed (the promise is left to settle on its own). */
async function withinMs<V>(promise: Promise<V>, ms: number): Promise<V | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}
const ABANDONED = Symbol('abandoned');

/** `work`'s result, or ABANDONED if it still runs `graceMs` after `shutdown` aborted. */
function unlessAbandoned<R>(
  work: Promise<R>,
  shutdown: AbortSignal,
  graceMs: number,
): Promise<R | typeof ABANDONED> {
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const onAbort = (): void => {
      timer = setTimeout(() => resolve(ABANDONED), graceMs);
    };
    const done = (): void => {
      clearTimeout(timer);
      shutdown.removeEventListener('abort', onAbort);
    };
    if (shutdown.aborted) onAbort();
    else shutdown.addEventListener('abort', onAbort, { once: true });
    work.then(
      (value) => {
        done();
        resolve(value);
      },
      (error: unknown) => {
        done();
        reject(error);
      },
    );
  });
}

/** What `context.getRemainingTimeInMillis()` tells; without it (a local run), the whole time is left. */
function remainingMsOf(context: Context | undefined): number {
  return typeof context?.getRemainingTimeInMillis === 'function'
    ? context.getRemainingTimeInMillis()
    : Number.POSITIVE_INFINITY;
}

/**
 * Aborts `safetyMarginMs` before the function's timeout, as `context.getRemainingTimeInMillis()` tells
 * it. Without that function (a local run), never.
 */
function startDeadline(
  context: Context | undefined,
  safetyMarginMs: number,
  logger: Logger,
): { signal: AbortSignal; clear(): void; remainingMs(): number } {
  const controller = new AbortController();
  const remainingMs = (): number => remainingMsOf(context);
  const remaining = remainingMs();
  const none = { signal: controller.signal, clear: () => {}, remainingMs };
  if (!Number.isFinite(remaining)) return none;
  const abort = (): void => {
    logger.warn('Lambda timeout near: aborting the signals of running handlers', {
      safetyMarginMs,
      remainingMs: remainingMs(),
    });
    controller.abort(
      new ShutdownError(`Lambda timeout in ${safetyMarginMs} ms or less: handler aborted (safetyMarginMs)`),
    );
  };
  const budgetMs = remaining - safetyMarginMs;
  if (budgetMs <= 0) {
    abort();
    return none;
  }
  const timer = setTimeout(abort, budgetMs);
  return { signal: controller.signal, clear: () => clearTimeout(timer), remainingMs };
}

const PARTITION_DOMAINS: Readonly<Record<string, string>> = {
  aws: 'amazonaws.com',
  'aws-us-gov': 'amazonaws.com',
  'aws-cn': 'amazonaws.com.cn',
  'aws-iso': 'c2s.ic.gov',
  'aws-iso-b': 'sc2s.sgov.gov',
};

/** `arn:aws:sqs:{region}:{account}:{name}` -> `https://sqs.{region}.amazonaws.com/{account}/{name}`. */
export function queueUrlFromArn(arn: string | undefined): string | undefined {
  const [prefix, partition, service, region, account, name, ...rest] =
    typeof arn === 'string' ? arn.split(':') : [];
  if (prefix !== 'arn' || service !== 'sqs' || rest.length > 0 || !region || !account || !name)
    return undefined;
  const domain = PARTITION_DOMAINS[partition ?? ''];
  if (!domain) return undefined;
  return `https://sqs.${region}.${domain}/${account}/${name}`;
}

/** A Lambda SQS record in the shape of the SDK's received Message, which the pipeline works on. */
export function recordToMessage(record: SQSRecord): Message {
  const attributes: Record<string, string> = {};
  for (const [name, value] of Object.entries(record.attributes ?? {})) {
    if (typeof value === 'string') attributes[name] = value;
  }
  const messageAttributes: Record<string, MessageAttributeValue> = {};
  for (const [name, value] of Object.entries(record.messageAttributes ?? {})) {
    if (!value) continue;
    const converted: MessageAttributeValue = { DataType: value.dataType };
    if (typeof value.stringValue === 'string') converted.StringValue = value.stringValue;
    if (typeof value.binaryValue === 'string')
      converted.BinaryValue = Buffer.from(value.binaryValue, 'base64');
    // Reserved by SQS and always empty today; kept if they ever carry values.
    if (value.stringListValues?.length) converted.StringListValues = value.stringListValues;
    if (value.binaryListValues?.length) {
      converted.BinaryListValues = value.binaryListValues.map((b) => Buffer.from(b, 'base64'));
    }
    messageAttributes[name] = converted;
  }
  return {
    MessageId: record.messageId,
    ReceiptHandle: record.receiptHandle,
    Body: record.body,
    MD5OfBody: record.md5OfBody,
    ...(record.md5OfMessageAttributes ? { MD5OfMessageAttributes: record.md5OfMessageAttributes } : {}),
    Attributes: attributes,
    ...(Object.keys(messageAttributes).length > 0 ? { MessageAttributes: messageAttributes } : {}),
  };
}

/**
 * The dead-letter queue named by the queue's RedrivePolicy, or undefined when it has none. Only
 * GetQueueAttributes, which the event source mapping's role has anyway: the URL is built from the
 * source queue's (a dead-letter queue lives in the same account and region).
 */
async function discoverDeadLetterQueue(
  sqs: SQSClient,
  queueUrl: string,
  timeoutMs: number,
): Promise<string | undefined> {
  const { Attributes } = await sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['RedrivePolicy'] }),
    { abortSignal: AbortSignal.timeout(timeoutMs) },
  );
  if (!Attributes?.RedrivePolicy) return undefined;
  const policy = JSON.parse(Attributes.RedrivePolicy) as { deadLetterTargetArn?: string };
  const [, , , , account, name] = policy.deadLetterTargetArn?.split(':') ?? [];
  if (!account || !name) return undefined;
  return siblingQueueUrl(queueUrl, account, name);
}

/** The URL of queue `name` of `account` on the same endpoint as `queueUrl` (`{origin}/{account}/{name}`). */
export function siblingQueueUrl(queueUrl: string, account: string, name: string): string {
  const url = new URL(queueUrl);
  const segments = url.pathname.split('/').filter((s) => s.length > 0);
  if (segments.length >= 2 && /^\d{12}$/.test(segments[segments.length - 2] ?? '')) {
    segments[segments.length - 2] = account;
  }
  segments[Math.max(segments.length - 1, 0)] = name;
  url.pathname = `/${segments.join('/')}`;
  url.search = '';
  url.hash = '';
  return url.toString();
}
