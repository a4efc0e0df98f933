import { Writable } from 'node:stream';
import type { Message } from '@aws-sdk/client-sqs';
import winston from 'winston';
import { LockLostError, type LockLostReason } from '../errors.ts';
import { assertHydrates, type BaseHandler, type HandlerContext } from '../handler/base-handler.ts';
import { hydrate, receiveCountOf } from '../handler/pipeline.ts';
import { checkHandoffSecret, integer } from '../validate.ts';

/** One entry written to the handler's logger: its level, message and metadata (messageId, lockKey, …). */
export interface LogEntry {
  readonly level: string;
  readonly message: string;
  readonly [meta: string]: unknown;
}

export interface TestHandlerOptions {
  /** The context's fencing token. @defaultValue 1 */
  readonly fencingToken?: number;
  /**
   * Called with the context before `handle` runs, and with `loseLock`, which aborts the context's signal
   * with a LockLostError, as the Redlock does when the lock is lost (reason default: `not_owner`). Lost
   * here, the handler does not run; lost while it runs, the outcome is `lock_lost` whatever it returns,
   * except a success after an `expired` loss: `processed`, as the Worker completes it when no one took
   * the key since.
   * A timed loss: `onContext: (_, loseLock) => setTimeout(loseLock, 50)`.
   */
  readonly onContext?: (
    context: HandlerContext,
    loseLock: (reason?: LockLostReason) => void,
  ) => void | Promise<void>;
  /** The Worker's `handoffSecret`: a Publisher's message whose handoff verifies runs under its task key. */
  readonly handoffSecret?: string;
}

/** The keys and input of a message that got past hydration. */
interface Hydrated<T> {
  readonly input: T;
  readonly lockKey: string;
  readonly idempotencyKey: string;
  readonly fencingToken: number;
  /** What the handler (and hydration) logged through the context's logger. */
  readonly logs: readonly LogEntry[];
}

/** The outcome the pipeline would assign, with what the test may check. */
export type TestHandlerResult<T> =
  /** The handler succeeded with the lock held: the Worker would complete and delete it. */
  | ({ readonly kind: 'processed' } & Hydrated<T>)
  /** The handler threw: released without marker, backed off, retried. */
  | ({ readonly kind: 'failed'; readonly error: unknown } & Hydrated<T>)
  /** The lock was lost (`loseLock`): not deleted, not marked, whatever the handler did. */
  | ({
      readonly kind: 'lock_lost';
      /** The signal's reason: the LockLostError. */
      readonly error: unknown;
      readonly handlerSucceeded: boolean;
    } & Hydrated<T>)
  /** Hydration refused it: dead-lettered with `reason` as `poison-reason`; the handler never ran. */
  | {
      readonly kind: 'poison';
      readonly reason: string;
      readonly error: unknown;
      readonly logs: readonly LogEntry[];
    };

/**
 * Runs `handler` on `message` as the pipeline would, without SQS or Redis: hydrate (or the schema) and
 * the poison rules, `lockKey` and `idempotencyKey`, then `handle` with a real HandlerContext (an
 * AbortController's signal, the fencing token, a logger whose entries the result lists). Rejects only
 * for a handler that cannot hydrate (the ConfigError a Worker would throw) or a throwing `onContext`.
 */
export async function testHandler<T>(
  handler: BaseHandler<T>,
  message: Message,
  options: TestHandlerOptions = {},
): Promise<TestHandlerResult<T>> {
  const { fencingToken = 1, onContext, handoffSecret } = options;
  integer('testHandler fencingToken', fencingToken, { min: 1, max: Number.MAX_SAFE_INTEGER });
  if (handoffSecret !== undefined) checkHandoffSecret('testHandler handoffSecret', handoffSecret);
  assertHydrates(handler);
  const { logger, logs } = capturingLogger();
  // The pipeline's own hydration and poison rules; no Redis node, so not a Cluster one.
  const hydrated = await hydrate({ handler, logger, handoffSecret, redlock: { nodes: [] } }, message);
  if ('poison' in hydrated) {
    const { reason, error } = hydrated.poison;
    return { kind: 'poison', reason, error, logs };
  }
  const { input, lockKey, idempotencyKey } = hydrated;
  const messageId = message.MessageId as string;
  const lock = new AbortController();
  const context: HandlerContext = {
    message,
    messageId,
    lockKey,
    idempotencyKey,
    receiveCount: receiveCountOf(message),
    fencingToken,
    signal: lock.signal,
    logger: logger.child({ messageId, lockKey, fencingToken }),
  };
  const loseLock = (reason: LockLostReason = 'not_owner'): void => {
    lock.abort(new LockLostError(lockKey, fencingToken, reason, 'lost in testHandler'));
  };
  const ran = { input, lockKey, idempotencyKey, fencingToken, logs };
  await onContext?.(context, loseLock);
  if (lock.signal.aborted) {
    return { kind: 'lock_lost', error: lock.signal.reason, handlerSucceeded: false, ...ran };
  }
  const result = await Promise.resolve()
    .then(() => handler.handle(input, context))
    .then(
      () => ({ ok: true as const }),
      (error: unknown) => ({ ok: false as const, error }),
    );
  // A success after an `expired` loss is completed by the Worker when no one took the key since
  // (its completion checks that on a quorum): here no one can have.
  const late = result.ok && (lock.signal.reason as LockLostError | undefined)?.reason === 'expired';
  if (lock.signal.aborted && !late) {
    return { kind: 'lock_lost', error: lock.signal.reason, handlerSucceeded: result.ok, ...ran };
  }
  return result.ok ? { kind: 'processed', ...ran } : { kind: 'failed', error: result.error, ...ran };
}

/** A winston logger at every level whose entries are kept, as plain objects, in `logs`. */
function capturingLogger(): { logger: winston.Logger; logs: LogEntry[] } {
  const logs: LogEntry[] = [];
  const stream = new Writable({
    objectMode: true,
    write(info: LogEntry, _encoding, done) {
      // Object.entries leaves winston's symbol keys out: entries compare with toEqual as written.
      logs.push(Object.fromEntries(Object.entries(info)) as LogEntry);
      done();
    },
  });
  const logger = winston.createLogger({
    level: 'silly',
    transports: [new winston.transports.Stream({ stream })],
  });
  return { logger, logs };
}
