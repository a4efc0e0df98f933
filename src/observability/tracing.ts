/**
 * Traces and the conventions' messaging metrics, through `@opentelemetry/api` only: without an SDK
 * registered every call is the API's no-op, attributes are built once per queue, and per-message spans
 * are made only when the batch's span is sampled. Nothing here may throw into the pipeline or change an
 * outcome: every call into the API that ends or annotates a span is guarded.
 *
 * Trace shape (Worker): `receive {queue}` (CLIENT, a new trace per ReceiveMessage, linked to each
 * message's creation context) is the parent of the batch's `sqs_redlock.acquire`, of one
 * `process {queue}` (CONSUMER, linked to its message's creation context) per message, under which the
 * handler runs, and of the `delete {queue}` / `change_visibility {queue}` settle spans. Lambda: the same
 * under one `process {queue}` span per queue of an invocation, in the invocation's context.
 */
import type { Message } from '@aws-sdk/client-sqs';
import {
  type Attributes,
  type Context,
  type Counter,
  context,
  type Histogram,
  INVALID_SPAN_CONTEXT,
  isSpanContextValid,
  type Meter,
  metrics,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  type SpanOptions,
  SpanStatusCode,
  TraceFlags,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import type { MessageOutcome, Outcome } from '../handler/outcome.ts';
import type { AcquireResult } from '../lock/redlock.ts';
import { OUTCOME_LABELS } from './metrics.ts';
import { creationLinks } from './propagation.ts';
import {
  ATTR_AWS_SQS_QUEUE_URL,
  ATTR_ERROR_TYPE,
  ATTR_MESSAGING_BATCH_MESSAGE_COUNT,
  ATTR_MESSAGING_DESTINATION_NAME,
  ATTR_MESSAGING_MESSAGE_ID,
  ATTR_MESSAGING_OPERATION_NAME,
  ATTR_MESSAGING_OPERATION_TYPE,
  ATTR_MESSAGING_SYSTEM,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  INSTRUMENTATION_SCOPE,
  MESSAGING_DURATION_BUCKETS,
  MESSAGING_OPERATION_TYPE_VALUE_PROCESS,
  MESSAGING_OPERATION_TYPE_VALUE_RECEIVE,
  MESSAGING_OPERATION_TYPE_VALUE_SEND,
  MESSAGING_OPERATION_TYPE_VALUE_SETTLE,
  MESSAGING_SYSTEM_VALUE_AWS_SQS,
  METRIC_MESSAGING_CLIENT_CONSUMED_MESSAGES,
  METRIC_MESSAGING_CLIENT_OPERATION_DURATION,
  METRIC_MESSAGING_PROCESS_DURATION,
  SRW,
} from './semconv.ts';

/** The SQS operation behind each span and `messaging.client.operation.duration` series. */
export type SqsOperation = 'receive' | 'process' | 'delete' | 'change_visibility' | 'send';

const OPERATION_TYPES: Record<SqsOperation, string> = {
  receive: MESSAGING_OPERATION_TYPE_VALUE_RECEIVE,
  process: MESSAGING_OPERATION_TYPE_VALUE_PROCESS,
  delete: MESSAGING_OPERATION_TYPE_VALUE_SETTLE,
  change_visibility: MESSAGING_OPERATION_TYPE_VALUE_SETTLE,
  send: MESSAGING_OPERATION_TYPE_VALUE_SEND,
};

/** A span with the monotonic time it started (for the duration metrics, which need no SDK's clock). */
export interface Timed {
  readonly span: Span;
  readonly startedAt: number;
}

/** One message between its receive and its settlement. */
export interface MessageTrace {
  readonly telemetry: QueueTelemetry;
  readonly startedAt: number;
  /** The process span and its context, when the batch is traced. */
  readonly span: Span | undefined;
  readonly context: Context | undefined;
}

/** Messages in flight, for the pipeline (handler context) and settling (end): keyed by the received object. */
const inFlight = new WeakMap<Message, MessageTrace>();

/** What settling tells about a message besides its outcome. */
export interface SettledDetails {
  readonly acked: readonly Message[];
  readonly delayed: readonly { readonly message: Message; readonly seconds: number }[];
}

/**
 * The spans and convention metrics of one queue. One per Worker (its queue), Publisher, and queue a
 * Lambda handler sees. Its meter is taken when it is made: the global meter provider is no proxy, so
 * register the SDK before creating workers (the tracer follows the global provider).
 */
export class QueueTelemetry {
  readonly queueUrl: string;
  readonly queueName: string;
  readonly #tracer: Tracer;
  readonly #consumed: Counter;
  readonly #processDuration: Histogram;
  readonly #operationDuration: Histogram;
  readonly #common: Attributes;
  readonly #operations = new Map<SqsOperation, Attributes>();
  readonly #outcomes = new Map<string, Attributes>();

  constructor(queueUrl: string, providers: { tracer?: Tracer; meter?: Meter } = {}) {
    this.queueUrl = queueUrl;
    this.queueName = queueNameOf(queueUrl);
    this.#tracer = providers.tracer ?? trace.getTracer(INSTRUMENTATION_SCOPE);
    const meter = providers.meter ?? metrics.getMeter(INSTRUMENTATION_SCOPE);
    this.#consumed = meter.createCounter(METRIC_MESSAGING_CLIENT_CONSUMED_MESSAGES, {
      description: 'Number of messages that were delivered to the application.',
      unit: '{message}',
    });
    this.#processDuration = meter.createHistogram(METRIC_MESSAGING_PROCESS_DURATION, {
      description: 'Duration of processing operation.',
      unit: 's',
      advice: { explicitBucketBoundaries: MESSAGING_DURATION_BUCKETS },
    });
    this.#operationDuration = meter.createHistogram(METRIC_MESSAGING_CLIENT_OPERATION_DURATION, {
      description: 'Duration of messaging operation initiated by a producer or consumer client.',
      unit: 's',
      advice: { explicitBucketBoundaries: MESSAGING_DURATION_BUCKETS },
    });
    this.#common = {
      [ATTR_MESSAGING_SYSTEM]: MESSAGING_SYSTEM_VALUE_AWS_SQS,
      [ATTR_MESSAGING_DESTINATION_NAME]: this.queueName,
      ...serverOf(queueUrl),
    };
  }

  /** The attributes of an operation's spans and metrics (sampling-relevant ones, given at span start). */
  attributes(operation: SqsOperation): Attributes {
    let attributes = this.#operations.get(operation);
    if (!attributes) {
      attributes = {
        ...this.#common,
        [ATTR_MESSAGING_OPERATION_NAME]: operation,
        [ATTR_MESSAGING_OPERATION_TYPE]: OPERATION_TYPES[operation],
      };
      this.#operations.set(operation, attributes);
    }
    return attributes;
  }

  /** Starts the span of one ReceiveMessage: a trace of its own. */
  startReceive(): Timed {
    const span = startSpan(this.#tracer, `receive ${this.queueName}`, {
      kind: SpanKind.CLIENT,
      attributes: this.attributes('receive'),
      root: true,
    });
    return { span, startedAt: performance.now() };
  }

  /**
   * Ends a receive span: the messages it brought (linked to their creation contexts) or its error.
   * Answers the context the batch runs in, so its spans are the receive span's children.
   */
  endReceive(receive: Timed, messages: readonly Message[] | undefined, error?: unknown): Context {
    const { span } = receive;
    const count = messages?.length ?? 0;
    quietly(() => {
      if (span.isRecording()) {
        span.setAttribute(ATTR_MESSAGING_BATCH_MESSAGE_COUNT, count);
        for (const message of messages ?? []) span.addLinks(creationLinks(message));
      }
      this.#endOperation('receive', receive, error);
      if (count > 0) this.#consumed.add(count, this.attributes('receive'));
    });
    return trace.setSpan(ROOT_CONTEXT, span);
  }

  /**
   * Runs `fn` (one queue's records of a Lambda invocation) under a `process {queue}` span of the batch, a
   * child of the invocation's context; the per-record spans are its children.
   */
  async inProcessBatch<R>(count: number, fn: () => Promise<R>): Promise<R> {
    const parent = context.active();
    const span = startSpan(
      this.#tracer,
      `process ${this.queueName}`,
      { kind: SpanKind.CONSUMER, attributes: this.attributes('process') },
      parent,
    );
    quietly(() => {
      if (span.isRecording()) span.setAttribute(ATTR_MESSAGING_BATCH_MESSAGE_COUNT, count);
      if (count > 0) this.#consumed.add(count, this.attributes('process'));
    });
    try {
      return await runIn(trace.setSpan(parent, span), fn);
    } finally {
      quietly(() => span.end());
    }
  }

  /**
   * Starts following a received batch: each message's processing time, and, when the batch's span
   * (the active one) is sampled, a `process {queue}` span per message. Every message ends once: when
   * settled ({@link endProcessing}), or by the returned `end` (a batch that failed before settling them).
   */
  beginBatch(messages: readonly Message[], parent: Context = context.active()): BatchTrace {
    const traced = isSampled(parent);
    const startedAt = performance.now();
    for (const message of messages) {
      let span: Span | undefined;
      let spanContext: Context | undefined;
      if (traced) {
        quietly(() => {
          span = this.#tracer.startSpan(
            `process ${this.queueName}`,
            {
              kind: SpanKind.CONSUMER,
              attributes: this.attributes('process'),
              links: creationLinks(message),
            },
            parent,
          );
          if (message.MessageId) span.setAttribute(ATTR_MESSAGING_MESSAGE_ID, message.MessageId);
          const receiveCount = Number(message.Attributes?.ApproximateReceiveCount);
          if (Number.isInteger(receiveCount)) span.setAttribute(SRW.receiveCount, receiveCount);
          spanContext = trace.setSpan(parent, span);
        });
      }
      inFlight.set(message, { telemetry: this, startedAt, span, context: spanContext });
    }
    return new BatchTrace(messages);
  }

  /** Wraps one batched settle call (DeleteMessageBatch, ChangeMessageVisibilityBatch) in its span. */
  async settleCall<R extends SettleResult>(
    operation: 'delete' | 'change_visibility',
    count: number,
    call: () => Promise<R>,
  ): Promise<R> {
    if (count === 0) return call();
    const span = startSpan(this.#tracer, `${operation} ${this.queueName}`, {
      kind: SpanKind.CLIENT,
      attributes: this.attributes(operation),
    });
    const timed = { span, startedAt: performance.now() };
    quietly(() => {
      if (span.isRecording()) span.setAttribute(ATTR_MESSAGING_BATCH_MESSAGE_COUNT, count);
    });
    let result: R;
    try {
      result = await call();
    } catch (error) {
      quietly(() => this.#endOperation(operation, timed, error));
      throw error;
    }
    quietly(() => {
      const [refused] = result.refused;
      const [error] = result.errors;
      if (error !== undefined) this.#endOperation(operation, timed, error);
      else if (refused) this.#endOperation(operation, timed, undefined, refused.code);
      else this.#endOperation(operation, timed);
    });
    return result;
  }

  /** Starts a Publisher's `send {queue}` span (PRODUCER: its context is the message's creation context). */
  startSend(taskKey: string): Timed {
    const span = startSpan(this.#tracer, `send ${this.queueName}`, {
      kind: SpanKind.PRODUCER,
      attributes: this.attributes('send'),
    });
    quietly(() => {
      if (span.isRecording()) span.setAttribute(SRW.lockKey, taskKey);
    });
    return { span, startedAt: performance.now() };
  }

  /** Ends a send span with what the dispatch came to, or its error. */
  endSend(
    send: Timed,
    result: { dispatched: boolean; reason?: string; messageId?: string; fencingToken?: number } | undefined,
    error?: unknown,
  ): void {
    quietly(() => {
      const { span } = send;
      if (span.isRecording() && result) {
        span.setAttribute(
          SRW.dispatchResult,
          result.dispatched ? 'dispatched' : (result.reason ?? 'refused'),
        );
        if (result.messageId) span.setAttribute(ATTR_MESSAGING_MESSAGE_ID, result.messageId);
        if (result.fencingToken !== undefined) span.setAttribute(SRW.fencingToken, result.fencingToken);
      }
      this.#endOperation('send', send, error);
    });
  }

  /** Ends a message's process span with its outcome, and records its processing time. */
  endMessage(traced: MessageTrace, outcome: Outcome | undefined, details?: Settled): void {
    const seconds = (performance.now() - traced.startedAt) / 1000;
    const label = outcome ? OUTCOME_LABELS[outcome.kind] : undefined;
    const error = outcome ? errorOf(outcome) : details?.error;
    const failed = outcome ? isFailure(outcome) : true;
    const errorType = failed ? (errorName(error) ?? label ?? '_OTHER') : undefined;
    this.#processDuration.record(seconds, this.#outcomeAttributes(label, errorType));
    const { span } = traced;
    if (!span?.isRecording()) {
      span?.end();
      return;
    }
    if (outcome && label) span.setAttributes(outcomeAttributes(outcome, label, details));
    if (error !== undefined) span.recordException(asException(error));
    if (errorType !== undefined) {
      span.setAttribute(ATTR_ERROR_TYPE, errorType);
      span.setStatus({ code: SpanStatusCode.ERROR, message: statusMessage(outcome, error) });
    }
    span.end();
  }

  #outcomeAttributes(label: string | undefined, errorType: string | undefined): Attributes {
    const key = `${label ?? ''}\n${errorType ?? ''}`;
    let attributes = this.#outcomes.get(key);
    if (!attributes) {
      attributes = {
        ...this.attributes('process'),
        ...(label === undefined ? {} : { [SRW.outcome]: label }),
        ...(errorType === undefined ? {} : { [ATTR_ERROR_TYPE]: errorType }),
      };
      // Error types come from error names: bounded, in case a handler throws ever-new ones.
      if (this.#outcomes.size < MAX_ATTRIBUTE_SETS) this.#outcomes.set(key, attributes);
    }
    return attributes;
  }

  /** Ends an operation's span (with its error, if any) and records its duration, as the conventions ask. */
  #endOperation(operation: SqsOperation, timed: Timed, error?: unknown, refusedCode?: string): void {
    const seconds = (performance.now() - timed.startedAt) / 1000;
    const errorType =
      error !== undefined
        ? (errorName(error) ?? '_OTHER')
        : refusedCode !== undefined
          ? refusedCode
          : undefined;
    const base = this.attributes(operation);
    this.#operationDuration.record(
      seconds,
      errorType === undefined ? base : { ...base, [ATTR_ERROR_TYPE]: errorType },
    );
    const { span } = timed;
    if (errorType !== undefined && span.isRecording()) {
      if (error !== undefined) span.recordException(asException(error));
      span.setAttribute(ATTR_ERROR_TYPE, errorType);
      span.setStatus({
        code: SpanStatusCode.ERROR,
        message: error !== undefined ? messageOf(error) : `entries refused: ${refusedCode}`,
      });
    }
    span.end();
  }
}

/** What a batched SQS call answers (see sqs-actions' BatchResult): its failed calls and refused entries. */
export interface SettleResult {
  readonly errors: readonly unknown[];
  readonly refused: readonly { readonly code: string }[];
}

/** What settling did with a message (or why it was never settled). */
export interface Settled {
  readonly deadLettered?: boolean;
  readonly retryInSec?: number;
  /** Why a message was never settled (its batch failed). */
  readonly error?: unknown;
}

/** The messages of one batch: ends those never settled. */
export class BatchTrace {
  readonly #messages: readonly Message[];

  constructor(messages: readonly Message[]) {
    this.#messages = messages;
  }

  /** Ends every message of the batch not settled yet, as failed with `error` (their batch failed). */
  end(error?: unknown): void {
    for (const message of this.#messages) {
      const traced = inFlight.get(message);
      if (!traced) continue;
      inFlight.delete(message);
      quietly(() => traced.telemetry.endMessage(traced, undefined, { error: error ?? UNSETTLED }));
    }
  }
}

const UNSETTLED = new Error('the batch ended before this message was settled');

/** Ends the process spans of settled messages (from settleOutcomes, once SQS answered). */
export function endProcessing(outcomes: readonly MessageOutcome[], settled: SettledDetails): void {
  let acked: Set<Message> | undefined;
  let delays: Map<Message, number> | undefined;
  for (const { message, outcome } of outcomes) {
    const traced = inFlight.get(message);
    if (!traced) continue;
    inFlight.delete(message);
    acked ??= new Set(settled.acked);
    delays ??= new Map(settled.delayed.map((d) => [d.message, d.seconds]));
    const details: Settled = {
      ...(outcome.kind === 'poison' ? { deadLettered: acked.has(message) } : {}),
      ...(delays.has(message) ? { retryInSec: delays.get(message) } : {}),
    };
    quietly(() => traced.telemetry.endMessage(traced, outcome, details));
  }
}

/** Runs a batch in its receive span's context (its spans are children of it); without one, as it is. */
export function inBatchContext<R>(batchContext: Context | undefined, fn: () => R): R {
  return batchContext ? runIn(batchContext, fn) : fn();
}

/**
 * Runs a message's handler in its process span's context, so the handler's own spans (and
 * auto-instrumented calls) nest under it. Without a process span, `fn` runs as it is.
 */
export function inProcessContext<R>(message: Message, fn: () => R): R {
  const spanContext = inFlight.get(message)?.context;
  return spanContext ? runIn(spanContext, fn) : fn();
}

/** Starts the span of a batch's lock round trip, when the batch is traced. */
export function startLockSpan(keys: number): Span | undefined {
  const parent = context.active();
  if (keys === 0 || !isSampled(parent)) return undefined;
  let span: Span | undefined;
  quietly(() => {
    span = trace
      .getTracer(INSTRUMENTATION_SCOPE)
      .startSpan(
        'sqs_redlock.acquire',
        { kind: SpanKind.INTERNAL, attributes: { [SRW.keyCount]: keys } },
        parent,
      );
  });
  return span;
}

/** Ends the lock span with what the nodes answered: how many keys each answer got, which nodes failed. */
export function endLockSpan(
  span: Span | undefined,
  results: readonly AcquireResult[],
  redlock: { readonly nodes: readonly unknown[]; readonly quorum: number },
): void {
  if (!span) return;
  quietly(() => {
    const counts = { granted: 0, done: 0, held: 0, quorum: 0 };
    const failedNodes = new Set<string>();
    for (const result of results) {
      if (!('reason' in result)) counts.granted++;
      else {
        counts[result.reason]++;
        for (const node of result.failedNodes) failedNodes.add(node);
      }
    }
    span.setAttributes({
      [SRW.granted]: counts.granted,
      [SRW.duplicates]: counts.done,
      [SRW.contended]: counts.held,
      [SRW.noQuorum]: counts.quorum,
      [SRW.nodes]: redlock.nodes.length,
      [SRW.quorum]: redlock.quorum,
      [SRW.failedNodes]: [...failedNodes],
    });
    if (counts.quorum > 0) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: `no Redis quorum for ${counts.quorum} keys` });
    }
    span.end();
  });
}

/** Ends the lock span of a round trip that threw (the batch fails: its messages come back). */
export function failLockSpan(span: Span | undefined, error: unknown): void {
  if (!span) return;
  quietly(() => {
    span.recordException(asException(error));
    span.setAttribute(ATTR_ERROR_TYPE, errorName(error) ?? '_OTHER');
    span.setStatus({ code: SpanStatusCode.ERROR, message: messageOf(error) });
  });
  quietly(() => span.end());
}

/**
 * Whether spans started in `ctx` are worth making: its span (ended or not: a receive span ends before its
 * batch runs) has a valid, sampled context. Without an SDK it has none; a batch sampled out would have
 * its children dropped by a parent-based sampler anyway.
 */
function isSampled(ctx: Context): boolean {
  const spanContext = trace.getSpanContext(ctx);
  return (
    spanContext !== undefined &&
    isSpanContextValid(spanContext) &&
    (spanContext.traceFlags & TraceFlags.SAMPLED) !== 0
  );
}

/** Bounds the cached attribute sets per queue (error types are open-ended). */
const MAX_ATTRIBUTE_SETS = 200;

/** Our attributes of a process span, from its outcome (and what settling did with it). */
function outcomeAttributes(outcome: Outcome, label: string, details?: Settled): Attributes {
  const attributes: Attributes = { [SRW.outcome]: label };
  if (details?.retryInSec !== undefined) attributes[SRW.retryInSec] = details.retryInSec;
  switch (outcome.kind) {
    case 'processed':
      attributes[SRW.marked] = outcome.marked;
      break;
    case 'duplicate':
      attributes[SRW.idempotencyKey] = outcome.idempotencyKey;
      break;
    case 'quorum':
      attributes[SRW.failedNodes] = [...outcome.failedNodes];
      break;
    case 'poison':
      attributes[SRW.poisonReason] = outcome.reason;
      if (details?.deadLettered !== undefined) attributes[SRW.deadLettered] = details.deadLettered;
      break;
    case 'skipped':
      attributes[SRW.releaseReason] = outcome.reason;
      break;
    case 'aborted':
      attributes[SRW.releaseReason] = 'shutdown';
      break;
  }
  if ('lockKey' in outcome) attributes[SRW.lockKey] = outcome.lockKey;
  if ('fencingToken' in outcome) attributes[SRW.fencingToken] = outcome.fencingToken;
  return attributes;
}

/** Outcomes that are failures of the processing operation (status ERROR, `error.type`). */
function isFailure(outcome: Outcome): boolean {
  return (
    outcome.kind === 'failed' ||
    outcome.kind === 'lock_lost' ||
    outcome.kind === 'poison' ||
    outcome.kind === 'quorum'
  );
}

function errorOf(outcome: Outcome): unknown {
  return outcome.kind === 'failed' || outcome.kind === 'lock_lost' || outcome.kind === 'poison'
    ? outcome.error
    : undefined;
}

function statusMessage(outcome: Outcome | undefined, error: unknown): string {
  if (outcome?.kind === 'poison') return outcome.reason;
  if (outcome?.kind === 'quorum') return `no Redis quorum (failed nodes: ${outcome.failedNodes.join(', ')})`;
  return error === undefined ? (outcome?.kind ?? 'not settled') : messageOf(error);
}

/** The class name of an error, for `error.type` (low cardinality); undefined for a non-error. */
function errorName(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  const { name } = error;
  return typeof name === 'string' && name.length > 0 ? name.slice(0, 100) : undefined;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function asException(error: unknown): Error | string {
  return error instanceof Error ? error : String(error);
}

/** Runs `fn` in `ctx`; if the context manager fails before `fn` ran, `fn` runs without it. */
function runIn<R>(ctx: Context, fn: () => R): R {
  let ran = false;
  try {
    return context.with(ctx, () => {
      ran = true;
      return fn();
    });
  } catch (error) {
    if (ran) throw error;
    return fn();
  }
}

/** `tracer.startSpan`, or a non-recording span if it throws (a span processor's onStart, say). */
function startSpan(tracer: Tracer, name: string, options: SpanOptions, parent?: Context): Span {
  try {
    return tracer.startSpan(name, options, parent);
  } catch {
    return trace.wrapSpanContext(INVALID_SPAN_CONTEXT);
  }
}

/** Telemetry never changes an outcome: a throw from the API or an SDK (or a hostile error value) is dropped. */
function quietly(fn: () => void): void {
  try {
    fn();
  } catch {
    // Dropped on purpose (see above).
  }
}

/** The queue's name: the last path segment of its URL (`https://sqs.{region}.amazonaws.com/{account}/{name}`). */
export function queueNameOf(queueUrl: string): string {
  const path = queueUrl.split('?')[0] ?? '';
  const name = path
    .split('/')
    .filter((s) => s.length > 0)
    .at(-1);
  return name ?? queueUrl;
}

/** `aws.sqs.queue.url`, `server.address` and `server.port` of a queue URL (none that does not parse). */
function serverOf(queueUrl: string): Attributes {
  try {
    const url = new URL(queueUrl);
    const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
    return {
      [ATTR_AWS_SQS_QUEUE_URL]: queueUrl,
      [ATTR_SERVER_ADDRESS]: url.hostname,
      [ATTR_SERVER_PORT]: port,
    };
  } catch {
    return { [ATTR_AWS_SQS_QUEUE_URL]: queueUrl };
  }
}
