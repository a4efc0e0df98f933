/** Typed events of the Worker (and, with the same payloads, of the Lambda adapter). */

export interface MessageEvent {
  readonly messageId: string;
  /** The mutual-exclusion scope the message ran (or would run) under. */
  readonly lockKey: string;
}

export interface WorkerEvents {
  /** A received batch was locked: one acquire (and adopt) round trip per Redis node, `durationMs` long. */
  batch_locked: [{ readonly messages: number; readonly locked: number; readonly durationMs: number }];
  /** The handler succeeded under the lock and the message is deleted; `marked`: the completion marker reached a quorum. */
  message_processed: [
    MessageEvent & { readonly fencingToken: number; readonly durationMs: number; readonly marked: boolean },
  ];
  /** A duplicate of finished work (its idempotency key's completion marker exists): acked without running the handler. */
  duplicate_skipped: [MessageEvent & { readonly idempotencyKey: string }];
  /** Another worker holds the message's lock: put back with a backoff, never deleted. */
  lock_contended: [MessageEvent & { readonly retryInSec: number }];
  /** No Redis quorum for the message: put back with a backoff; polling pauses. */
  quorum_unavailable: [
    MessageEvent & { readonly failedNodes: readonly string[]; readonly retryInSec: number },
  ];
  /** hydrate refused the message. */
  poison_message: [{ readonly messageId: string; readonly reason: string; readonly deadLettered: boolean }];
  /** The handler threw: released without marker, retried after a backoff. */
  handler_error: [
    MessageEvent & {
      readonly fencingToken: number;
      readonly error: unknown;
      readonly receiveCount: number;
      readonly retryInSec: number;
    },
  ];
  /** The lock was lost before the work was marked complete: not deleted; SQS redelivers. */
  lock_lost: [MessageEvent & { readonly fencingToken: number; readonly error: unknown }];
  /** Made visible again without running: FIFO order after a failure in its group, or shutdown. */
  message_released: [MessageEvent & { readonly reason: 'fifo_order' | 'shutdown' }];
  /** Polling paused (no Redis quorum) and resumed by itself. */
  polling_paused: [{ readonly reason: 'quorum_unavailable' }];
  polling_resumed: [];
  /** An SQS call failed (receive, delete, visibility, dead-letter send). */
  sqs_error: [{ readonly operation: string; readonly error: unknown }];
  started: [];
  stopped: [];
}
