import { EventEmitter } from 'node:events';
import type { Message } from '@aws-sdk/client-sqs';
import type { Context } from '@opentelemetry/api';
import { Consumer } from 'sqs-consumer';
import type { Logger } from 'winston';
import { ShutdownError } from '../errors.ts';
import type { MessageOutcome } from '../handler/outcome.ts';
import { type InFlightMessage, type PipelineDeps, runBatch } from '../handler/pipeline.ts';
import type { WorkerEvents } from '../observability/events.ts';
import { serializeError } from '../observability/serialize.ts';
import { inBatchContext, QueueTelemetry, type Timed } from '../observability/tracing.ts';
import { quorumBackoffSec } from './backoff.ts';
import { Heartbeat } from './heartbeat.ts';
import { type ResolvedWorkerOptions, resolveWorkerOptions, type WorkerOptions } from './options.ts';
import { resolveDeadLetterQueueUrl, type SettleContext, settleOutcomes } from './settle.ts';
import {
  changeVisibility,
  errorsOf,
  type FifoGroupCheck,
  fifoGroupCheck,
  RECEIVE_LEGACY_ATTRIBUTES,
  RECEIVE_SYSTEM_ATTRIBUTES,
} from './sqs-actions.ts';

export type WorkerState = 'idle' | 'running' | 'paused' | 'stopping' | 'stopped';

/** What `/readyz` reads of the poll loops (see {@link Worker.pollHealth}). */
export interface PollHealth {
  /** Pollers whose last ReceiveMessage failed (AccessDenied, a missing queue, a network error). */
  readonly failingReceives: number;
  /** The message of one such failure. */
  readonly lastReceiveError?: string;
  /** Pollers whose ReceiveMessage has been open for longer than waitTimeSeconds plus a margin. */
  readonly stuckPollers: number;
}

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
  /** Messages received while stopping or paused, being put back: stop() resolves after them. */
  readonly #lettingGo = new Set<Promise<void>>();
  /** Locked messages whose handlers run: what a shutdown past its deadline leaves running. */
  readonly #running = new Set<InFlightMessage>();
  /** Consumers whose ReceiveMessage was sent and has not answered yet. */
  readonly #receiving = new Set<Consumer>();
  /** When each consumer sent its latest ReceiveMessage: one open far longer than the long poll is stuck. */
  readonly #receiveSentAt = new Map<Consumer, number>();
  /** Consumers whose latest ReceiveMessage failed, with its error; cleared by their next answer. */
  readonly #receiveFailures = new Map<Consumer, Error>();
  /**
   * Closed while paused or stopping: a poll waits here instead of sending a new receive. Polls are held
   * back rather than stopped, so that no open receive ever has to be aborted (see #stop).
   */
  #receiveGate: { readonly closed: Promise<void>; readonly open: () => void } | undefined;
  /** Some message was put back (not deleted) while paused or stopping: an aborted poll could swallow it. */
  #letGoWhileNotRunning = false;
  /** While stopping: when the receives left open will have answered (at the latest). */
  #receivesDue = Number.POSITIVE_INFINITY;
  /** Let go while stopping with a receive of ours open: visible only after it, then made visible at once. */
  readonly #heldBack = new Set<Message>();
  readonly #pipeline: PipelineDeps<T>;
  readonly #settler: SettleContext;
  /** Warns once when a message of a FIFO queue arrives without its MessageGroupId. */
  readonly #checkFifoGroups: FifoGroupCheck = fifoGroupCheck();
  readonly #telemetry: QueueTelemetry;
  /** Each consumer's open ReceiveMessage span. */
  readonly #receiveSpans = new Map<Consumer, Timed>();
  #state: WorkerState = 'idle';
  #stopping: Promise<void> | undefined;
  #pausing: Promise<void> | undefined;
  #starting = false;

  constructor(options: WorkerOptions<T>) {
    super();
    this.options = resolveWorkerOptions(options);
    const o = this.options;
    this.#logger = o.logger.child({ queueUrl: o.queueUrl });
    this.#telemetry = new QueueTelemetry(o.queueUrl);
    this.#heartbeat = new Heartbeat({
      sqs: o.sqs,
      queueUrl: o.queueUrl,
      intervalMs: o.heartbeatIntervalMs,
      visibilityTimeoutSec: o.extendVisibility ? o.visibilityTimeoutSec : undefined,
      sqsTimeoutMs: o.sqsTimeoutMs,
      logger: this.#logger,
      onError: (error) => this.#emit('sqs_error', { operation: 'heartbeat_visibility', error }),
    });
    this.#pipeline = {
      handler: o.handler,
      redlock: o.redlock,
      logger: this.#logger,
      fifo: o.fifo,
      // The Redlock's extender renews the locks on its own timer: a hung SQS call cannot stall it.
      autoExtendLocks: true,
      completionTtlMs: o.completionTtlMs,
      completionWindowMs: o.completionWindowMs,
      shutdown: this.#shutdown.signal,
      logBodies: o.logMessageBodies,
      handoffSecret: o.handoffSecret,
      inFlight: {
        add: (messages) => {
          for (const m of messages) this.#running.add(m);
          this.#heartbeat.add(messages);
        },
        remove: (messages) => {
          for (const m of messages) this.#running.delete(m);
          this.#heartbeat.remove(messages);
        },
      },
      onLocked: (info) => this.#emit('batch_locked', info),
      settleEarly: (outcomes) => this.#settle(outcomes),
    };
    this.#consumers = Array.from({ length: o.concurrency }, () => this.#createConsumer());
    this.#settler = {
      sqs: o.sqs,
      queueUrl: o.queueUrl,
      deadLetterQueueUrl: undefined, // found at start()
      sqsTimeoutMs: o.sqsTimeoutMs,
      backoff: o,
      logger: this.#logger,
      logBodies: o.logMessageBodies,
      deleteAcked: true,
      emit: (name, ...args) => this.#emit(name, ...args),
      onSqsError: (operation, error) => this.#sqsError(operation, error),
      beforeVisibility: (messages) => this.#heartbeat.settled(messages),
      releaseDelaySec: (message) => this.#releaseDelaySec(message),
      telemetry: this.#telemetry,
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
      this.options.sqsTimeoutMs,
    );
    if (!this.#settler.deadLetterQueueUrl) {
      this.#logger.warn(
        'no dead-letter queue: poison messages stay in the queue until its redrive (if any) moves them',
      );
    }
    if (this.#state !== 'idle') return; // stop() was called while the dead-letter queue was looked up
    this.#state = 'running';
    for (const consumer of this.#consumers) consumer.start();
    this.#emit('started');
  }

  /**
   * Stops polling and waits up to `timeoutMs` for in-flight handlers. Past it, their signals abort, and
   * those that honour it get a short grace to settle (released, visible again at once). Then it
   * resolves, even if some handler still runs: such a handler keeps its lock and its message's
   * visibility extended until it settles, then settles as usual (a late success is completed and
   * deleted), so no other worker runs the message meanwhile. The state is then 'stopped' while those
   * batches still run (`batchesInFlight`). `redlock.quit()` then releases none of their locks: it stops
   * extending them (their signals abort) and leaves them to expire after their TTL, as exiting does.
   *
   * An aborted ReceiveMessage stays open on the server and takes what becomes visible meanwhile out
   * of reach for a whole visibility timeout. So an open long poll is aborted only if this worker has
   * no message in flight and put none back while paused or stopping; otherwise it is awaited (up to
   * `waitTimeSeconds`) and what it brings is put back at once. Idempotent.
   */
  stop(options: { timeoutMs?: number } = {}): Promise<void> {
    this.#stopping ??= this.#stop(options.timeoutMs ?? 25_000);
    return this.#stopping;
  }

  /**
   * The poll loops' health, for readiness: receives that fail (a worker that cannot receive is not
   * ready, even with a quorum) and receives left open far past waitTimeSeconds (a hung connection).
   */
  get pollHealth(): PollHealth {
    const now = performance.now();
    const stuckAfterMs = this.options.waitTimeSeconds * 1000 + RECEIVE_MARGIN_MS;
    const stuckPollers = this.#consumers.filter(
      (c) => this.#receiving.has(c) && now - (this.#receiveSentAt.get(c) ?? now) > stuckAfterMs,
    ).length;
    const [failure] = this.#receiveFailures.values();
    return {
      failingReceives: this.#receiveFailures.size,
      ...(failure ? { lastReceiveError: failure.message } : {}),
      stuckPollers,
    };
  }

  /** Batches still running: after stop() resolved, those whose handlers outlived the deadline. */
  get batchesInFlight(): number {
    return this.#batches.size;
  }

  async #stop(timeoutMs: number): Promise<void> {
    this.#state = 'stopping';
    this.#closeReceiveGate();
    const receivesDue = performance.now() + receiveWaitMs(this.options.waitTimeSeconds);
    this.#receivesDue = receivesDue;
    // Nothing in flight: nothing this worker lets go can fall into an aborted poll, so end it now.
    if (this.#batches.size === 0) this.#endPolling();
    if (!(await this.#drain(timeoutMs))) {
      this.#logger.warn('shutdown deadline passed: aborting the signals of in-flight handlers', {
        timeoutMs,
      });
      this.#shutdown.abort(new ShutdownError(`worker stopped; ${timeoutMs} ms shutdown deadline passed`));
      if (!(await this.#drain(SHUTDOWN_GRACE_MS))) {
        const running = [...this.#running];
        this.#logger.warn(
          'handlers still running after the shutdown deadline: they keep their locks and their visibility until they settle',
          {
            messageIds: running.map((m) => m.message.MessageId),
            lockKeys: running.map((m) => m.lock.key),
          },
        );
      }
    }
    await this.#pausing;
    if (this.#batches.size > 0 || this.#letGoWhileNotRunning) await this.#receivesReturned(receivesDue);
    this.#endPolling();
    await Promise.allSettled([...this.#lettingGo]);
    await this.#releaseHeldBack();
    // Abandoned handlers still need their visibility extended; the heartbeat stops by itself after them.
    if (this.#batches.size === 0) this.#heartbeat.stop();
    this.#state = 'stopped';
    this.#emit('stopped');
  }

  /**
   * Seconds a message let go now stays invisible: while stopping with a receive of ours still open,
   * until that receive is due (it would take the message back, one more receive toward
   * maxReceiveCount each time); it is made visible at once after (#releaseHeldBack). Otherwise 0.
   */
  #releaseDelaySec(message: Message): number {
    if (this.#state !== 'stopping' || this.#receiving.size === 0) return 0;
    this.#heldBack.add(message);
    return Math.max(1, Math.ceil((this.#receivesDue - performance.now()) / 1000));
  }

  /** Makes what was held back while receives were open visible, now that none is. */
  async #releaseHeldBack(): Promise<void> {
    if (this.#heldBack.size === 0) return;
    const messages = [...this.#heldBack];
    this.#heldBack.clear();
    const result = await changeVisibility(
      this.options.sqs,
      this.options.queueUrl,
      messages.map((message) => ({ message, seconds: 0 })),
      { timeoutMs: this.options.sqsTimeoutMs },
    );
    for (const error of errorsOf('change_visibility', result)) this.#sqsError('change_visibility', error);
  }

  /** Waits until no ReceiveMessage is open, or `due` (a receive answers within waitTimeSeconds). */
  async #receivesReturned(due: number): Promise<void> {
    while (this.#consumers.some((c) => this.#receiving.has(c))) {
      if (performance.now() > due) {
        this.#logger.warn('a ReceiveMessage did not answer within waitTimeSeconds; stopped without it');
        return;
      }
      await sleep(20);
    }
  }

  /** Ends every poll loop for good: an open receive is aborted, a held-back poll sends nothing. */
  #endPolling(): void {
    for (const consumer of this.#consumers) consumer.stop({ abort: true });
    this.#receiving.clear(); // ended: none of them can take a message back any more
    this.#openReceiveGate();
  }

  #closeReceiveGate(): void {
    if (this.#receiveGate) return;
    let open = (): void => {};
    const closed = new Promise<void>((resolve) => {
      open = resolve;
    });
    this.#receiveGate = { closed, open };
  }

  #openReceiveGate(): void {
    this.#receiveGate?.open();
    this.#receiveGate = undefined;
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
      messageSystemAttributeNames: [...RECEIVE_SYSTEM_ATTRIBUTES],
      attributeNames: [...RECEIVE_LEGACY_ATTRIBUTES], // for emulators that read only the older name
      messageAttributeNames: ['All'],
      // Deletion and visibility are ours: per message, after the lock says so (see #settle).
      shouldDeleteMessages: false,
      suppressFifoWarning: true,
      preReceiveMessageCallback: async () => {
        while (this.#receiveGate) await this.#receiveGate.closed;
        // Its error is not reported (see 'error' below): the poll loop ends here, nothing was sent.
        if (this.#state !== 'running') throw new ShutdownError('receive aborted: the worker is stopping');
        this.#receiving.add(consumer);
        this.#receiveSentAt.set(consumer, performance.now());
        this.#receiveSpans.set(consumer, this.#telemetry.startReceive());
      },
      handleMessageBatch: async (messages) => {
        this.#receiving.delete(consumer);
        this.#receiveFailures.delete(consumer);
        const batchContext = this.#receiveEnded(consumer, messages);
        // A receive left open by stop() or a pause answered: its messages are not run, but put back.
        if (this.#state !== 'running') await this.#track(this.#letGo(messages));
        // In the receive span's context: the batch's spans are its children.
        else await inBatchContext(batchContext, () => this.#track(this.#processBatch(messages)));
        return [];
      },
    });
    consumer.on('empty', () => {
      this.#receiving.delete(consumer);
      this.#receiveFailures.delete(consumer);
      this.#receiveEnded(consumer, []);
    });
    consumer.on('message_received', (message) => this.#checkFifoGroups(o.queueUrl, [message], this.#logger));
    consumer.on('error', (error, messages) => {
      // stop() aborts an idle long poll, or a held-back one, on purpose: that is not an SQS failure.
      const deliberate =
        this.#state !== 'running' && /aborted/i.test(`${error.message} ${(error.cause as Error)?.name}`);
      if (messages === undefined) {
        // The receive failed.
        this.#receiving.delete(consumer);
        this.#receiveEnded(consumer, undefined, deliberate ? undefined : error);
      }
      if (deliberate) return;
      if (messages === undefined) this.#receiveFailures.set(consumer, error);
      this.#sqsError('receive', error);
    });
    return consumer;
  }

  /**
   * Puts back messages received while stopping (visible at once, for another worker) or paused (after
   * the quorum backoff: visible at once, they would only burn receive counts on workers that find no
   * quorum either, which is what the pause is for).
   */
  #letGo(messages: readonly Message[]): Promise<void> {
    const o = this.options;
    const paused = this.#state === 'paused';
    const backoff = paused ? quorumBackoffSec(o.quorumBackoffSec, o.retryMaxSec) : 0;
    const entries = messages.map((message) => ({
      message,
      seconds: paused ? backoff : this.#releaseDelaySec(message),
    }));
    this.#letGoWhileNotRunning = true;
    const letGo = (async () => {
      const result = await changeVisibility(o.sqs, o.queueUrl, entries, { timeoutMs: o.sqsTimeoutMs });
      for (const error of errorsOf('change_visibility', result)) this.#sqsError('change_visibility', error);
      this.#logger.info(
        paused ? 'received while paused: put back, not run' : 'received while stopping: put back, not run',
        {
          messageIds: messages.map((m) => m.MessageId),
          visibleInSec: Math.max(...entries.map((e) => e.seconds)),
        },
      );
    })();
    this.#lettingGo.add(letGo);
    return letGo.finally(() => this.#lettingGo.delete(letGo));
  }

  async #track(batch: Promise<void>): Promise<void> {
    this.#batches.add(batch);
    try {
      await batch;
    } finally {
      this.#batches.delete(batch);
    }
  }

  /** Ends a consumer's receive span; answers the context its batch runs in (none without a span). */
  #receiveEnded(
    consumer: Consumer,
    messages: readonly Message[] | undefined,
    error?: unknown,
  ): Context | undefined {
    const receive = this.#receiveSpans.get(consumer);
    if (!receive) return undefined;
    this.#receiveSpans.delete(consumer);
    return this.#telemetry.endReceive(receive, messages, error);
  }

  async #processBatch(messages: Message[]): Promise<void> {
    const traced = this.#telemetry.beginBatch(messages);
    let failure: unknown;
    try {
      await this.#settle(await runBatch(this.#pipeline, messages));
    } catch (error) {
      failure = error;
      // What was not settled yet is not deleted: it comes back after its visibility timeout.
      this.#logger.error('batch failed', {
        err: serializeError(error),
        messageIds: messages.map((m) => m.MessageId),
      });
    } finally {
      traced.end(failure);
    }
  }

  async #settle(outcomes: readonly MessageOutcome[]): Promise<void> {
    if (outcomes.length === 0) return;
    const { quorumLost, retained } = await settleOutcomes(this.#settler, outcomes);
    if (retained.length > 0 && this.#state !== 'running') this.#letGoWhileNotRunning = true;
    if (quorumLost) this.#pauseForQuorum();
  }

  /**
   * Stops polling until a quorum accepts writes again, so receive counts are not burnt while Redis is
   * down. Probed with a write (redlock.quorumStatus()), not a PING: a majority that answers but refuses
   * writes (read-only replicas, MISCONF, OOM) would resume polling only to fail every lock again.
   */
  #pauseForQuorum(): void {
    if (this.#pausing || this.#state !== 'running') return;
    this.#state = 'paused';
    this.#emit('polling_paused', { reason: 'quorum_unavailable' });
    this.#logger.warn('no Redis quorum: polling paused until a quorum accepts writes again');
    // New receives are held back; open ones are not aborted (an aborted receive stays open on the server
    // and would swallow the messages put back meanwhile): what they bring goes back (see #letGo).
    this.#closeReceiveGate();
    this.#pausing = (async () => {
      const signal = this.#shutdown.signal;
      while (this.#state === 'paused') {
        await sleep(this.options.quorumProbeIntervalMs);
        if (this.#state !== 'paused' || signal.aborted) return;
        const status = await this.options.redlock.quorumStatus();
        if (!status.available || this.#state !== 'paused') continue;
        this.#state = 'running';
        this.#openReceiveGate();
        this.#logger.info('Redis quorum accepts writes again: polling resumed', { up: status.up });
        this.#emit('polling_resumed');
      }
    })().finally(() => {
      this.#pausing = undefined;
    });
  }

  /**
   * Every event goes out here. Listeners observe; they never steer: one that throws is logged and
   * ignored, since a throw in the middle of a batch would leave its locks held and extended, and in the
   * pause loop would leave polling paused for good.
   */
  #emit<K extends keyof WorkerEvents>(name: K, ...args: WorkerEvents[K]): void {
    try {
      this.emit(name, ...(args as never));
    } catch (error) {
      this.#logger.error(`a ${String(name)} listener threw; ignored`, { err: serializeError(error) });
    }
  }

  #sqsError(operation: string, error: unknown): void {
    this.#logger.error(`SQS ${operation} failed`, { err: serializeError(error) });
    this.#emit('sqs_error', { operation, error });
  }
}

/** How long stop() gives handlers that honour their aborted signal to settle, past the deadline. */
const SHUTDOWN_GRACE_MS = 500;
/** How much longer than waitTimeSeconds a receive may take to answer (network, a slow endpoint). */
const RECEIVE_MARGIN_MS = 3_000;

/**
 * The longest stop() waits for a receive it left open (counted from the start of stop, alongside the
 * drain): a process that bounds its shutdown must allow at least this much.
 */
export function receiveWaitMs(waitTimeSeconds: number): number {
  return waitTimeSeconds * 1000 + RECEIVE_MARGIN_MS;
}

function sleep(ms: number): Promise<void> {
  // Not unref'd: a paused or stopping worker must keep the process alive.
  return new Promise((resolve) => setTimeout(resolve, ms));
}
