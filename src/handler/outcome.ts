import type { Message } from '@aws-sdk/client-sqs';

/** What happened to one message of a batch. The runtime settles it (delete, back off, dead-letter). */
export type Outcome =
  /**
   * The handler succeeded while the lock was held: delete. `marked`: the completion marker reached a
   * quorum (false when Redis failed right after the work; a later duplicate delivery would then run).
   */
  | {
      readonly kind: 'processed';
      readonly lockKey: string;
      readonly fencingToken: number;
      readonly durationMs: number;
      readonly marked: boolean;
    }
  /** The idempotency key's completion marker exists: a duplicate of finished work. Delete, do not run. */
  | { readonly kind: 'duplicate'; readonly lockKey: string; readonly idempotencyKey: string }
  /** Another worker holds the lock: never delete; back off about its remaining lock time. */
  | { readonly kind: 'contended'; readonly lockKey: string; readonly retryAfterMs: number }
  /** No Redis quorum: never delete; back off and pause polling. */
  | { readonly kind: 'quorum'; readonly lockKey: string; readonly failedNodes: readonly string[] }
  /** hydrate returned null or threw: dead-letter it (or leave it to the queue's redrive). */
  | { readonly kind: 'poison'; readonly reason: string; readonly error: unknown }
  /** The handler threw: release without marker, back off exponentially. */
  | {
      readonly kind: 'failed';
      readonly lockKey: string;
      readonly fencingToken: number;
      readonly error: unknown;
    }
  /** The lock was lost before the work was marked complete: do not delete, do not mark. */
  | {
      readonly kind: 'lock_lost';
      readonly lockKey: string;
      readonly fencingToken: number;
      readonly error: unknown;
    }
  /** Not run: an earlier message of its FIFO group did not succeed, or shutdown came first. Visible again at once. */
  | { readonly kind: 'skipped'; readonly lockKey: string; readonly reason: 'fifo_order' | 'shutdown' }
  /** Shutdown's deadline passed while the handler ran: aborted, released, visible again at once. */
  | { readonly kind: 'aborted'; readonly lockKey: string; readonly fencingToken: number };

export type OutcomeKind = Outcome['kind'];

export interface MessageOutcome {
  readonly message: Message;
  readonly outcome: Outcome;
}

/** Outcomes after which the message is deleted from the queue. */
export function isAcked(outcome: Outcome): boolean {
  return outcome.kind === 'processed' || outcome.kind === 'duplicate';
}
