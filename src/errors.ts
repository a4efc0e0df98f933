/**
 * One error root for the package. Every error has a literal `name`, passes `cause` through and carries
 * the context an operator needs (the lock key, the nodes that failed).
 */
export class SqsRedlockWorkerError extends Error {
  override readonly name: string = 'SqsRedlockWorkerError';
}

/** The lock is held by another owner (on enough nodes that no quorum could be formed). */
export class LockContendedError extends SqsRedlockWorkerError {
  override readonly name = 'LockContendedError';
  readonly key: string;
  /** About how long the current holder's lock has left, in ms: a sensible backoff. */
  readonly retryAfterMs: number;

  constructor(key: string, retryAfterMs: number, options?: ErrorOptions) {
    super(`lock "${key}" is held by another owner (retry in about ${retryAfterMs} ms)`, options);
    this.key = key;
    this.retryAfterMs = retryAfterMs;
  }
}

/** Fewer than a quorum of Redis nodes answered in time, so nothing can be granted or proven. */
export class QuorumUnavailableError extends SqsRedlockWorkerError {
  override readonly name = 'QuorumUnavailableError';
  readonly key: string | undefined;
  /** Labels (`host:port`) of the nodes that failed or did not answer within the command timeout. */
  readonly failedNodes: readonly string[];
  readonly quorum: number;

  constructor(
    key: string | undefined,
    failedNodes: readonly string[],
    quorum: number,
    options?: ErrorOptions,
  ) {
    const what = key === undefined ? 'Redis quorum' : `quorum for lock "${key}"`;
    const failed = failedNodes.length > 0 ? failedNodes.join(', ') : 'none (answers came too late)';
    super(`${what} unavailable: ${quorum} nodes needed; failed: ${failed}`, options);
    this.key = key;
    this.failedNodes = failedNodes;
    this.quorum = quorum;
  }
}

/** Why a held lock was lost. */
export type LockLostReason =
  /** Validity ran out before an extension reached a quorum (nodes down or slow, or an event-loop stall). */
  | 'expired'
  /** A majority of nodes answered that the lock is no longer ours (expired there, or taken). */
  | 'not_owner';

/** A held lock was lost: the holder must stop, its work may overlap with the next holder's. */
export class LockLostError extends SqsRedlockWorkerError {
  override readonly name = 'LockLostError';
  readonly key: string;
  readonly fencingToken: number;
  readonly reason: LockLostReason;

  constructor(
    key: string,
    fencingToken: number,
    reason: LockLostReason,
    detail: string,
    options?: ErrorOptions,
  ) {
    super(`lock "${key}" (fencing token ${fencingToken}) lost: ${detail}`, options);
    this.key = key;
    this.fencingToken = fencingToken;
    this.reason = reason;
  }
}

/** An option or argument is invalid. The message names the option and the value received. */
export class ConfigError extends SqsRedlockWorkerError {
  override readonly name = 'ConfigError';
  readonly option: string;
  readonly value: unknown;

  constructor(option: string, value: unknown, rule: string, options?: ErrorOptions) {
    super(`${option} ${rule}. Received: ${describeValue(value)}`, options);
    this.option = option;
    this.value = value;
  }
}

function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (value !== null && typeof value === 'object')
    return `an object (${value.constructor?.name ?? 'Object'})`;
  return String(value);
}

/** The key carries a completion marker: its work was already done by an earlier holder. */
export class LockCompletedError extends SqsRedlockWorkerError {
  override readonly name = 'LockCompletedError';
  readonly key: string;

  constructor(key: string, options?: ErrorOptions) {
    super(`lock "${key}" is completed: its work was already done`, options);
    this.key = key;
  }
}

/**
 * A message's visibility could not be extended: another consumer may receive it.
 * @deprecated No longer raised: a failed visibility extension never aborts a handler (the lock, not
 * the visibility, decides exclusivity). Kept exported for compatibility.
 */
export class VisibilityLostError extends SqsRedlockWorkerError {
  override readonly name = 'VisibilityLostError';
  readonly messageId: string | undefined;

  constructor(messageId: string | undefined, detail: string, options?: ErrorOptions) {
    super(`visibility of message ${messageId} lost: ${detail}`, options);
    this.messageId = messageId;
  }
}

/** The worker was stopped and its shutdown deadline passed while the handler ran. */
export class ShutdownError extends SqsRedlockWorkerError {
  override readonly name = 'ShutdownError';
}

/** One entry of an SQS batch call refused by SQS (the call itself succeeded), with its code. */
export class SqsEntryError extends SqsRedlockWorkerError {
  override readonly name = 'SqsEntryError';
  readonly operation: string;
  readonly messageId: string | undefined;
  /** SQS's code for the entry, e.g. ReceiptHandleIsInvalid, InternalError. */
  readonly code: string;
  /** True when SQS blames the request (a retry would fail the same way). */
  readonly senderFault: boolean;

  constructor(
    operation: string,
    entry: { messageId: string | undefined; code: string; senderFault: boolean; detail?: string | undefined },
  ) {
    super(
      `SQS ${operation} refused message ${entry.messageId}: ${entry.code}${entry.detail ? ` (${entry.detail})` : ''}`,
    );
    this.operation = operation;
    this.messageId = entry.messageId;
    this.code = entry.code;
    this.senderFault = entry.senderFault;
  }
}

/**
 * A message body the handler's schema refused: not JSON, or not matching the schema. The message is
 * poison; `issues` lists what the schema said (path and message only: vendors' issues may carry the
 * input, and bodies stay out of logs).
 */
export class InvalidBodyError extends SqsRedlockWorkerError {
  override readonly name = 'InvalidBodyError';
  readonly messageId: string | undefined;
  readonly issues: readonly { readonly message: string; readonly path?: readonly PropertyKey[] }[];
  /** What is wrong without the issues' messages (which may quote the body): what logs carry. */
  readonly summary: string;

  constructor(
    messageId: string | undefined,
    detail: string,
    issues: readonly { readonly message: string; readonly path?: readonly PropertyKey[] }[] = [],
    summary: string = detail,
  ) {
    super(detail);
    this.messageId = messageId;
    this.issues = issues;
    this.summary = summary;
  }
}
