import type { Message } from '@aws-sdk/client-sqs';
import type { Logger } from 'winston';

/** What `handle` gets besides its input. */
export interface HandlerContext {
  /** The raw SQS message. */
  readonly message: Message;
  readonly messageId: string;
  /**
   * The lock key the message runs under (the mutual-exclusion scope): its MessageId unless `lockKey`
   * says otherwise, or, for a message dispatched by a Publisher, the task key whose lock it carries.
   */
  readonly lockKey: string;
  /**
   * The idempotency key whose completion marker this run writes on success (the deduplication scope):
   * its MessageId unless `idempotencyKey` says otherwise; for a Publisher's task, the task key.
   */
  readonly idempotencyKey: string;
  /** `ApproximateReceiveCount`: 1 on the first delivery. */
  readonly receiveCount: number;
  /**
   * Aborts when the lock or the message's visibility is lost, or at shutdown past its deadline. Its
   * `reason` says which (a LockLostError for a lost lock). Stop work and throw when it fires.
   */
  readonly signal: AbortSignal;
  /** Strictly greater than any earlier holder's token for this key: pass it to downstream writes. */
  readonly fencingToken: number;
  /** A winston child carrying messageId, lockKey and fencingToken. */
  readonly logger: Logger;
}

/**
 * Subclass this with two hooks. The flow around them is fixed: hydrate, lock the batch, handle,
 * complete (marker + release) or release, then delete or back off.
 */
export abstract class BaseHandler<T> {
  /**
   * Turns the raw message into the handler's input. Return null, or throw, for a poison message: the
   * handler never runs on it, and it goes to the dead-letter queue with the reason.
   */
  abstract hydrate(message: Message): T | null | Promise<T | null>;

  /** Does the work. Throwing leaves the message in SQS for a retry with backoff. */
  abstract handle(input: T, context: HandlerContext): Promise<void>;

  /**
   * The mutual-exclusion scope: messages with the same lock key never run at the same time. Default:
   * the MessageId. Key by a business id (an order id) to serialise different messages about the same
   * entity (charge, then ship): each still runs, one at a time. Not called for a message that carries
   * a lock handed over by a Publisher: it runs under that lock's key.
   */
  lockKey?(input: T, message: Message): string;

  /**
   * The deduplication scope: once a message with this key succeeded, a later message with the same key
   * is acked as a duplicate without running (within `completionTtlMs`). Default: the MessageId, so only
   * redeliveries of the same message are duplicates. Return a producer's request id (or an order id)
   * to run a producer's duplicate sends once; give those messages the same lock key too, or two of them
   * can run at the same time before either is marked done. Not called for a Publisher's task (its key is both).
   */
  idempotencyKey?(input: T, message: Message): string;
}
