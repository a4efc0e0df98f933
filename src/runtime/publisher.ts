import {
  GetQueueAttributesCommand,
  type MessageAttributeValue,
  SendMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { isSpanContextValid, type SpanContext } from '@opentelemetry/api';
import type { Logger } from 'winston';
import { ConfigError, QuorumUnavailableError } from '../errors.ts';
import { LOCK_HANDOFF_ATTRIBUTES, lockHandoffAttributes } from '../handler/handoff.ts';
import { acquireForHandoff, releaseHandoff } from '../lock/adopt.ts';
import type { Redlock } from '../lock/redlock.ts';
import { defaultLogger } from '../observability/logger.ts';
import { injectCreationContext } from '../observability/propagation.ts';
import { serializeError } from '../observability/serialize.ts';
import { QueueTelemetry } from '../observability/tracing.ts';
import { checkHandoffSecret, integer, MAX_TIMER_MS } from '../validate.ts';
import { SQS_TIMEOUT_RANGE_MS } from './options.ts';
import {
  ASSUMED_MAX_MESSAGE_BYTES,
  messageSize,
  readMaximumMessageSize,
  SQS_ATTRIBUTE_LIMIT,
} from './sqs-actions.ts';

const HANDOFF_NAMES: readonly string[] = Object.values(LOCK_HANDOFF_ATTRIBUTES);

/**
 * How much longer than the delay a message waits in the queue the pending window must be: time for a
 * worker to receive the message and adopt its lock once it becomes visible.
 */
export const DELAY_MARGIN_MS = 5_000;

/** The pending window of a dispatched task when `dispatch` is given no `ttlMs`: 5 minutes. */
export const DEFAULT_PENDING_TTL_MS = 300_000;

export interface PublisherOptions {
  /** The SQS client (set `endpoint` for LocalStack or fauxqs). */
  sqs: SQSClient;
  /** The queue the tasks go to (consumed by a Worker whose handler runs them). */
  queueUrl: string;
  /** The quorum lock engine; the workers must use a Redlock over the same nodes and `keyPrefix`. */
  redlock: Redlock;
  /**
   * The secret every handoff is signed with (at least 32 characters, random): the workers must be given
   * the same `handoffSecret` (CLI: `HANDOFF_SECRET`), or they ignore the handoffs. Keep it out of code.
   */
  handoffSecret: string;
  /**
   * Default pending window of a dispatched task, in ms: how long its lock waits for a worker to adopt
   * it. Cover the time a message may wait in the queue (its delay, a backlog).
   * @defaultValue 300000 (5 min)
   */
  pendingTtlMs?: number;
  /**
   * Deadline of each SendMessage, in ms (100 to 60000). A send cut off by it may still have reached SQS:
   * its handoff is released, and the worker then locks the task key itself (see `dispatch`).
   * @defaultValue 10000
   */
  sqsTimeoutMs?: number;
  /** @defaultValue the package's default JSON logger */
  logger?: Logger;
}

export interface DispatchRequest {
  /** The task's lock key: at most one message per key is pending at a time. */
  taskKey: string;
  /** The message body. */
  body: string;
  /** This task's pending window in ms (see {@link PublisherOptions.pendingTtlMs}). */
  ttlMs?: number;
  /**
   * SQS DelaySeconds (0 to 900) of this message; unset, the queue's own DelaySeconds applies. FIFO
   * queues refuse it per message (only the queue's applies): leave it unset or 0 there. The pending
   * window must exceed the delay that applies by {@link DELAY_MARGIN_MS}.
   */
  delaySeconds?: number;
  /** Your own message attributes, at most 6 (SQS allows 10; the handoff takes 4). */
  messageAttributes?: Record<string, MessageAttributeValue>;
  /** FIFO queues: the MessageGroupId. */
  messageGroupId?: string;
  /** FIFO queues: the MessageDeduplicationId (unless the queue deduplicates by content). */
  messageDeduplicationId?: string;
}

export type DispatchResult =
  /** Sent, carrying its lock: the task is pending until a worker completes it or `validUntil` passes. */
  | {
      readonly dispatched: true;
      readonly messageId: string;
      /** The token the worker's handler will see (unless the handoff expired first). */
      readonly fencingToken: number;
      /** Wall-clock estimate (epoch ms) of when the pending lock expires if no worker adopts it. */
      readonly validUntil: number;
    }
  /** Not sent: a message for this task is pending (or a worker is running it). */
  | { readonly dispatched: false; readonly reason: 'pending'; readonly retryAfterMs: number }
  /**
   * Not sent: the task's completion marker exists, it already ran (within the workers' completionTtlMs).
   * A worker would only ack another message for it as a duplicate. To run a task again, give each run
   * its own key (`nightly-report:2025-06-01`).
   */
  | { readonly dispatched: false; readonly reason: 'done' };

/**
 * Dispatches tasks to an SQS queue so that the same task is never pending twice: each message carries
 * its task's lock. `dispatch` acquires the lock of `taskKey` (for the pending window), sends the message
 * with the lock's key, owner value and fencing token as message attributes ({@link LOCK_HANDOFF_ATTRIBUTES}),
 * signed with `handoffSecret`, and hands the lock over: the publisher keeps nothing. The Worker that
 * receives the message verifies the signature, adopts the lock (see src/lock/adopt.ts), runs the handler
 * under it with the same fencing token, and completes it.
 * While the lock is held (waiting in the queue, or being worked on), a new dispatch answers 'pending'.
 *
 * If SendMessage fails, the lock is released and the SDK's error rethrown. A failure that SQS in fact
 * accepted (a timeout after the send) leaves a message whose handoff is gone: the worker then acquires
 * the key normally, and the lock and the completion marker still keep the task to one run.
 */
export class Publisher {
  readonly queueUrl: string;
  readonly #sqs: SQSClient;
  readonly #redlock: Redlock;
  readonly #pendingTtlMs: number;
  readonly #handoffSecret: string;
  readonly #sqsTimeoutMs: number;
  readonly #logger: Logger;
  readonly #telemetry: QueueTelemetry;
  /** The queue's own DelaySeconds, read once (a failed read is tried again on the next dispatch). */
  #queueDelaySec: number | undefined;
  /** The queue's MaximumMessageSize (a trace context is added only within it), read on the first traced dispatch. */
  #maxBytes: Promise<number> | undefined;

  constructor(options: PublisherOptions) {
    if (options === null || typeof options !== 'object') {
      throw new ConfigError('options', options, 'must be an object');
    }
    const { sqs, queueUrl, redlock } = options;
    if (!sqs || typeof (sqs as { send?: unknown }).send !== 'function') {
      throw new ConfigError('sqs', sqs, 'must be an SQSClient');
    }
    if (typeof queueUrl !== 'string' || !/^https?:\/\/\S+$/.test(queueUrl)) {
      throw new ConfigError('queueUrl', queueUrl, 'must be an SQS queue URL (http:// or https://)');
    }
    if (!redlock || typeof (redlock as { adoptMany?: unknown }).adoptMany !== 'function') {
      throw new ConfigError('redlock', redlock, 'must be a Redlock instance');
    }
    this.#sqs = sqs;
    this.queueUrl = queueUrl;
    this.#redlock = redlock;
    this.#handoffSecret = checkHandoffSecret('handoffSecret', options.handoffSecret);
    this.#pendingTtlMs = integer('pendingTtlMs', options.pendingTtlMs ?? DEFAULT_PENDING_TTL_MS, {
      min: 10,
      max: MAX_TIMER_MS,
    });
    this.#sqsTimeoutMs = integer('sqsTimeoutMs', options.sqsTimeoutMs ?? 10_000, SQS_TIMEOUT_RANGE_MS);
    this.#logger = (options.logger ?? defaultLogger()).child({ queueUrl });
    this.#telemetry = new QueueTelemetry(queueUrl);
  }

  /**
   * Sends the task unless it is pending ('pending') or already done ('done'). Throws
   * QuorumUnavailableError when no Redis quorum answers (nothing was sent), ConfigError for a bad
   * request, and the SDK's error when SendMessage fails (the lock was released).
   */
  async dispatch(request: DispatchRequest): Promise<DispatchResult> {
    const checked = checkRequest(request);
    // A `send {queue}` span (PRODUCER) around the whole dispatch: its context is the message's creation
    // context, carried as `traceparent` when SQS's attribute limit leaves room.
    const sending = this.#telemetry.startSend(checked.taskKey);
    try {
      const result = await this.#dispatch(checked, sending.span.spanContext());
      this.#telemetry.endSend(sending, result);
      return result;
    } catch (error) {
      this.#telemetry.endSend(sending, undefined, error);
      throw error;
    }
  }

  async #dispatch(request: DispatchRequest, creationContext: SpanContext): Promise<DispatchResult> {
    const { taskKey, body, delaySeconds, messageAttributes = {} } = request;
    const ttlMs = request.ttlMs ?? this.#pendingTtlMs;
    integer('ttlMs', ttlMs, { min: 10 });
    const fifo = this.queueUrl.endsWith('.fifo');
    if (fifo && delaySeconds !== undefined && delaySeconds !== 0) {
      throw new ConfigError(
        'delaySeconds',
        delaySeconds,
        "must be unset or 0 on a FIFO queue: SQS refuses a per-message DelaySeconds there (set the queue's DelaySeconds instead)",
      );
    }
    // On a standard queue the message's own DelaySeconds (0 included) replaces the queue's.
    const ownDelay = fifo ? undefined : delaySeconds;
    const delaySec = ownDelay ?? (await this.#queueDelay());
    if (delaySec > 0 && ttlMs < delaySec * 1000 + DELAY_MARGIN_MS) {
      const source = ownDelay === undefined ? "the queue's DelaySeconds" : 'delaySeconds';
      throw new ConfigError(
        'ttlMs',
        ttlMs,
        `must exceed the delay of ${delaySec} s (${source}) by ${DELAY_MARGIN_MS} ms at least: the lock would expire before a worker could adopt it`,
      );
    }

    const grant = await acquireForHandoff(this.#redlock, taskKey, ttlMs);
    if ('reason' in grant) {
      switch (grant.reason) {
        case 'held':
          return { dispatched: false, reason: 'pending', retryAfterMs: grant.retryAfterMs };
        case 'done':
          return { dispatched: false, reason: 'done' };
        case 'quorum':
          throw new QuorumUnavailableError(taskKey, grant.failedNodes, this.#redlock.quorum, {
            cause: new Error(grant.detail),
          });
      }
    }

    const attributes = { ...messageAttributes, ...lockHandoffAttributes(grant, this.#handoffSecret) };
    // Not signed by the handoff's HMAC (key, owner value and token only): it never decides a lock. Only
    // within the queue's MaximumMessageSize too: tracing must never get a message refused (read only
    // when there is a context to add, so it costs nothing without an SDK).
    const bytesLeft = isSpanContextValid(creationContext)
      ? (await this.#maxMessageBytes()) - messageSize(body, attributes)
      : 0;
    if (injectCreationContext(attributes, creationContext, SQS_ATTRIBUTE_LIMIT, bytesLeft) === 'no_room') {
      this.#logger.debug(
        'traceparent not added: the message already has the 10 attributes SQS allows, or too few bytes are left under its MaximumMessageSize',
        { lockKey: taskKey, attributes: Object.keys(attributes).length, bytesLeft },
      );
    }
    let messageId: string;
    try {
      const out = await this.#sqs.send(
        new SendMessageCommand({
          QueueUrl: this.queueUrl,
          MessageBody: body,
          MessageAttributes: attributes,
          ...(ownDelay === undefined ? {} : { DelaySeconds: ownDelay }),
          ...(request.messageGroupId === undefined ? {} : { MessageGroupId: request.messageGroupId }),
          ...(request.messageDeduplicationId === undefined
            ? {}
            : { MessageDeduplicationId: request.messageDeduplicationId }),
        }),
        { abortSignal: AbortSignal.timeout(this.#sqsTimeoutMs) },
      );
      messageId = out.MessageId ?? '';
    } catch (error) {
      await releaseHandoff(this.#redlock, grant);
      this.#logger.warn('dispatch failed: SendMessage threw, the task lock was released', {
        lockKey: taskKey,
        fencingToken: grant.fencingToken,
        err: serializeError(error),
      });
      throw error;
    }
    // The lock is the message's now: not released, not extended. It ends when a worker completes or
    // releases it, or at validUntil (the pending window) if no worker adopts it in time.
    this.#logger.debug('task dispatched', { lockKey: taskKey, fencingToken: grant.fencingToken, messageId });
    return { dispatched: true, messageId, fencingToken: grant.fencingToken, validUntil: grant.validUntil };
  }

  /**
   * The queue's MaximumMessageSize, read once; if it cannot be read, the pre-2025 default (256 KiB),
   * the smallest that any queue made with the default has.
   */
  #maxMessageBytes(): Promise<number> {
    this.#maxBytes ??= readMaximumMessageSize(this.#sqs, this.queueUrl, {
      timeoutMs: this.#sqsTimeoutMs,
    }).catch((error: unknown) => {
      this.#logger.debug(
        "could not read the queue's MaximumMessageSize; a trace context is added within 256 KiB",
        {
          err: serializeError(error),
        },
      );
      return ASSUMED_MAX_MESSAGE_BYTES;
    });
    return this.#maxBytes;
  }

  /** The queue's DelaySeconds; 0, with a warning, when it cannot be read (the check is then the request's alone). */
  async #queueDelay(): Promise<number> {
    if (this.#queueDelaySec !== undefined) return this.#queueDelaySec;
    try {
      const { Attributes } = await this.#sqs.send(
        new GetQueueAttributesCommand({ QueueUrl: this.queueUrl, AttributeNames: ['DelaySeconds'] }),
        { abortSignal: AbortSignal.timeout(this.#sqsTimeoutMs) },
      );
      this.#queueDelaySec = Number(Attributes?.DelaySeconds ?? 0) || 0;
      return this.#queueDelaySec;
    } catch (error) {
      this.#logger.warn("could not read the queue's DelaySeconds; the pending window is checked against 0", {
        err: serializeError(error),
      });
      return 0;
    }
  }
}

function checkRequest(request: DispatchRequest): DispatchRequest {
  if (request === null || typeof request !== 'object')
    throw new ConfigError('request', request, 'must be an object');
  const { taskKey, body, delaySeconds, messageAttributes } = request;
  if (typeof taskKey !== 'string' || taskKey.length === 0) {
    throw new ConfigError('taskKey', taskKey, 'must be a non-empty string');
  }
  if (typeof body !== 'string' || body.length === 0)
    throw new ConfigError('body', body, 'must be a non-empty string');
  if (delaySeconds !== undefined) integer('delaySeconds', delaySeconds, { min: 0, max: 900 });
  if (messageAttributes !== undefined) {
    const names = Object.keys(messageAttributes);
    const taken = names.find((name) => HANDOFF_NAMES.includes(name));
    if (taken)
      throw new ConfigError('messageAttributes', taken, 'must not use the names of LOCK_HANDOFF_ATTRIBUTES');
    if (names.length + HANDOFF_NAMES.length > SQS_ATTRIBUTE_LIMIT) {
      throw new ConfigError(
        'messageAttributes',
        messageAttributes,
        `must have at most ${SQS_ATTRIBUTE_LIMIT - HANDOFF_NAMES.length} entries (SQS allows ${SQS_ATTRIBUTE_LIMIT}; the lock handoff takes ${HANDOFF_NAMES.length})`,
      );
    }
  }
  return request;
}

export { LOCK_HANDOFF_ATTRIBUTES, lockHandoffAttributes, readLockHandoff } from '../handler/handoff.ts';
