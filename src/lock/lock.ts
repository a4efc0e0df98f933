import { LockLostError, type LockLostReason } from '../errors.ts';

/** What a Lock asks of the engine that granted it. */
export interface LockEngine {
  extendLocks(locks: readonly Lock[]): Promise<void>;
  releaseLocks(locks: readonly Lock[]): Promise<void>;
  completeLocks(locks: readonly Lock[], options?: { ttlMs?: number }): Promise<boolean[]>;
  now(): number;
  onLost(lock: Lock, error: LockLostError): void;
}

export type LockState = 'held' | 'lost' | 'released' | 'completed';

/**
 * A lock granted by a quorum. Its `signal` aborts with a {@link LockLostError} the moment the lock is
 * lost, so the holder can stop; `fencingToken` lets downstream writes reject a stale holder.
 */
export class Lock {
  /** The mutual-exclusion scope: one holder at a time. */
  readonly key: string;
  /** The deduplication scope: `complete()` writes this key's marker, and acquiring a lock for it then answers 'done'. */
  readonly idempotencyKey: string;
  /** Strictly greater than the token of every earlier holder of this key (see the README for the limits). */
  readonly fencingToken: number;
  readonly ttlMs: number;
  /** @internal the random owner value written on each node */
  readonly value: string;
  /** @internal extended by the engine's extender */
  readonly autoExtend: boolean;
  readonly #engine: LockEngine;
  /** Made on first look at `signal`: a lock that is completed without anyone reading it never pays for one. */
  #controller: AbortController | undefined;
  /** Why it was lost (what `signal` aborts with), once it is. */
  #lostError: LockLostError | undefined;
  #state: LockState = 'held';
  /** Monotonic time at which validity ends. */
  #deadline: number;
  #validUntil: number;
  #nextExtendAt: number;

  /** @internal created by Redlock */
  constructor(
    engine: LockEngine,
    grant: {
      key: string;
      idempotencyKey: string;
      value: string;
      fencingToken: number;
      ttlMs: number;
      autoExtend: boolean;
    },
    validity: { startedAt: number; deadline: number },
  ) {
    this.#engine = engine;
    this.key = grant.key;
    this.idempotencyKey = grant.idempotencyKey;
    this.value = grant.value;
    this.fencingToken = grant.fencingToken;
    this.ttlMs = grant.ttlMs;
    this.autoExtend = grant.autoExtend;
    this.#deadline = validity.deadline;
    this.#validUntil = Date.now() + (validity.deadline - engine.now());
    this.#nextExtendAt = validity.startedAt + this.ttlMs / 3;
  }

  /** Aborts (reason: a LockLostError) when the lock is lost. Not aborted by a normal release. */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#lostError !== undefined) this.#controller.abort(this.#lostError);
    }
    return this.#controller.signal;
  }

  /** Wall-clock estimate (epoch ms) of when the lock stops being valid unless extended. */
  get validUntil(): number {
    return this.#validUntil;
  }

  get state(): LockState {
    return this.#state;
  }

  /** True while the lock is ours: not lost, released or completed, and its validity not run out. */
  get isHeld(): boolean {
    return this.#state === 'held' && this.#engine.now() < this.#deadline;
  }

  /**
   * Extends the lock now. Throws LockLostError if it is lost. When too few nodes answered it resolves,
   * the lock still held until its deadline (with autoExtend, the extender tries again on its next tick).
   */
  async extend(): Promise<void> {
    await this.#engine.extendLocks([this]);
    this.#throwIfLost();
  }

  /**
   * Writes the completion marker of `idempotencyKey` (so later acquisitions for it answer 'done') and
   * releases the lock, atomically per node. Resolves true if a quorum did so while we held the lock;
   * never throws.
   */
  async complete(options?: { ttlMs?: number }): Promise<boolean> {
    const [ok] = await this.#engine.completeLocks([this], options);
    return ok === true;
  }

  /** Releases the lock on every node (owner-checked). Bounded by the command timeout; never throws. */
  async release(): Promise<void> {
    await this.#engine.releaseLocks([this]);
  }

  // ---- engine side ----

  /**
   * @internal its validity ran out (or it was declared lost for that reason), as opposed to a majority
   * answering "not owner": it may still be unclaimed by anyone else
   */
  get expiredUnclaimed(): boolean {
    if (this.#state === 'held') return this.#engine.now() >= this.#deadline;
    return this.#state === 'lost' && this.#lostError?.reason === 'expired';
  }

  /** @internal */
  get deadline(): number {
    return this.#deadline;
  }

  /** @internal */
  get nextExtendAt(): number {
    return this.#nextExtendAt;
  }

  /** @internal a quorum extended it in an attempt that started at `startedAt`, valid until `deadline` */
  renewed(startedAt: number, deadline: number): void {
    if (this.#state !== 'held') return;
    this.#deadline = deadline;
    this.#validUntil = Date.now() + (deadline - this.#engine.now());
    this.#nextExtendAt = startedAt + this.ttlMs / 3;
  }

  /** @internal an extension did not reach a quorum: try again soon, while validity lasts */
  retryExtensionAt(at: number): void {
    this.#nextExtendAt = at;
  }

  /** @internal */
  markLost(reason: LockLostReason, detail: string, cause?: unknown): void {
    if (this.#state !== 'held') return;
    this.#state = 'lost';
    const error = new LockLostError(this.key, this.fencingToken, reason, detail, { cause });
    this.#lostError = error;
    this.#controller?.abort(error);
    this.#engine.onLost(this, error);
  }

  /** @internal */
  markEnded(state: 'released' | 'completed'): void {
    if (this.#state === 'held') this.#state = state;
  }

  /** @internal the completion marker did not reach a quorum: the lock was only released */
  completionFailed(): void {
    if (this.#state === 'completed') this.#state = 'released';
  }

  /** @internal a late lock that was taken back on a quorum and completed: an extension answering now must not report it lost */
  markCompleted(): void {
    if (this.#state === 'held' || this.#state === 'lost') this.#state = 'completed';
  }

  #throwIfLost(): void {
    if (this.#state === 'lost') throw this.#lostError;
  }
}
