import { EventEmitter } from 'node:events';
import type { Message } from '@aws-sdk/client-sqs';
import { serializeError } from 'serialize-error';
import { Consumer } from 'sqs-consumer';
import type { Logger } from 'winston';
import { ShutdownError } from '../errors.ts';
import type { MessageOutcome } from '../handler/outcome.ts';
import { type PipelineDeps, runBatch } from '../handler/pipeline.ts';
import type { WorkerEvents } from '../observability/events.ts';
import { type ResolvedWorkerOptions, resolveWorkerOptions, type WorkerOptions } from '../options.ts';
import { Heartbeat } from './heartbeat.ts';
import { resolveDeadLetterQueueUrl, type SettleContext, settleOutcomes } from './settle.ts';

export type WorkerState = 'idle' | 'running' | 'paused' | 'stopping' | 'stopped';

/**
 * A long-lived SQS worker (ECS, EC2, a laptop): sqs-consumer polls in batch mode, every batch runs
 * through the locked pipeline, and the worker settles each message: delete, back off, or dead-letter.
 */
export class Worker<T> extends EventEmitter<WorkerEvents> {
  readonly options: ResolvedWorkerOptions<T>;
  readonly #logger: Logger;
  readonly #consumers: Consumer[];
  readonly #heartbeat: Heartbeat;
  readonly #shutdown = new AbortController();
  readonly #batches = new Set<Promise<void>>();
  readonly #pipeline: PipelineDeps<T>;
  readonly #settler: SettleContext;
  #state: WorkerState = 'idle';
  #stopping: Promise<void> | undefined;
  #pausing: Promise<void> | undefined;
  #starting = false;

  constructor(options: WorkerOptions<T>) {
    super();
    this.options = resolveWorkerOptions(options);
    const o = this.options;
    this.#logger = o.logger.child({ queueUrl: o.queueUrl });
    this.#heartbeat = new Heartbeat({
      redlock: o.redlock,
      sqs: o.sqs,
      queueUrl: o.queueUrl,
      intervalMs: o.heartbeatIntervalMs,
      visibilityTimeoutSec: o.extendVisibility ? o.visibilityTimeoutSec : undefined,
      logger: this.#logger,
    });
    this.#pipeline = {
      handler: o.handler,
      redlock: o.redlock,
      logger: this.#logger,
      fifo: o.fifo,
      autoExtendLocks: false, // the heartbeat extends locks and visibility in the same tick
      completionTtlMs: o.completionTtlMs,
      completionWindowMs: o.completionWindowMs,
      shutdown: this.#shutdown.signal,
      logBodies: o.logMessageBodies,
      inFlight: this.#heartbeat,
      onLocked: (info) => this.emit('batch_locked', info),
      settleEarly: (outcomes) => this.#settle(outcomes),
    };
    this.#consumers = Array.from({ length: o.concurrency }, () => this.#createConsumer());
    this.#settler = {
      sqs: o.sqs,
      queueUrl: o.queueUrl,
      deadLetterQueueUrl: undefined, // found at start()
      backoff: o,
      logger: this.#logger,
      deleteAcked: true,
      emit: (name, ...args) => {
        // A listener that throws must not look like a failed batch: the messages are already settled.
        try {
          this.emit(name, ...(args as never));
        } catch (error) {
          this.#logger.error(`a ${name} listener threw`, { err: serializeError(error) });
        }
      },
      onSqsError: (operation, error) => this.#sqsError(operation, error),
    };
  }

  get state(): WorkerState {
    return this.#state;
  }

  /** Finds the dead-letter queue (unless given) and starts polling. */
  async start(): Promise<void> {
    if (this.#state !== 'idle' || this.#starting) return;
    this.#starting = true;
    this.#settler.deadLetterQueueUrl = await resolveDeadLetterQueueUrl(
      this.options.sqs,
      this.options.queueUrl,
      this.options.deadLetterQueueUrl,
      this.#logger,
    );
    if (!this.#settler.deadLetterQueueUrl) {
      this.#logger.warn(
        'no dead-letter queue: poison messages stay in the queue until its redrive (if any) moves them',
      );
    }
    if (this.#state !== 'idle') return; // stop() was called while the dead-letter queue was looked up
    this.#state = 'running';
    for (const consumer of this.#consumers) consumer.start();
    this.emit('started');
  }

  /**
   * Stops polling, waits for in-flight handlers up to `timeoutMs`, then aborts the rest: their locks
   * are released and their messages made visible at once. Idempotent.
   */
  stop(options: { timeoutMs?: number } = {}): Promise<void> {
    this.#stopping ??= this.#stop(options.timeoutMs ?? 25_000);
    return this.#stopping;
  }

  async #stop(timeoutMs: number): Promise<void> {
    this.#state = 'stopping';
    // Abort: an idle long poll ends now instead of after waitTimeSeconds.
    for (const consumer of this.#consumers) consumer.stop({ abort: true });
    const drained = await this.#drain(timeoutMs);
    if (!drained) {
      this.#logger.warn('shutdown deadline passed: aborting in-flight handlers', { timeoutMs });
      this.#shutdown.abort(new ShutdownError(`worker stopped; ${timeoutMs} ms shutdown deadline passed`));
      await this.#drain(10_000);
    }
    await this.#pausing;
    this.#heartbeat.stop();
    this.#state = 'stopped';
    this.emit('stopped');
  }

  /** Resolves true once no batch is in flight, false if `timeoutMs` passes first. */
  async #drain(timeoutMs: number): Promise<boolean> {
    const until = performance.now() + timeoutMs;
    while (this.#batches.size > 0) {
      const left = until - performance.now();
      if (left <= 0) return false;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, left);
      });
      await Promise.race([Promise.allSettled([...this.#batches]), timeout]);
      // Cleared, or the process would stay alive until the whole shutdown timeout had passed.
      clearTimeout(timer);
    }
    return true;
  }

  #createConsumer(): Consumer {
    const o = this.options;
    const consumer = Consumer.create({
      queueUrl: o.queueUrl,
      sqs: o.sqs,
      batchSize: o.batchSize,
      visibilityTimeout: o.visibilityTimeoutSec,
      waitTimeSeconds: o.waitTimeSeconds,
      messageSystemAttributeNames: ['ApproximateReceiveCount', 'MessageGroupId'],
      messageAttributeNames: ['All'],
      // Deletion and visibility are ours: per message, after the lock says so (see #settle).
      shouldDeleteMessages: false,
      suppressFifoWarning: true,
      handleMessageBatch: async (messages) => {
        await this.#track(this.#processBatch(messages));
        return [];
      },
    });
    consumer.on('error', (error) => {
      // stop() and pauses abort the idle long poll on purpose: that is not an SQS failure.
      if (this.#state !== 'running' && /aborted/i.test(`${error.message} ${(error.cause as Error)?.name}`))
        return;
      this.#sqsError('receive', error);
    });
    return consumer;
  }

  async #track(batch: Promise<void>): Promise<void> {
    this.#batches.add(batch);
    try {
      await batch;
    } finally {
      this.#batches.delete(batch);
    }
  }

  async #processBatch(messages: Message[]): Promise<void> {
    try {
      await this.#settle(await runBatch(this.#pipeline, messages));
    } catch (error) {
      // Nothing was deleted: the messages come back after their visibility timeout.
      this.#logger.error('batch failed', {
        err: serializeError(error),
        messageIds: messages.map((m) => m.MessageId),
      });
    }
  }

  async #settle(outcomes: readonly MessageOutcome[]): Promise<void> {
    if (outcomes.length === 0) return;
    const { quorumLost } = await settleOutcomes(this.#settler, outcomes);
    if (quorumLost) this.#pauseForQuorum();
  }

  /** Stops polling until the quorum answers again, so receive counts are not burnt while Redis is down. */
  #pauseForQuorum(): void {
    if (this.#pausing || this.#state !== 'running') return;
    this.#state = 'paused';
    this.emit('polling_paused', { reason: 'quorum_unavailable' });
    this.#logger.warn('no Redis quorum: polling paused until it answers again');
    for (const consumer of this.#consumers) consumer.stop({ abort: true });
    this.#pausing = (async () => {
      const signal = this.#shutdown.signal;
      while (this.#state === 'paused') {
        await sleep(this.options.quorumProbeIntervalMs);
        if (this.#state !== 'paused' || signal.aborted) return;
        const status = await this.options.redlock.quorumStatus();
        if (!status.available) continue;
        // sqs-consumer runs two poll loops if started while its last poll is still in flight.
        while (this.#consumers.some((c) => c.status.isPolling) && this.#state === 'paused') await sleep(20);
        if (this.#state !== 'paused') return;
        this.#state = 'running';
        for (const consumer of this.#consumers) consumer.start();
        this.#logger.info('Redis quorum is back: polling resumed');
        this.emit('polling_resumed');
      }
    })().finally(() => {
      this.#pausing = undefined;
    });
  }

  #sqsError(operation: string, error: unknown): void {
    this.#logger.error(`SQS ${operation} failed`, { err: serializeError(error) });
    this.emit('sqs_error', { operation, error });
  }
}

function sleep(ms: number): Promise<void> {
  // Not unref'd: a paused or stopping worker must keep the process alive.
  return new Promise((resolve) => setTimeout(resolve, ms));
}
