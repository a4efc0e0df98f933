import type { Message, SQSClient } from '@aws-sdk/client-sqs';
import type { Logger } from 'winston';
import { InvalidBodyError, SqsEntryError } from '../errors.ts';
import type { MessageOutcome } from '../handler/outcome.ts';
import { receiveCountOf } from '../handler/pipeline.ts';
import type { WorkerEvents } from '../observability/events.ts';
import { serializeError } from '../observability/serialize.ts';
import { endProcessing, type QueueTelemetry } from '../observability/tracing.ts';
import { contendedBackoffSec, failureBackoffSec, quorumBackoffSec } from './backoff.ts';
import {
  ASSUMED_MAX_MESSAGE_BYTES,
  type BatchResult,
  changeVisibility,
  deleteMessages,
  discoverDeadLetterQueueUrl,
  type EntryFailure,
  readMaximumMessageSize,
  sendToDeadLetter,
} from './sqs-actions.ts';

/** What settling a batch needs; shared by the Worker and the Lambda adapter. */
export interface SettleContext {
  readonly sqs: SQSClient;
  readonly queueUrl: string;
  deadLetterQueueUrl: string | undefined;
  /** The deadline of each SQS call (delete, change visibility, dead-letter send), in ms. */
  readonly sqsTimeoutMs: number;
  readonly backoff: {
    readonly retryBaseSec: number;
    readonly retryMaxSec: number;
    readonly quorumBackoffSec: number;
  };
  readonly logger: Logger;
  /** `logMessageBodies`: a body's validation issues (which may quote its values) are logged only then. */
  readonly logBodies: boolean;
  /** The Worker deletes acked messages itself; Lambda leaves them to the event source mapping. */
  readonly deleteAcked: boolean;
  readonly emit: <K extends keyof WorkerEvents>(name: K, ...args: WorkerEvents[K]) => void;
  readonly onSqsError: (operation: string, error: unknown) => void;
  /**
   * Waits for visibility calls still on their way for these messages (the Worker's heartbeat): one
   * applied after ours would replace a backoff, or a 0, with the full visibility timeout.
   */
  readonly beforeVisibility?: (messages: readonly Message[]) => Promise<void>;
  /**
   * Seconds before a message let go at once (skipped, aborted) becomes visible: 0, unless a receive of
   * the runtime's own is still open while it stops (that receive would only take it back).
   */
  readonly releaseDelaySec?: (message: Message) => number;
  /** The queue's spans and messaging metrics: the settle calls' spans, then each message's process span ends. */
  readonly telemetry?: QueueTelemetry;
}

export interface Settlement {
  /** Done with: processed, duplicates, dead-lettered poison. */
  readonly acked: readonly Message[];
  /** Still in the queue: to be retried (for Lambda, the batchItemFailures). */
  readonly retained: readonly Message[];
  /** Some message found no Redis quorum. */
  readonly quorumLost: boolean;
}

/**
 * Applies a batch's outcomes: delete what is done (or report it acked), put back with a backoff what
 * must wait, dead-letter poison, then emit one event per message. Never deletes a message whose work
 * did not succeed under its lock. Never throws for SQS failures (they are reported).
 */
export async function settleOutcomes(
  ctx: SettleContext,
  outcomes: readonly MessageOutcome[],
): Promise<Settlement> {
  const { retryBaseSec, retryMaxSec } = ctx.backoff;
  const acked: Message[] = [];
  const retained: Message[] = [];
  const toDelay: { message: Message; seconds: number }[] = [];
  const events: (() => void)[] = [];
  let quorumLost = false;
  const retain = (message: Message, seconds: number): void => {
    retained.push(message);
    toDelay.push({ message, seconds });
  };

  await Promise.all(
    outcomes.map(async ({ message, outcome }) => {
      const messageId = message.MessageId ?? 'unknown';
      switch (outcome.kind) {
        case 'processed': {
          acked.push(message);
          const { lockKey, fencingToken, durationMs, marked } = outcome;
          events.push(() =>
            ctx.emit('message_processed', { messageId, lockKey, fencingToken, durationMs, marked }),
          );
          return;
        }
        case 'duplicate':
          acked.push(message);
          events.push(() =>
            ctx.emit('duplicate_skipped', {
              messageId,
              lockKey: outcome.lockKey,
              idempotencyKey: outcome.idempotencyKey,
            }),
          );
          return;
        case 'contended': {
          const retryInSec = contendedBackoffSec(outcome.retryAfterMs, retryMaxSec);
          retain(message, retryInSec);
          events.push(() => ctx.emit('lock_contended', { messageId, lockKey: outcome.lockKey, retryInSec }));
          return;
        }
        case 'quorum': {
          quorumLost = true;
          const retryInSec = quorumBackoffSec(ctx.backoff.quorumBackoffSec, retryMaxSec);
          retain(message, retryInSec);
          const { lockKey, failedNodes } = outcome;
          events.push(() => ctx.emit('quorum_unavailable', { messageId, lockKey, failedNodes, retryInSec }));
          return;
        }
        case 'failed': {
          const receiveCount = receiveCountOf(message);
          const retryInSec = failureBackoffSec(receiveCount, retryBaseSec, retryMaxSec);
          retain(message, retryInSec);
          const { lockKey, fencingToken, error } = outcome;
          events.push(() =>
            ctx.emit('handler_error', { messageId, lockKey, fencingToken, error, receiveCount, retryInSec }),
          );
          return;
        }
        case 'lock_lost': {
          retain(message, failureBackoffSec(receiveCountOf(message), retryBaseSec, retryMaxSec));
          const { lockKey, fencingToken, error } = outcome;
          events.push(() => ctx.emit('lock_lost', { messageId, lockKey, fencingToken, error }));
          return;
        }
        case 'skipped':
        case 'aborted': {
          retain(message, ctx.releaseDelaySec?.(message) ?? 0);
          const reason = outcome.kind === 'skipped' ? outcome.reason : 'shutdown';
          events.push(() => ctx.emit('message_released', { messageId, lockKey: outcome.lockKey, reason }));
          return;
        }
        case 'poison': {
          const deadLettered = await deadLetter(ctx, message, outcome.reason, outcome.error);
          if (deadLettered) acked.push(message);
          // Without a dead-letter queue it stays, untouched, for the queue's own redrive.
          else if (!ctx.deadLetterQueueUrl) retained.push(message);
          // The send failed or cannot fit: kept for the redrive, and backed off, so a send that fails
          // every time costs a receive only now and then.
          else retain(message, failureBackoffSec(receiveCountOf(message), retryBaseSec, retryMaxSec));
          events.push(() => ctx.emit('poison_message', { messageId, reason: outcome.reason, deadLettered }));
          return;
        }
      }
    }),
  );

  const deleteAll = () => deleteMessages(ctx.sqs, ctx.queueUrl, acked, { timeoutMs: ctx.sqsTimeoutMs });
  const delayAll = () => changeVisibility(ctx.sqs, ctx.queueUrl, toDelay, { timeoutMs: ctx.sqsTimeoutMs });
  const { telemetry } = ctx;
  const [deleted, delayed] = await Promise.all([
    ctx.deleteAcked ? (telemetry?.settleCall('delete', acked.length, deleteAll) ?? deleteAll()) : undefined,
    (async () => {
      if (toDelay.length > 0) await ctx.beforeVisibility?.(toDelay.map((d) => d.message));
      return telemetry?.settleCall('change_visibility', toDelay.length, delayAll) ?? delayAll();
    })(),
  ]);
  for (const error of deleted?.errors ?? []) ctx.onSqsError('delete', error);
  for (const error of delayed.errors) ctx.onSqsError('change_visibility', error);
  if (deleted) {
    // The work is done (marked, or a duplicate, or dead-lettered): a redelivery will be acked as a duplicate.
    reportRefused(ctx, 'delete', deleted, 'not deleted; their redeliveries will be acked as duplicates');
  }
  reportRefused(
    ctx,
    'change_visibility',
    delayed,
    'backoff not applied; they come back after their current visibility timeout',
  );
  endProcessing(outcomes, { acked, delayed: toDelay });
  for (const emit of events) emit();
  return { acked, retained, quorumLost };
}

/**
 * Logs the entries SQS refused in a batch call that succeeded (with each code: those refused for good
 * in one line, those that passed on their retry in another) and reports each refused entry once as an
 * `sqs_error` of `operation`, retried or not: throttling shows even when its retry passes.
 */
function reportRefused(
  ctx: SettleContext,
  operation: string,
  result: BatchResult,
  consequence: string,
): void {
  const entry = (r: EntryFailure) => ({
    messageId: r.message.MessageId,
    code: r.code,
    senderFault: r.senderFault,
    detail: r.detail,
  });
  if (result.refused.length > 0) {
    ctx.logger.warn(`SQS ${operation}: ${result.refused.length} entries refused; ${consequence}`, {
      refused: result.refused.map(entry),
    });
  }
  const refusedForGood = new Set(result.refused.map((r) => r.message));
  const passedOnRetry = result.retried.filter((r) => !refusedForGood.has(r.message));
  if (passedOnRetry.length > 0) {
    ctx.logger.warn(`SQS ${operation}: ${passedOnRetry.length} entries refused, then passed on their retry`, {
      refused: passedOnRetry.map(entry),
    });
  }
  const reported = new Set<Message>();
  for (const r of [...result.retried, ...result.refused]) {
    if (reported.has(r.message)) continue;
    reported.add(r.message);
    const error = new SqsEntryError(operation, { messageId: r.message.MessageId, ...r });
    ctx.emit('sqs_error', { operation, error });
  }
}

/**
 * The MaximumMessageSize of each dead-letter queue, read once per client; the poison messages of one
 * batch share the read, and a failed read is tried again by the next one.
 */
const maxSizes = new WeakMap<SQSClient, Map<string, Promise<number>>>();

async function maximumMessageSize(
  ctx: SettleContext,
  queueUrl: string,
  step: AbortSignal,
): Promise<number | undefined> {
  let known = maxSizes.get(ctx.sqs);
  if (!known) {
    known = new Map();
    maxSizes.set(ctx.sqs, known);
  }
  let read = known.get(queueUrl);
  if (!read) {
    read = readMaximumMessageSize(ctx.sqs, queueUrl, { timeoutMs: ctx.sqsTimeoutMs, signal: step });
    known.set(queueUrl, read);
  }
  try {
    return await read;
  } catch (error) {
    if (known.get(queueUrl) === read) {
      known.delete(queueUrl);
      ctx.logger.warn(
        `could not read the dead-letter queue's MaximumMessageSize; assuming ${ASSUMED_MAX_MESSAGE_BYTES} bytes`,
        { deadLetterQueueUrl: queueUrl, err: serializeError(error) },
      );
    }
    return undefined;
  }
}

/**
 * The reason and error as logged. A schema's issue messages can quote the body's values (valibot's
 * do): without `logMessageBodies` only their count and paths are logged (the DLQ keeps them whole).
 */
function loggableReason(
  reason: string,
  error: unknown,
  logBodies: boolean,
): { reason: string; err?: unknown; issuePaths?: string[] } {
  if (!(error instanceof InvalidBodyError) || logBodies) {
    return { reason, err: error === undefined ? undefined : serializeError(error) };
  }
  return {
    reason: error.summary,
    issuePaths: error.issues.map((i) => (i.path ?? []).map(String).join('.')),
  };
}

async function deadLetter(
  ctx: SettleContext,
  message: Message,
  reason: string,
  error: unknown,
): Promise<boolean> {
  const log = { messageId: message.MessageId, ...loggableReason(reason, error, ctx.logBodies) };
  const queueUrl = ctx.deadLetterQueueUrl;
  if (!queueUrl) {
    ctx.logger.warn('poison message left in the queue (no dead-letter queue); SQS redrive will move it', log);
    return false;
  }
  try {
    // One deadline for the whole step (the size read, the send, a resend), not one per call: the step
    // takes at most sqsTimeoutMs, as each of the other settle steps does (Lambda counts on it).
    const step = AbortSignal.timeout(ctx.sqsTimeoutMs);
    const maxBytes = await maximumMessageSize(ctx, queueUrl, step);
    const send = (limit: number) =>
      sendToDeadLetter(
        ctx.sqs,
        queueUrl,
        message,
        reason,
        error,
        { timeoutMs: ctx.sqsTimeoutMs, signal: step },
        limit,
      );
    let result = await send(maxBytes ?? ASSUMED_MAX_MESSAGE_BYTES);
    // Our guess of the limit was too small, perhaps: the original alone may still pass.
    if (!result.sent && maxBytes === undefined) {
      const retry = await send(Number.MAX_SAFE_INTEGER);
      if (retry.sent) result = retry;
    }
    if (!result.sent) {
      ctx.logger.error(
        "poison message larger than the dead-letter queue allows: kept in the queue, backed off, for its redrive (raise the DLQ MaximumMessageSize to the source queue's)",
        { ...log, sizeBytes: result.sizeBytes, maxBytes: result.maxBytes },
      );
      ctx.emit('sqs_error', {
        operation: 'dead_letter',
        error: new Error(
          `message ${message.MessageId} is ${result.sizeBytes} bytes; the dead-letter queue allows ${result.maxBytes}`,
        ),
      });
      return false;
    }
    ctx.logger.warn('poison message moved to the dead-letter queue', { ...log, fit: result.fit });
    return true;
  } catch (sendError) {
    ctx.logger.error('poison message not dead-lettered: kept in the queue, backed off, for its redrive', log);
    ctx.onSqsError('dead_letter', sendError);
    return false;
  }
}

/** The dead-letter queue to use: the configured one, none (false), or the one in the RedrivePolicy. */
export async function resolveDeadLetterQueueUrl(
  sqs: SQSClient,
  queueUrl: string,
  configured: string | false | undefined,
  logger: Logger,
  sqsTimeoutMs: number,
): Promise<string | undefined> {
  if (typeof configured === 'string') return configured;
  if (configured === false) return undefined;
  try {
    return await discoverDeadLetterQueueUrl(sqs, queueUrl, { timeoutMs: sqsTimeoutMs });
  } catch (error) {
    logger.warn('could not read the queue RedrivePolicy; poison messages will be left to SQS', {
      err: serializeError(error),
    });
    return undefined;
  }
}
