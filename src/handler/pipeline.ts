import type { Message } from '@aws-sdk/client-sqs';
import type { Logger } from 'winston';
import { InvalidBodyError } from '../errors.ts';
import { acquireOrAdopt, type LockHandoff } from '../lock/adopt.ts';
import type { Lock } from '../lock/lock.ts';
import { type AcquireResult, isLock, type Redlock } from '../lock/redlock.ts';
import { serializeError } from '../observability/serialize.ts';
import { endLockSpan, failLockSpan, inProcessContext, startLockSpan } from '../observability/tracing.ts';
import type { BaseHandler, HandlerContext } from './base-handler.ts';
import { readLockHandoff } from './handoff.ts';
import type { MessageOutcome, Outcome } from './outcome.ts';

/** A locked message while its handler runs: what a heartbeat needs to keep it alive. */
export interface InFlightMessage {
  readonly message: Message;
  readonly lock: Lock;
}

export interface PipelineDeps<T> {
  readonly handler: BaseHandler<T>;
  readonly redlock: Redlock;
  readonly logger: Logger;
  /** FIFO queue: messages of one MessageGroupId run in order, and a failure stops the rest of its group. */
  readonly fifo: boolean;
  /** Let the Redlock extend the locks while their handlers run, on its own timer (the Worker and Lambda do). */
  readonly autoExtendLocks: boolean;
  /** TTL of completion markers; the Redlock's `completionTtlMs` when undefined. */
  readonly completionTtlMs: number | undefined;
  /**
   * Aborted at shutdown past its deadline: the rest is skipped, and running handlers are told through
   * their signal but keep their locks until they settle (a success still counts).
   */
  readonly shutdown: AbortSignal;
  /** Include message bodies in logs (off by default: bodies may hold personal data). */
  readonly logBodies: boolean;
  /** The Publishers' secret: a handoff is adopted only if its signature verifies under it. */
  readonly handoffSecret?: string | undefined;
  /**
   * How long a finished message waits for others of its batch before its lock is completed (0: one turn
   * of the event loop). The batch's last one never waits.
   */
  readonly completionWindowMs?: number;
  /**
   * Settles messages before the batch is done: those that will not run (poison, duplicates, contended,
   * no quorum) as soon as the batch is locked, and the others as soon as their lock has ended. Waiting
   * for the slowest handler would let their visibility lapse and SQS deliver them again. Without it
   * every outcome is returned at the end (Lambda, whose response lists every failure at once).
   */
  readonly settleEarly?: (outcomes: readonly MessageOutcome[]) => Promise<void>;
  /** Told how long locking the batch took (for metrics). */
  readonly onLocked?: (info: { messages: number; locked: number; durationMs: number }) => void;
  /** Told which messages are locked and running, and when they stop. */
  readonly inFlight?: {
    add(messages: readonly InFlightMessage[]): void;
    remove(messages: readonly InFlightMessage[]): void;
  };
}

interface Hydrated<T> {
  readonly message: Message;
  readonly input: T;
  readonly lockKey: string;
  readonly idempotencyKey: string;
  /** The lock handed over with the message by a Publisher: adopted instead of acquired. */
  readonly handoff?: LockHandoff | undefined;
}

/**
 * The fixed flow for one received batch: hydrate, lock the whole batch in one round trip per node,
 * run the handlers, and end each lock as its handler finishes: successes completed (marker + release),
 * the rest released, those finishing within `completionWindowMs` together; a `finally` releases what
 * never finished. Returns an outcome per message not already settled, in order; the runtime deletes,
 * backs off or dead-letters. Never throws for a single message's trouble.
 */
export async function runBatch<T>(
  deps: PipelineDeps<T>,
  messages: readonly Message[],
): Promise<MessageOutcome[]> {
  const outcomes = new Map<Message, Outcome>();
  const hydrated: Hydrated<T>[] = [];
  await Promise.all(
    messages.map(async (message) => {
      const result = await hydrate(deps, message);
      if ('poison' in result) outcomes.set(message, result.poison);
      else hydrated.push({ message, ...result });
    }),
  );
  // Keep the batch's order (hydrate may finish out of order), so FIFO groups run in order.
  const position = new Map(messages.map((m, i) => [m, i]));
  hydrated.sort((a, b) => (position.get(a.message) ?? 0) - (position.get(b.message) ?? 0));

  // Handed-over locks are adopted, the rest acquired: one round trip per node each, at the same time.
  // An expired handoff falls back to a plain acquire of its key; see acquireOrAdopt for why that is safe.
  const lockingStarted = performance.now();
  const lockSpan = startLockSpan(hydrated.length);
  let results: AcquireResult[];
  try {
    results = await acquireOrAdopt(
      deps.redlock,
      hydrated.map((h) => ({ key: h.lockKey, idempotencyKey: h.idempotencyKey, handoff: h.handoff })),
      { retryCount: 0, autoExtend: deps.autoExtendLocks },
    );
  } catch (error) {
    failLockSpan(lockSpan, error); // or it would never end
    throw error;
  }
  endLockSpan(lockSpan, results, deps.redlock);
  const lockingMs = performance.now() - lockingStarted;
  const locked: { item: Hydrated<T>; lock: Lock }[] = [];
  hydrated.forEach((item, i) => {
    const result = results[i];
    if (result && isLock(result)) locked.push({ item, lock: result });
    else if (result?.reason === 'done')
      outcomes.set(item.message, {
        kind: 'duplicate',
        lockKey: item.lockKey,
        idempotencyKey: item.idempotencyKey,
      });
    else if (result?.reason === 'held') {
      outcomes.set(item.message, {
        kind: 'contended',
        lockKey: item.lockKey,
        retryAfterMs: result.retryAfterMs,
      });
    } else {
      outcomes.set(item.message, {
        kind: 'quorum',
        lockKey: item.lockKey,
        failedNodes: result?.failedNodes ?? [],
      });
    }
  });

  const running: InFlightMessage[] = locked.map(({ item, lock }) => ({
    message: item.message,
    lock,
  }));
  const runningOf = new Map(running.map((r) => [r.message, r]));
  const hydratedOf = new Map(hydrated.map((h) => [h.message, h]));
  const settledEarly = new Set<Message>();
  const settling: Promise<void>[] = [];
  /** Hands outcomes to the runtime before the batch is done (without settleEarly they are returned). */
  const settleNow = (now: readonly Message[]): void => {
    const { settleEarly } = deps;
    if (!settleEarly || now.length === 0) return;
    for (const message of now) settledEarly.add(message);
    const batch = now.map((message) => ({ message, outcome: outcomes.get(message) as Outcome }));
    // Called on the next microtask, so a synchronous throw is a rejection too; handled at once, since
    // it is awaited only when the batch is done: until then it would be an unhandled rejection.
    const pending = Promise.resolve().then(() => settleEarly(batch));
    pending.catch(() => {});
    settling.push(pending);
  };
  // What will not run is settled at once; the rest as soon as its lock has ended, not when the batch's
  // slowest handler is done: a slow neighbour must not hold a finished message's deletion back.
  settleNow([...outcomes.keys()]);
  const finisher = new Finisher(deps, outcomes, running.length, (finished) =>
    settleNow(finished.map((f) => f.message)),
  );
  deps.inFlight?.add(running);
  try {
    // Inside the try: a hook that throws must not leave the batch's locks held (and extended) for good.
    if (hydrated.length > 0) {
      deps.onLocked?.({ messages: hydrated.length, locked: running.length, durationMs: lockingMs });
    }
    // allSettled: an unexpected throw in one group must not end the batch's locks while others still run.
    const groups = await Promise.allSettled(
      groupsOf(deps.fifo, messages).map(async (group) => {
        let blocked = false;
        for (const message of group) {
          const entry = runningOf.get(message);
          const item = hydratedOf.get(message);
          if (!entry || !item) {
            // Not runnable (poison, contended, no quorum) or already done (duplicate).
            blocked ||= deps.fifo && outcomes.get(message)?.kind !== 'duplicate';
            continue;
          }
          if (blocked || deps.shutdown.aborted) {
            // FIFO: an earlier message of this group did not succeed, so this one must wait for it.
            const reason = blocked ? 'fifo_order' : 'shutdown';
            finisher.finish(entry, { kind: 'skipped', lockKey: item.lockKey, reason });
            blocked = deps.fifo;
            continue;
          }
          const started = performance.now();
          const outcome = await runHandler(deps, item, entry);
          const durationMs = performance.now() - started;
          if (outcome === undefined || outcome === LATE) {
            finisher.finish(entry, { durationMs, late: outcome === LATE });
          } else finisher.finish(entry, outcome);
          blocked = deps.fifo && outcome !== undefined;
        }
      }),
    );
    for (const group of groups) if (group.status === 'rejected') throw group.reason;
  } finally {
    // Every lock of the batch ends here at the latest: the finisher completes the successes and releases
    // the rest as they finish; what never finished (an unexpected throw) is released now.
    await finisher.endAll(running);
  }
  // Every early settlement has finished before the batch reports the first that failed.
  for (const r of await Promise.allSettled(settling)) if (r.status === 'rejected') throw r.reason;
  return messages
    .filter((message) => !settledEarly.has(message))
    .map((message) => ({
      message,
      outcome: outcomes.get(message) ?? {
        kind: 'poison',
        reason: 'no outcome (internal error)',
        error: undefined,
      },
    }));
}

/** A locked message whose handler succeeded, before its completion marker is written. */
interface Success {
  readonly durationMs: number;
  /** Its lock's validity ran out while the handler ran: completed only if no one claimed the key since. */
  readonly late: boolean;
}

/**
 * Ends the locks of finished messages: successes are completed (marker + release), everything else is
 * released. Messages that finish within `completionWindowMs` of each other share one round trip per node
 * (a batch of quick handlers costs one call), and a slow handler holds no one else back for longer.
 */
class Finisher<T> {
  readonly #deps: PipelineDeps<T>;
  readonly #outcomes: Map<Message, Outcome>;
  readonly #onEnded: (finished: readonly InFlightMessage[]) => void;
  #pending: { entry: InFlightMessage; result: Outcome | Success }[] = [];
  readonly #flushes = new Set<Promise<void>>();
  readonly #ended = new Set<InFlightMessage>();
  /** How many locked messages the batch has: when all have finished, the last flush goes at once. */
  readonly #expected: number;
  /** Ends the current wait early (set while the first pending message waits for others). */
  #wake: (() => void) | undefined;

  constructor(
    deps: PipelineDeps<T>,
    outcomes: Map<Message, Outcome>,
    expected: number,
    onEnded: (finished: readonly InFlightMessage[]) => void,
  ) {
    this.#deps = deps;
    this.#expected = expected;
    this.#outcomes = outcomes;
    this.#onEnded = onEnded;
  }

  finish(entry: InFlightMessage, result: Outcome | Success): void {
    this.#ended.add(entry);
    this.#pending.push({ entry, result });
    if (this.#pending.length === 1) {
      // The first to finish waits up to the window (or a turn of the event loop) for others of its batch
      // to finish too: they share one completion call per node, and one DeleteMessageBatch.
      const windowMs = this.#deps.completionWindowMs ?? 0;
      const waited = new Promise<void>((resolve) => {
        const wake = (): void => {
          clearTimeout(timer);
          clearImmediate(immediate);
          if (this.#wake === wake) this.#wake = undefined;
          resolve();
        };
        const timer = windowMs > 0 ? setTimeout(wake, windowMs) : undefined;
        const immediate = windowMs > 0 ? undefined : setImmediate(wake);
        this.#wake = wake;
      });
      this.#track(waited.then(() => this.#flush()));
    }
    // The batch's last one: no one left to wait for.
    if (this.#ended.size === this.#expected) this.#wake?.();
  }

  #track(flush: Promise<void>): void {
    this.#flushes.add(flush);
    // Handled here, and rethrown to runBatch by endAll: a failed flush never becomes an unhandled rejection.
    const done = (): void => {
      this.#flushes.delete(flush);
    };
    flush.then(done, done);
  }

  /** Waits for every flush, then releases the locks of messages that never finished. */
  async endAll(running: readonly InFlightMessage[]): Promise<void> {
    const errors: unknown[] = [];
    while (this.#flushes.size > 0) {
      for (const r of await Promise.allSettled(this.#flushes))
        if (r.status === 'rejected') errors.push(r.reason);
    }
    const unfinished = running.filter((entry) => !this.#ended.has(entry));
    if (unfinished.length > 0) {
      this.#deps.inFlight?.remove(unfinished);
      await this.#deps.redlock.releaseMany(unfinished.map((entry) => entry.lock));
    }
    if (errors.length > 0) throw errors[0];
  }

  async #flush(): Promise<void> {
    const batch = this.#pending;
    this.#pending = [];
    const deps = this.#deps;
    deps.inFlight?.remove(batch.map((b) => b.entry));
    const succeeded: { entry: InFlightMessage; success: Success }[] = [];
    const others: { entry: InFlightMessage; outcome: Outcome }[] = [];
    for (const { entry, result } of batch) {
      if ('kind' in result) others.push({ entry, outcome: result });
      else succeeded.push({ entry, success: result });
    }
    const [marked] = await Promise.all([
      deps.redlock.completeMany(
        succeeded.map((s) => s.entry.lock),
        {
          claimExpired: true,
          ...(deps.completionTtlMs === undefined ? {} : { ttlMs: deps.completionTtlMs }),
        },
      ),
      deps.redlock.releaseMany(others.map((o) => o.entry.lock)),
    ]);
    for (const { entry, outcome } of others) this.#outcomes.set(entry.message, outcome);
    succeeded.forEach(({ entry, success }, i) => {
      this.#outcomes.set(entry.message, this.#completed(entry, success, marked[i] === true));
    });
    this.#onEnded(batch.map((b) => b.entry));
  }

  /** The outcome of a success once the completion answered: processed, or lock_lost for a late one that was claimed. */
  #completed(entry: InFlightMessage, s: Success, ok: boolean): Outcome {
    const { message, lock } = entry;
    const { key: lockKey, fencingToken } = lock;
    const log = { messageId: message.MessageId, lockKey, fencingToken };
    const logger = this.#deps.logger;
    if (s.late && !ok) {
      // Someone may have been granted the key after our validity ended: our success cannot count.
      const error = lock.signal.reason ?? new Error('lock validity ran out before the work was complete');
      logger.error(
        'lock lost while the handler ran: not deleted, not marked; the fencing token guards downstream writes',
        { ...log, err: serializeError(error), handlerSucceeded: true },
      );
      return { kind: 'lock_lost', lockKey, fencingToken, error };
    }
    if (s.late)
      logger.warn('lock validity ran out while the handler ran, but no one claimed the key: completed', log);
    if (!ok) {
      logger.warn(
        'completion marker not written (no quorum); the message is deleted, but a later duplicate delivery would run again',
        log,
      );
    }
    return { kind: 'processed', lockKey, fencingToken, durationMs: s.durationMs, marked: ok };
  }
}

type PoisonOutcome = Extract<Outcome, { kind: 'poison' }>;

/** What hydrating needs of the pipeline's deps (testHandler gives the same, without a Redis node). */
export type HydrateDeps<T> = Pick<PipelineDeps<T>, 'handler' | 'logger' | 'handoffSecret'> & {
  readonly redlock: Pick<Redlock, 'nodes'>;
};

/** Hydrates a message and picks its two keys, or says why it is poison. Shared with the testing kit. */
export async function hydrate<T>(
  deps: HydrateDeps<T>,
  message: Message,
): Promise<
  { input: T; lockKey: string; idempotencyKey: string; handoff?: LockHandoff } | { poison: PoisonOutcome }
> {
  const poison = (reason: string, error?: unknown): { poison: PoisonOutcome } => ({
    poison: { kind: 'poison', reason, error },
  });
  if (!message.MessageId || !message.ReceiptHandle)
    return poison('message has no MessageId or ReceiptHandle');
  let input: T | null;
  try {
    input = await deps.handler.hydrate(message);
  } catch (error) {
    // A body the schema refused: its own message lists the issues.
    if (error instanceof InvalidBodyError) return poison(error.message, error);
    return poison(`hydrate threw: ${error instanceof Error ? error.message : String(error)}`, error);
  }
  if (input === null || input === undefined) return poison('hydrate returned null');
  // A message dispatched by a Publisher runs under the lock it carries: its key, not `lockKey`'s.
  // One whose handoff does not verify could be forged: it must not choose its key, so it runs as an
  // ordinary message (not poison: its work may be genuine, e.g. a consumer missing the secret).
  const handoff = readLockHandoff(message, deps.handoffSecret);
  if (handoff && 'unverified' in handoff) {
    deps.logger.warn('lock handoff ignored: processed as an ordinary message, under its own lockKey', {
      messageId: message.MessageId,
      reason: handoff.unverified,
    });
  } else if (handoff) return { input, lockKey: handoff.key, idempotencyKey: handoff.key, handoff };
  // Two scopes, each the MessageId unless the handler says otherwise.
  const lockKey = keyFrom(deps.handler, 'lockKey', input, message);
  if (typeof lockKey !== 'string') return poison(lockKey.invalid, lockKey.error);
  const idempotencyKey = keyFrom(deps.handler, 'idempotencyKey', input, message);
  if (typeof idempotencyKey !== 'string') return poison(idempotencyKey.invalid, idempotencyKey.error);
  if (lockKey !== idempotencyKey && deps.redlock.nodes.some((node) => node.client.isCluster)) {
    // It would fail on that node every time (CROSSSLOT) and reach the DLQ anyway, without a reason.
    return poison(
      `lockKey and idempotencyKey differ (${JSON.stringify(lockKey)}, ${JSON.stringify(idempotencyKey)}): a Redis Cluster node cannot check both in one script; return the same key, or use standalone nodes`,
    );
  }
  return { input, lockKey, idempotencyKey };
}

/** The handler's `lockKey` or `idempotencyKey` for a message (its MessageId without the hook). */
function keyFrom<T>(
  handler: BaseHandler<T>,
  hook: 'lockKey' | 'idempotencyKey',
  input: T,
  message: Message,
): string | { invalid: string; error?: unknown } {
  const fn = handler[hook];
  if (!fn) return message.MessageId as string;
  let key: unknown;
  try {
    key = fn.call(handler, input, message);
  } catch (error) {
    return { invalid: `${hook} threw: ${error instanceof Error ? error.message : String(error)}`, error };
  }
  if (typeof key !== 'string' || key.length === 0) {
    return { invalid: `${hook} returned ${JSON.stringify(key) ?? String(key)}, not a non-empty string` };
  }
  return key;
}

/** The handler succeeded after its lock's validity ran out: completed only if no one claimed the key since. */
const LATE = 'late';

/** Runs the handler; undefined on success (LATE: success on an expired lock), otherwise the outcome. */
async function runHandler<T>(
  deps: PipelineDeps<T>,
  item: Hydrated<T>,
  entry: InFlightMessage,
): Promise<Outcome | typeof LATE | undefined> {
  const { lock } = entry;
  const messageId = item.message.MessageId as string;
  // The child logger and the combined signal are made on first use: a batch of quick handlers that
  // never log or look at the signal should not pay for them.
  let child: Logger | undefined;
  let signal: AbortSignal | undefined;
  const context: HandlerContext = {
    message: item.message,
    messageId,
    lockKey: item.lockKey,
    idempotencyKey: item.idempotencyKey,
    receiveCount: receiveCountOf(item.message),
    fencingToken: lock.fencingToken,
    get signal(): AbortSignal {
      signal ??= AbortSignal.any([lock.signal, deps.shutdown]);
      return signal;
    },
    get logger(): Logger {
      child ??= deps.logger.child({ messageId, lockKey: item.lockKey, fencingToken: lock.fencingToken });
      return child;
    },
  };
  if (!lock.isHeld) {
    // Validity ran out before the handler could start (a long event-loop stall or process pause
    // between locking and running): its loss may not be signalled yet, so check the clock itself.
    const error = lock.signal.reason ?? new Error('lock validity ran out before the handler started');
    context.logger.warn('lock lost before the handler started: not run', { fencingToken: lock.fencingToken });
    return { kind: 'lock_lost', lockKey: item.lockKey, fencingToken: lock.fencingToken, error };
  }
  // In its message's process span: the handler's own spans nest under it.
  const work = Promise.resolve().then(() =>
    inProcessContext(item.message, () => deps.handler.handle(item.input, context)),
  );
  // Shutdown aborts the signal but never stops the wait: the lock is kept (and extended) until the
  // handler settles, or another worker could run the message while this one still does.
  const result = await settled(work);
  const common = { lockKey: item.lockKey, fencingToken: lock.fencingToken };
  if (!lock.isHeld && result.status === 'ok' && lock.expiredUnclaimed) {
    // The work succeeded but validity ran out meanwhile (an event-loop stall, Redis unreachable): it
    // counts if no one was granted the key since; completion checks that on a quorum.
    return LATE;
  }
  if (!lock.isHeld) {
    const error = lock.signal.reason;
    context.logger.error(
      'lock lost while the handler ran: not deleted, not marked; the fencing token guards downstream writes',
      {
        err: serializeError(error),
        handlerSucceeded: result.status === 'ok',
      },
    );
    return { kind: 'lock_lost', ...common, error };
  }
  if (result.status === 'error' && deps.shutdown.aborted && isAbortOf(result.error, deps.shutdown.reason)) {
    // It gave up for the shutdown: released and visible again at once. Any other error after the
    // deadline is a failure like any other (backoff, handler_error), so a failing handler cannot skip it.
    context.logger.warn('handler aborted by shutdown: lock released, the message made visible again');
    return { kind: 'aborted', ...common };
  }
  if (result.status === 'error') {
    context.logger.error('handler failed', {
      err: serializeError(result.error),
      receiveCount: context.receiveCount,
      ...(deps.logBodies ? { body: item.message.Body } : {}),
    });
    return { kind: 'failed', ...common, error: result.error };
  }
  if (deps.shutdown.aborted) context.logger.warn('handler succeeded after the shutdown deadline: completed');
  return undefined;
}

/** Whether a handler's error is it giving up because `reason` aborted its signal (thrown as is, wrapped, or an AbortError). */
function isAbortOf(error: unknown, reason: unknown): boolean {
  if (error === reason) return true;
  if (!(error instanceof Error)) return false;
  return error.name === 'AbortError' || error.cause === reason;
}

type Settled = { status: 'ok' } | { status: 'error'; error: unknown };

/** How `work` ended; never rejects. */
function settled(work: Promise<void>): Promise<Settled> {
  return work.then(
    (): Settled => ({ status: 'ok' }),
    (error: unknown): Settled => ({ status: 'error', error }),
  );
}

/** FIFO: one group per MessageGroupId, in batch order. Otherwise every message is its own group. */
function groupsOf(fifo: boolean, messages: readonly Message[]): Message[][] {
  if (!fifo) return messages.map((message) => [message]);
  const groups = new Map<string, Message[]>();
  for (const message of messages) {
    const id = message.Attributes?.MessageGroupId ?? '';
    groups.set(id, [...(groups.get(id) ?? []), message]);
  }
  return [...groups.values()];
}

export function receiveCountOf(message: Message): number {
  const count = Number(message.Attributes?.ApproximateReceiveCount);
  return Number.isInteger(count) && count > 0 ? count : 1;
}
