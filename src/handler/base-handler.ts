import type { Message } from '@aws-sdk/client-sqs';
import type { Logger } from 'winston';

/** What `handle` gets besides its input. */
export interface HandlerContext {
  /** The raw SQS message. */
  readonly message: Message;
  readonly messageId: string;
  /**
   * The lock key the message runs under: its MessageId unless `lockKey` says otherwise, or, for a
   * message dispatched by a Publisher, the task key whose lock it carries.
   */
  readonly lockKey: string;
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
   * The key to lock the message by. Default: its MessageId. Key by a business id (an order id) to
   * serialise work on the same entity across different messages. Not called for a message that
   * carries a lock handed over by a Publisher: it runs under that lock's key.
   */
  lockKey?(input: T, message: Message): string;
}
