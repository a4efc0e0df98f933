import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Logger } from 'winston';
import {
  ConfigError,
  LockCompletedError,
  LockContendedError,
  type LockLostError,
  QuorumUnavailableError,
} from '../errors.ts';
import { defaultLogger } from '../observability/logger.ts';
import { serializeError } from '../observability/serialize.ts';
import { integer, MAX_REDIS_TTL_MS, MAX_TIMER_MS } from '../validate.ts';
import { type AcquireVerdict, acquireBatch, toRefusal } from './acquire.ts';
import {
  type AdoptOptions,
  type AdoptResult,
  adoptBatch,
  adoptRefusalError,
  checkHandoffs,
  type LockHandoff,
  newOwnerValues,
  toAdoptRefusal,
} from './adopt.ts';
import { completeBatch } from './complete.ts';
import { keysOf, type QuorumContext } from './context.ts';
import { type ExtendVerdict, extendBatch } from './extend.ts';
import { LockExtender } from './extender.ts';
import { Lock, type LockEngine } from './lock.ts';
import { type RedisClient, RedisNode, withTimeout } from './node.ts';
import {
  checkTtl,
  type RedlockOptions,
  type ResolvedRedlockOptions,
  resolveRedlockOptions,
} from './options.ts';
import { probeWrites } from './probe.ts';
import { quorumOf, validityMs, withJitter } from './quorum.ts';
import { reclaimBatch } from './reclaim.ts';
import { releaseBatch } from './release.ts';

/**
 * What to lock: a key (its own idempotency key), or a lock key with the idempotency key whose completion
 * marker decides whether the work is already done. They are two scopes: the lock key serialises work
 * (one holder at a time), the idempotency key deduplicates it (completed once, then 'done').
 */
export type LockTarget = string | { readonly key: string; readonly idempotencyKey?: string | undefined };

/** Per-call options of acquire, acquireMany and using. */
export interface AcquireOptions {
  /** Overrides the Redlock's `ttlMs` for these locks. */
  ttlMs?: number;
  /** Overrides the Redlock's `retryCount` (0: one attempt). */
  retryCount?: number;
  /** Overrides the Redlock's `autoExtend`. */
  autoExtend?: boolean;
}

/** Why a key of `acquireMany` was not granted. */
export interface LockRefusal {
  readonly key: string;
  /** 'held': another owner has it; 'done': its idempotency key's marker exists; 'quorum': too few nodes answered. */
  readonly reason: 'held' | 'done' | 'quorum';
  /** For 'held': about how long the holder's lock has left, in ms. */
  readonly retryAfterMs: number;
  /** For 'quorum': the nodes that failed or did not answer in time. */
  readonly failedNodes: readonly string[];
  readonly detail: string;
}

export type AcquireResult = Lock | LockRefusal;

export function isLock(result: AcquireResult): result is Lock {
  return result instanceof Lock;
}

export interface LockLostEvent {
  readonly key: string;
  readonly fencingToken: number;
  readonly error: LockLostError;
}

/** Typed events of {@link Redlock}. */
export interface RedlockEvents {
  /** A held lock was lost (its signal has aborted). */
  lock_lost: [LockLostEvent];
}

export interface QuorumStatus {
  /** A quorum of nodes accepted the probe's write. */
  readonly available: boolean;
  readonly up: readonly string[];
  readonly down: readonly string[];
  /** Per node that is down, why (its error, a timeout, not connected). */
  readonly errors?: Readonly<Record<string, string>>;
}

/** Which nodes' clients are connected (ready), as {@link Redlock.whenConnected} answers. */
export interface ConnectionStatus {
  /** A quorum of clients is connected. */
  readonly available: boolean;
  readonly up: readonly string[];
  readonly down: readonly string[];
}

/**
 * The quorum lock engine: a lock is granted by a majority of N independent Redis nodes, carries a
 * fencing token that is monotonic across the quorum, is auto-extended, and can be completed so that
 * later attempts on its key answer 'done'. Every operation on k keys costs one round trip per node.
 */
export class Redlock extends EventEmitter<RedlockEvents> {
  readonly nodes: readonly RedisNode[];
  readonly quorum: number;
  readonly options: ResolvedRedlockOptions;
  readonly #ctx: QuorumContext;
  readonly #extender: LockExtender;
  readonly #engine: LockEngine;
  readonly #logger: Logger;
  #quitting = false;
  /** This instance's write-probe key: concurrent probes of several workers never share a key. */
  readonly #probeKey: string;

  constructor(clients: readonly RedisClient[], options: RedlockOptions = {}) {
    super();
    if (!Array.isArray(clients) || clients.length === 0) {
      throw new ConfigError(
        'clients',
        clients,
        'must be a non-empty array of ioredis clients (one per independent node)',
      );
    }
    clients.forEach((client, i) => {
      if (!client || typeof (client as { evalsha?: unknown }).evalsha !== 'function') {
        throw new ConfigError(`clients[${i}]`, client, 'must be an ioredis Redis or Cluster client');
      }
    });
    if (new Set(clients).size !== clients.length) {
      throw new ConfigError(
        'clients',
        clients,
        'must not list the same client twice (each must be an independent node)',
      );
    }
    this.options = resolveRedlockOptions(options);
    this.#logger = this.options.logger ?? defaultLogger();
    this.nodes = clients.map((client, i) => new RedisNode(client, i, this.options));
    this.quorum = quorumOf(this.nodes.length);
    const now = (): number => performance.now();
    this.#ctx = { nodes: this.nodes, quorum: this.quorum, options: this.options, now };
    // Shaped like a lock key, so an ACL that allows the lock's keys allows the probe's too.
    this.#probeKey = keysOf(this.options.keyPrefix, `probe:${randomUUID()}`).lock;
    this.#engine = {
      extendLocks: (locks) => this.#extendLocks(locks),
      releaseLocks: (locks) => this.releaseMany(locks),
      completeLocks: (locks, o) => this.completeMany(locks, o),
      now,
      onLost: (lock, error) => {
        this.#extender.untrack(lock);
        this.#logger.warn('lock lost', {
          lockKey: lock.key,
          fencingToken: lock.fencingToken,
          reason: error.reason,
        });
        // A listener observes: one that throws must not stop the extender's tick (every other lock
        // would go unextended), an extension's settling, or quit().
        try {
          this.emit('lock_lost', { key: lock.key, fencingToken: lock.fencingToken, error });
        } catch (listenerError) {
          this.#logger.error('a lock_lost listener threw; ignored', { err: serializeError(listenerError) });
        }
      },
    };
    this.#extender = new LockExtender((locks) => this.#extendLocks(locks), now);
    if (this.nodes.length === 1) {
      this.#logger.warn(
        'Redlock with a single Redis node is not fault tolerant: use 3 or 5 independent nodes',
      );
    }
  }

  /** Acquires one lock. Throws LockContendedError, LockCompletedError or QuorumUnavailableError. */
  async acquire(target: LockTarget, options: AcquireOptions = {}): Promise<Lock> {
    const [result] = await this.acquireMany([target], options);
    if (result === undefined || isLock(result)) return result as Lock;
    throw refusalError(result, this.quorum);
  }

  /**
   * Acquires a batch of locks with one round trip per node per attempt. Answers, per key and in order,
   * a Lock or a refusal ('held', 'done', 'quorum'). Only refused keys are retried.
   */
  async acquireMany(targets: readonly LockTarget[], options: AcquireOptions = {}): Promise<AcquireResult[]> {
    const requests = checkTargets(targets);
    const ttlMs = checkTtl('ttlMs', options.ttlMs ?? this.options.ttlMs, this.options.commandTimeoutMs);
    const retryCount = integer('retryCount', options.retryCount ?? this.options.retryCount, { min: 0 });
    const autoExtend = options.autoExtend ?? this.options.autoExtend;
    const results: AcquireResult[] = new Array(requests.length);
    let pending = requests.map((r, index) => ({ index, ...r }));
    const giveUpAt = this.#ctx.now() + this.options.acquireTimeoutMs;

    for (let attempt = 0; pending.length > 0; attempt++) {
      // A fresh owner value per attempt (122 random bits, a v4 UUID from Node's pooled entropy, made
      // unique per lock by its index). A rollback of an earlier attempt can then never delete this
      // attempt's lock, even when it runs after it: a NOSCRIPT fallback re-sends the release as EVAL a
      // round trip later, behind commands written meanwhile.
      const base = randomUUID();
      const attemptRequests = pending.map((r) => ({ ...r, value: `${base}.${r.index}` }));
      const verdicts = await acquireBatch(this.#ctx, attemptRequests, ttlMs);
      const retry: typeof pending = [];
      verdicts.forEach((verdict, i) => {
        const request = attemptRequests[i] as (typeof attemptRequests)[number];
        if (verdict.kind === 'granted') {
          results[request.index] = this.#grant(verdict, ttlMs, autoExtend);
        } else {
          results[request.index] = toRefusal(verdict);
          if (verdict.kind !== 'done') retry.push(request);
        }
      });
      pending = retry;
      if (pending.length === 0 || attempt >= retryCount || this.#quitting) break;
      const delay = withJitter(this.options.retryDelayMs, this.options.retryJitterMs);
      if (this.#ctx.now() + delay > giveUpAt) break;
      await sleep(delay);
    }
    return results;
  }

  /**
   * Adopts a lock handed over by another process (see src/lock/adopt.ts): if a quorum still holds it
   * under the handed-over owner value, it becomes ours (a fresh owner value, our TTL, the handed-over
   * fencing token), tracked and auto-extended like an acquired lock. Throws LockContendedError,
   * LockCompletedError, LockLostError ('expired': the handoff is gone, the key is free) or
   * QuorumUnavailableError.
   */
  async adopt(handoff: LockHandoff, options: AdoptOptions = {}): Promise<Lock> {
    const [result] = await this.adoptMany([handoff], options);
    if (result === undefined || result instanceof Lock) return result as Lock;
    throw adoptRefusalError(result, handoff, this.quorum);
  }

  /**
   * Adopts a batch of handed-over locks in one round trip per node (one attempt, no retries). Answers,
   * per handoff and in order, a Lock or a refusal ('held', 'done', 'expired', 'quorum').
   */
  async adoptMany(handoffs: readonly LockHandoff[], options: AdoptOptions = {}): Promise<AdoptResult[]> {
    checkHandoffs(handoffs);
    const ttlMs = checkTtl('ttlMs', options.ttlMs ?? this.options.ttlMs, this.options.commandTimeoutMs);
    const autoExtend = options.autoExtend ?? this.options.autoExtend;
    if (handoffs.length === 0) return [];
    const values = newOwnerValues(handoffs.length);
    const requests = handoffs.map((h, i) => ({
      key: h.key,
      value: h.value,
      fencingToken: h.fencingToken,
      newValue: values[i] as string,
    }));
    const verdicts = await adoptBatch(this.#ctx, requests, ttlMs);
    return verdicts.map((v) =>
      v.kind === 'granted' ? this.#grant(v, ttlMs, autoExtend) : toAdoptRefusal(v),
    );
  }

  /** Acquires `key`, runs `fn` with the lock (auto-extended), and releases in `finally`. Rejects with the
   * LockLostError if the lock was lost before `fn` settled, even when `fn` resolved. */
  async using<T>(target: LockTarget, fn: (lock: Lock) => Promise<T>, options?: AcquireOptions): Promise<T> {
    const lock = await this.acquire(target, options);
    try {
      const result = await fn(lock);
      if (lock.signal.aborted) throw lock.signal.reason;
      return result;
    } finally {
      await lock.release();
    }
  }

  /** Extends the given locks now, one round trip per node. A lock that is lost gets its signal aborted. */
  async extendMany(locks: readonly Lock[]): Promise<void> {
    await this.#extendLocks(locks);
  }

  /** Releases the given locks, one round trip per node. Owner-checked, time-bounded, never throws. */
  async releaseMany(locks: readonly Lock[]): Promise<void> {
    for (const lock of locks) {
      lock.markEnded('released');
      this.#extender.untrack(lock);
    }
    // Every Redis failure becomes a node's "no" inside releaseBatch: nothing to catch here.
    if (locks.length > 0) await releaseBatch(this.#ctx, locks, longestTtl(locks));
  }

  /**
   * Writes the completion marker of each lock's idempotency key and releases the lock, one round trip
   * per node. Answers, per lock, whether a quorum did so while the lock was held; a lock that is no
   * longer held is not marked. A lock whose marker did not reach a quorum is released best-effort.
   * Never throws.
   *
   * With `claimExpired`, a lock whose validity merely ran out (no majority said "not owner") is first
   * taken back where no one was granted its key since (RECLAIM_SCRIPT, one more round trip for those
   * only): only if that gives it a valid quorum lock again is it completed. So no marker is written by
   * a holder whose lock was not valid on a quorum.
   */
  async completeMany(
    locks: readonly Lock[],
    options: { ttlMs?: number; claimExpired?: boolean } = {},
  ): Promise<boolean[]> {
    const markerTtl = integer('ttlMs', options.ttlMs ?? this.options.completionTtlMs, {
      min: 1,
      max: MAX_REDIS_TTL_MS,
    });
    const held = locks.filter((lock) => lock.isHeld);
    const late = options.claimExpired ? locks.filter((lock) => !lock.isHeld && lock.expiredUnclaimed) : [];
    for (const lock of locks) this.#extender.untrack(lock);
    // Ended before the round trip: an extension answering meanwhile ("not owner": the lock key is gone)
    // must not be taken for a lost lock. Per-connection ordering already prevents that on plain nodes; a
    // Cluster node answers different slots over different connections.
    for (const lock of held) lock.markEnded('completed');
    const toRef = (lock: Lock) => ({
      key: lock.key,
      idempotencyKey: lock.idempotencyKey,
      value: lock.value,
      fencingToken: lock.fencingToken,
      ttlMs: lock.ttlMs,
    });
    const completeLate = async (): Promise<Lock[]> => {
      if (late.length === 0) return [];
      const deadlines = await reclaimBatch(this.#ctx, late.map(toRef));
      // Completed at once, while the reclaimed validity lasts; a reclaim that answered too late is not.
      const now = this.#ctx.now();
      const reclaimed = late.filter((_, i) => (deadlines[i] ?? 0) > now);
      const done = await completeBatch(this.#ctx, reclaimed.map(toRef), markerTtl);
      return reclaimed.filter((_, i) => done[i] === true);
    };
    const [heldDone, lateOk] = await Promise.all([
      completeBatch(this.#ctx, held.map(toRef), markerTtl),
      completeLate(),
    ]);
    const ok = new Set<Lock>([...held.filter((_, i) => heldDone[i] === true), ...lateOk]);
    for (const lock of lateOk) lock.markCompleted();
    // No marker on a quorum is not a lost lock: the work may well have run under it. The caller decides.
    // Only the locks this call ended change state (a second complete() leaves a completed lock alone).
    for (const lock of held) if (!ok.has(lock)) lock.completionFailed();
    // Locks that were not marked are released best-effort so they do not linger.
    const rest = locks.filter((lock) => !ok.has(lock));
    if (rest.length > 0) await releaseBatch(this.#ctx, rest, longestTtl(rest));
    return locks.map((lock) => ok.has(lock));
  }

  /**
   * Whether a quorum accepts writes now: a short-TTL key is written on every node through the lock's
   * own script path (src/lock/probe.ts), one round trip each, within the command timeout. A node that
   * answers PING but refuses writes (a read-only replica, MISCONF, OOM, NOREPLICAS, an ACL without
   * EVALSHA) counts as down, with its error in `errors`.
   */
  async quorumStatus(): Promise<QuorumStatus> {
    const answers = await probeWrites(this.#ctx, this.#probeKey);
    const up = answers.filter((a) => a.up).map((a) => a.node);
    const down = answers.filter((a) => !a.up).map((a) => a.node);
    const errors = Object.fromEntries(answers.flatMap((a) => (a.up ? [] : [[a.node, a.error ?? 'down']])));
    return { available: up.length >= this.quorum, up, down, errors };
  }

  /**
   * Waits, at most `maxMs`, until a quorum of nodes is connected, and answers which are (`available`:
   * a quorum is). For clients that are reconnecting (after Redis closed idle connections, as when a
   * Lambda container thaws), which every operation refuses at once: call it before work that should
   * not fail for a reconnect. At once when a quorum is connected already, or can no longer be (clients
   * that ended). Sends nothing; throws only a ConfigError for a bad `maxMs`.
   */
  async whenConnected(maxMs: number): Promise<ConnectionStatus> {
    integer('maxMs', maxMs, { min: 0, max: MAX_TIMER_MS });
    const status = (): ConnectionStatus => {
      const up = this.nodes.filter((node) => node.isReady).map((node) => node.label);
      const down = this.nodes.filter((node) => !node.isReady).map((node) => node.label);
      return { available: up.length >= this.quorum, up, down };
    };
    const waiting = this.nodes.filter((node) => !node.isReady);
    if (this.nodes.length - waiting.length >= this.quorum || maxMs === 0) return status();
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(), maxMs);
    timer.unref();
    let ready = this.nodes.length - waiting.length;
    let undecided = waiting.length;
    await new Promise<void>((resolve) => {
      stop.signal.addEventListener('abort', () => resolve(), { once: true });
      for (const node of waiting) {
        void node.whenReady(stop.signal).then((isReady) => {
          if (isReady) ready++;
          undecided--;
          if (ready >= this.quorum || ready + undecided < this.quorum) stop.abort();
        });
      }
    });
    clearTimeout(timer);
    stop.abort();
    return status();
  }

  /** Locks currently held and auto-extended by this instance. */
  get heldLocks(): readonly Lock[] {
    return this.#extender.held();
  }

  /**
   * Stops extending and closes the clients. Locks still held are NOT released: their holders may still
   * be running (a handler abandoned at a shutdown deadline), and a release would let another worker run
   * the same work at once. Their signals abort (LockLostError 'expired': no longer extended) and they
   * expire on the nodes after their TTL. End your locks first (the Worker's stop() does) to free them now.
   */
  async quit(): Promise<void> {
    if (this.#quitting) return;
    this.#quitting = true;
    const held = this.#extender.held();
    this.#extender.stop();
    for (const lock of held) {
      lock.markLost('expired', QUIT_DETAIL);
    }
    await Promise.all(
      this.nodes.map(async (node) => {
        try {
          await withTimeout(
            node.client.quit(),
            this.options.commandTimeoutMs,
            () => new Error('quit timeout'),
          );
        } catch {
          node.client.disconnect();
        }
      }),
    );
  }

  #grant(verdict: Extract<AcquireVerdict, { kind: 'granted' }>, ttlMs: number, autoExtend: boolean): Lock {
    const lock = new Lock(
      this.#engine,
      {
        key: verdict.key,
        idempotencyKey: verdict.idempotencyKey,
        value: verdict.value,
        fencingToken: verdict.fencingToken,
        ttlMs,
        autoExtend,
      },
      verdict,
    );
    // Tracked even without auto-extension, so that loss at the end of validity is still signalled.
    this.#extender.track(lock);
    // Granted while quit() ran: nothing will extend it or signal its end, so say so now, as quit() does.
    if (this.#quitting) lock.markLost('expired', QUIT_DETAIL);
    return lock;
  }

  /** Shared by the extender's tick and explicit extend(): never rejects. */
  async #extendLocks(locks: readonly Lock[]): Promise<void> {
    const live = locks.filter((lock) => lock.state === 'held');
    if (live.length === 0) return;
    const startedAt = this.#ctx.now();
    const verdicts = await extendBatch(this.#ctx, live);
    const endedAt = this.#ctx.now();
    live.forEach((lock, i) => {
      const verdict = verdicts[i];
      if (verdict && lock.state === 'held')
        this.#settleExtension(lock, verdict, endedAt - startedAt, endedAt);
    });
  }

  #settleExtension(lock: Lock, verdict: ExtendVerdict, elapsed: number, endedAt: number): void {
    if (verdict.kind === 'extended') {
      const validity = validityMs(lock.ttlMs, elapsed, this.options.driftFactor);
      if (validity > 0 && endedAt < lock.deadline) lock.renewed(endedAt - elapsed, endedAt + validity);
      else lock.markLost('expired', 'the extension answered after the lock had expired');
    } else if (verdict.kind === 'not_owner') {
      lock.markLost('not_owner', verdict.detail);
    } else if (endedAt >= lock.deadline) {
      lock.markLost('expired', verdict.detail);
    } else {
      lock.retryExtensionAt(endedAt + Math.max(10, lock.ttlMs / 10));
    }
  }
}

/** Checks what acquireMany was given (keys come from handlers: anything may be in them). */
function checkTargets(targets: readonly LockTarget[]): { key: string; idempotencyKey: string }[] {
  if (!Array.isArray(targets)) throw new ConfigError('keys', targets, 'must be an array of keys');
  return targets.map((target, i) => {
    const { key, idempotencyKey = key } =
      typeof target === 'string' ? { key: target } : ((target ?? {}) as Exclude<LockTarget, string>);
    if (typeof key !== 'string' || key.length === 0) {
      throw new ConfigError(
        typeof target === 'string' ? `keys[${i}]` : `keys[${i}].key`,
        key,
        'must be a non-empty string',
      );
    }
    if (typeof idempotencyKey !== 'string' || idempotencyKey.length === 0) {
      throw new ConfigError(`keys[${i}].idempotencyKey`, idempotencyKey, 'must be a non-empty string');
    }
    return { key, idempotencyKey };
  });
}

/** The longest TTL among `locks`: how long a release to a reconnecting node is still worth sending. */
function longestTtl(locks: readonly Lock[]): number {
  return locks.reduce((longest, lock) => Math.max(longest, lock.ttlMs), 0);
}

const QUIT_DETAIL = 'redlock.quit(): no longer extended; it expires on the nodes after its TTL';

function refusalError(refusal: LockRefusal, quorum: number): Error {
  switch (refusal.reason) {
    case 'held':
      return new LockContendedError(refusal.key, refusal.retryAfterMs);
    case 'done':
      return new LockCompletedError(refusal.key);
    case 'quorum':
      return new QuorumUnavailableError(refusal.key, refusal.failedNodes, quorum, {
        cause: new Error(refusal.detail),
      });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
