import { randomUUID } from 'node:crypto';
import {
  ConfigError,
  LockCompletedError,
  LockContendedError,
  LockLostError,
  QuorumUnavailableError,
} from '../errors.ts';
import { type AcquireVerdict, acquireBatch, toRefusal } from './acquire.ts';
import type { LockRef, QuorumContext } from './context.ts';
import { keysOf, markerKeyOf, sendUntil } from './context.ts';
import { Lock } from './lock.ts';
import { checkTtl } from './options.ts';
import { validityMs, withJitter } from './quorum.ts';
import type { AcquireOptions, AcquireResult, LockRefusal, Redlock } from './redlock.ts';
import { releaseBatch, rollback } from './release.ts';
import { defineScript } from './script.ts';

/*
 * Lock handoff: a lock acquired by one process (a publisher) and carried, with the message that asks
 * for the work, to another (a consumer), which adopts it.
 *
 * Adoption is not a plain owner-checked extend. Every delivery of a message carries the same handed-over
 * owner value, and SQS delivers at least once: if that value stayed the lock's owner value, a redelivery
 * that arrives while the first delivery still works (its visibility ran out) would "own" the lock too,
 * and the work would run twice at once. So adoption swaps, atomically per node, the handed-over value
 * for the adopter's own fresh value: the handed-over value proves ownership once, and a second delivery
 * then finds the lock held by another owner, exactly as if it were a plain acquire. The fencing token
 * stays the one handed over: between the handoff and the adoption the lock was held on a quorum by the
 * handed-over value, which no one else can write, so no later holder can have been granted a token.
 */

export const ADOPT_SCRIPT = defineScript(
  'adopt',
  { keysPerLock: 2, argsPerLock: 2 },
  `
--[[ Adopt a batch of handed-over locks on one node: a lock key that still holds the handed-over owner
  value takes the adopter's own value (so the handed-over value proves ownership only once) and its TTL.
  A handed-over task's key is also its idempotency key: once its marker exists, nothing is adopted.
  KEYS, per lock i: the lock key, the completion marker of the task key
  ARGV[1]: TTL in ms   ARGV[2i]: the handed-over owner value   ARGV[2i+1]: our new owner value
  Returns, per lock: 1 adopted | 0 the marker exists | -1 free (the handoff expired) |
  -(remaining ms + 2) held by another owner ]]
local ttl = ARGV[1]
local out = {}
for i = 1, #KEYS / 2 do
  local lock, marker = KEYS[2 * i - 1], KEYS[2 * i]
  local current = redis.call('GET', lock)
  local handed, ours = ARGV[2 * i], ARGV[2 * i + 1]
  if redis.call('EXISTS', marker) == 1 then
    out[i] = 0
  elseif current == handed or current == ours then
    -- (ours: our own attempt, answered too late to count: take it over.)
    redis.call('SET', lock, ours, 'PX', ttl)
    out[i] = 1
  elseif not current then
    out[i] = -1
  else
    out[i] = -(math.max(redis.call('PTTL', lock), 0) + 2)
  end
end
return out
`,
);

/**
 * A lock handed over from one process to another: the three values a consumer needs to adopt it. The
 * owner `value` is the secret that proves ownership; whoever reads it can adopt (and so steal) the lock.
 */
export interface LockHandoff {
  readonly key: string;
  /** The owner value the lock was acquired with (the lock's `value`). */
  readonly value: string;
  readonly fencingToken: number;
}

/** Per-call options of adopt and adoptMany. */
export interface AdoptOptions {
  /** TTL of the adopted lock (it replaces the handoff's, usually longer, pending TTL). Default: the Redlock's `ttlMs`. */
  ttlMs?: number;
  /** Overrides the Redlock's `autoExtend`. */
  autoExtend?: boolean;
}

/**
 * Why a handoff was not adopted. Besides the reasons of {@link LockRefusal}: 'expired', the handed-over
 * lock is no longer held on a quorum and no one else holds it either (its pending TTL ran out, or it was
 * released): the key is free for a plain acquire.
 */
export interface AdoptRefusal extends Omit<LockRefusal, 'reason'> {
  readonly reason: LockRefusal['reason'] | 'expired';
}

export type AdoptResult = Lock | AdoptRefusal;

/** What one adoption attempt decided: the verdicts of an acquire, plus 'expired' (nobody holds the key). */
export type AdoptVerdict =
  | AcquireVerdict
  | { readonly kind: 'expired'; readonly key: string; readonly detail: string };

/** One handoff to adopt, with the adopter's fresh owner value. */
export interface AdoptRequest extends LockHandoff {
  readonly newValue: string;
}

/** Checks handoffs as received (they come from message attributes: anything may be in them). */
export function checkHandoffs(handoffs: readonly LockHandoff[]): void {
  if (!Array.isArray(handoffs)) throw new ConfigError('handoffs', handoffs, 'must be an array');
  handoffs.forEach((h, i) => {
    if (h === null || typeof h !== 'object') throw new ConfigError(`handoffs[${i}]`, h, 'must be an object');
    if (typeof h.key !== 'string' || h.key.length === 0) {
      throw new ConfigError(`handoffs[${i}].key`, h.key, 'must be a non-empty string');
    }
    // A value starting with '!' would equal a completion marker, and "adopting" it would erase the marker.
    if (typeof h.value !== 'string' || h.value.length === 0 || h.value.startsWith('!')) {
      throw new ConfigError(
        `handoffs[${i}].value`,
        h.value,
        "must be a non-empty string not starting with '!'",
      );
    }
    if (!Number.isSafeInteger(h.fencingToken) || h.fencingToken <= 0) {
      throw new ConfigError(`handoffs[${i}].fencingToken`, h.fencingToken, 'must be a positive safe integer');
    }
  });
}

/** Fresh owner values for `count` adopted locks (122 random bits per call, unique per lock by index). */
export function newOwnerValues(count: number): string[] {
  const base = randomUUID();
  return Array.from({ length: count }, (_, i) => `${base}.${i}`);
}

interface Tally {
  adopted: number;
  held: number;
  heldPttl: number;
  free: number;
  done: number;
  failed: number[];
}

/**
 * One attempt at adopting a batch of handoffs: one round trip per node. Where a handoff is refused, the
 * nodes that swapped it (or may still, not having answered) are rolled back: our new value is deleted
 * there. The handed-over value is never touched by a rollback.
 */
export async function adoptBatch(
  ctx: QuorumContext,
  requests: readonly AdoptRequest[],
  ttlMs: number,
): Promise<AdoptVerdict[]> {
  if (requests.length === 0) return [];
  const startedAt = ctx.now();
  const prefix = ctx.options.keyPrefix;
  const items = requests.map((r) => ({
    keys: [keysOf(prefix, r.key).lock, markerKeyOf(prefix, r.key)],
    args: [r.value, r.newValue],
  }));
  // Decided once every key is adopted by a quorum or seen completed: the slowest node is not waited for.
  const replies = await sendUntil(
    ctx,
    ADOPT_SCRIPT,
    [ttlMs],
    ctx.nodes.map(() => items),
    (sofar) =>
      items.every((_, i) => {
        let adopted = 0;
        for (const reply of sofar) {
          const answer = reply?.ok ? reply.replies[i] : undefined;
          if (answer === 0) return true;
          if (answer === 1) adopted++;
        }
        return adopted >= ctx.quorum;
      }),
  );
  const decidedAt = ctx.now();
  const validity = validityMs(ttlMs, decidedAt - startedAt, ctx.options.driftFactor);
  const undo: LockRef[][] = ctx.nodes.map(() => []);

  const verdicts = requests.map((request, i): AdoptVerdict => {
    const t: Tally = { adopted: 0, held: 0, heldPttl: 0, free: 0, done: 0, failed: [] };
    const swapped: number[] = [];
    replies.forEach((reply, j) => {
      // Not waited for (the key was decided without it), or failed: it may still run our swap later.
      if (reply === undefined) {
        swapped.push(j);
        return;
      }
      const answer = reply.ok ? reply.replies[i] : undefined;
      if (typeof answer !== 'number') {
        t.failed.push(j);
        swapped.push(j);
      } else if (answer === 1) {
        t.adopted++;
        swapped.push(j);
      } else if (answer === 0) t.done++;
      else if (answer === -1) t.free++;
      else {
        t.held++;
        t.heldPttl = Math.max(t.heldPttl, -answer - 2);
      }
    });
    const verdict = decide(ctx, request, t, { startedAt, decidedAt, validity });
    if (verdict.kind !== 'granted')
      for (const j of swapped) undo[j]?.push({ key: request.key, value: request.newValue });
    return verdict;
  });
  rollback(ctx, undo, ttlMs);
  return verdicts;
}

function decide(
  ctx: QuorumContext,
  request: AdoptRequest,
  t: Tally,
  at: { startedAt: number; decidedAt: number; validity: number },
): AdoptVerdict {
  const { key } = request;
  const spare = ctx.nodes.length - ctx.quorum;
  // One node's marker is enough: a marker is only written by a valid quorum holder after its work succeeded.
  if (t.done > 0) return { kind: 'done', key };
  if (t.adopted >= ctx.quorum) {
    if (at.validity <= 0) {
      const detail = 'adopted too late: no validity left of the TTL';
      return { kind: 'quorum', key, failedNodes: [], detail };
    }
    return {
      kind: 'granted',
      key,
      idempotencyKey: key,
      value: request.newValue,
      fencingToken: request.fencingToken,
      startedAt: at.startedAt,
      deadline: at.decidedAt + at.validity,
    };
  }
  const detail = `${t.adopted} nodes held the handoff, ${t.free} were free, ${t.held} held by another owner, ${t.failed.length} failed`;
  // Another owner on more nodes than a quorum can spare: no one else can lock it now.
  if (t.held > spare) return { kind: 'held', key, retryAfterMs: t.heldPttl };
  // The handed-over value is gone from more nodes than a quorum can spare, so it can never be adopted
  // again (no one but its owner can write it back): the handoff expired. A plain acquire may take the key.
  if (t.free + t.held > spare) return { kind: 'expired', key, detail };
  // Too few answers to tell: the handoff may still be adoptable once the nodes answer.
  const failedNodes = t.failed.map((j) => ctx.nodes[j]?.label ?? `#${j}`);
  return { kind: 'quorum', key, failedNodes, detail };
}

export function toAdoptRefusal(verdict: Exclude<AdoptVerdict, { kind: 'granted' }>): AdoptRefusal {
  if (verdict.kind === 'expired') {
    return { key: verdict.key, reason: 'expired', retryAfterMs: 0, failedNodes: [], detail: verdict.detail };
  }
  return toRefusal(verdict);
}

/** The error `Redlock.adopt` throws for a refusal ('expired': a LockLostError with reason 'expired'). */
export function adoptRefusalError(refusal: AdoptRefusal, handoff: LockHandoff, quorum: number): Error {
  switch (refusal.reason) {
    case 'held':
      return new LockContendedError(refusal.key, refusal.retryAfterMs);
    case 'done':
      return new LockCompletedError(refusal.key);
    case 'expired':
      return new LockLostError(
        refusal.key,
        handoff.fencingToken,
        'expired',
        `the handed-over lock expired before it was adopted (${refusal.detail})`,
      );
    case 'quorum':
      return new QuorumUnavailableError(refusal.key, refusal.failedNodes, quorum, {
        cause: new Error(refusal.detail),
      });
  }
}

// ---- the consumer side, for a batch that mixes handed-over and plain messages ----

/** A key to lock: handed over (adopt it) or not (acquire it). */
export interface LockRequest {
  readonly key: string;
  /** Whose completion marker counts (default: `key`). A handed-over task's is always its key. */
  readonly idempotencyKey?: string | undefined;
  readonly handoff?: LockHandoff | undefined;
}

/**
 * Locks a batch in which some keys were handed over: one `adoptMany` for those and one `acquireMany`
 * for the rest, at the same time (one round trip per node each). Answers, per request and in order, a
 * Lock or a refusal, as `acquireMany` does. A handed-over request is locked by its handoff's key.
 *
 * A handoff that expired (its pending TTL ran out before a consumer got to it, or a failed attempt
 * released it) falls back to a plain acquire of the same key, one more round trip per node for those
 * only. That is safe: while the handoff was not held, a scheduler may have dispatched the task again,
 * and that newer handoff (or whoever holds the key) makes the acquire answer 'held'; once any run of the
 * task completed, its marker makes it answer 'done'. The cost is a new fencing token rather than the
 * handed-over one. A handoff held by another owner (another delivery of the message adopted it, or the
 * key was taken after it expired) is refused as 'held', never taken.
 */
export async function acquireOrAdopt(
  redlock: Redlock,
  requests: readonly LockRequest[],
  options: Pick<AcquireOptions, 'autoExtend' | 'retryCount'> = {},
): Promise<AcquireResult[]> {
  const handed: { index: number; handoff: LockHandoff }[] = [];
  const plain: { index: number; key: string; idempotencyKey: string | undefined }[] = [];
  requests.forEach((r, index) => {
    if (r.handoff) handed.push({ index, handoff: r.handoff });
    else plain.push({ index, key: r.key, idempotencyKey: r.idempotencyKey });
  });
  const adoptOptions = options.autoExtend === undefined ? {} : { autoExtend: options.autoExtend };
  const [adopted, acquired] = await Promise.all([
    handed.length > 0
      ? redlock.adoptMany(
          handed.map((h) => h.handoff),
          adoptOptions,
        )
      : [],
    plain.length > 0
      ? redlock.acquireMany(
          plain.map(({ key, idempotencyKey }) => ({ key, idempotencyKey })),
          options,
        )
      : [],
  ]);
  const results: AcquireResult[] = new Array(requests.length);
  plain.forEach((p, i) => {
    results[p.index] = acquired[i] as AcquireResult;
  });
  const expired: { index: number; key: string }[] = [];
  handed.forEach((h, i) => {
    const result = adopted[i] as AdoptResult;
    if (result instanceof Lock || result.reason !== 'expired') results[h.index] = result as AcquireResult;
    else expired.push({ index: h.index, key: h.handoff.key });
  });
  if (expired.length > 0) {
    const fallback = await redlock.acquireMany(
      expired.map((e) => e.key),
      options,
    );
    expired.forEach((e, i) => {
      results[e.index] = fallback[i] as AcquireResult;
    });
  }
  // A handoff held by another owner: most likely a newer handoff of the same task (dispatched after
  // this one expired) still waiting in the queue, or another delivery of this message at work. The
  // holder's remaining time may be a whole pending window, which says nothing of when that run will
  // be done (and this message acked as its duplicate): look again after one lock TTL at the latest.
  for (const { index } of handed) {
    const result = results[index] as AcquireResult;
    if (
      !(result instanceof Lock) &&
      result.reason === 'held' &&
      result.retryAfterMs > redlock.options.ttlMs
    ) {
      results[index] = { ...result, retryAfterMs: redlock.options.ttlMs };
    }
  }
  return results;
}

// ---- the publisher side: a lock that is handed over, not held by this process ----

/**
 * A granted lock meant for a handoff. It is not a {@link Lock}: it is not tracked, extended or released
 * by this process's Redlock (a `quit()` must not release the locks of messages still in the queue, nor
 * should they be reported lost when their pending TTL ends). It lives until its TTL, or until the
 * consumer that adopted it completes or releases it.
 */
export interface HandoffGrant extends LockHandoff {
  readonly ttlMs: number;
  /** Wall-clock estimate (epoch ms) of when the handoff expires if no consumer adopts it. */
  readonly validUntil: number;
}

function contextOf(redlock: Redlock): QuorumContext {
  return {
    nodes: redlock.nodes,
    quorum: redlock.quorum,
    options: redlock.options,
    now: () => performance.now(),
  };
}

/**
 * Acquires `key` for a handoff, with a fresh owner value and `ttlMs` (the pending window). Answers the
 * grant, or a refusal: 'held' and 'done' at once, 'quorum' after the Redlock's retries.
 */
export async function acquireForHandoff(
  redlock: Redlock,
  key: string,
  ttlMs: number,
): Promise<HandoffGrant | LockRefusal> {
  if (typeof key !== 'string' || key.length === 0)
    throw new ConfigError('taskKey', key, 'must be a non-empty string');
  const o = redlock.options;
  checkTtl('ttlMs', ttlMs, o.commandTimeoutMs);
  if (o.fencingTtlMs !== 0 && ttlMs >= o.fencingTtlMs) {
    throw new ConfigError('ttlMs', ttlMs, `must be below the Redlock's fencingTtlMs (${o.fencingTtlMs})`);
  }
  const ctx = contextOf(redlock);
  const giveUpAt = ctx.now() + o.acquireTimeoutMs;
  for (let attempt = 0; ; attempt++) {
    // A fresh owner value per attempt, as Redlock.acquireMany does: an earlier attempt's rollback,
    // reordered behind this attempt by a NOSCRIPT fallback, must not delete this attempt's lock.
    const [value] = newOwnerValues(1) as [string];
    // The task key is both scopes: one pending dispatch at a time, and 'done' once any run completed.
    const request = { key, idempotencyKey: key, value };
    const [verdict] = (await acquireBatch(ctx, [request], ttlMs)) as [AcquireVerdict];
    if (verdict.kind === 'granted') {
      const { fencingToken, deadline } = verdict;
      return { key, value, fencingToken, ttlMs, validUntil: Date.now() + (deadline - ctx.now()) };
    }
    if (verdict.kind === 'held') {
      const { retryAfterMs } = verdict;
      return { key, reason: 'held', retryAfterMs, failedNodes: [], detail: 'held by another owner' };
    }
    if (verdict.kind === 'done') {
      return { key, reason: 'done', retryAfterMs: 0, failedNodes: [], detail: 'completion marker found' };
    }
    const delay = withJitter(o.retryDelayMs, o.retryJitterMs);
    if (attempt >= o.retryCount || ctx.now() + delay > giveUpAt) {
      const { failedNodes, detail } = verdict;
      return { key, reason: 'quorum', retryAfterMs: 0, failedNodes, detail };
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

/** Releases a handoff that was never handed over (owner-checked, time-bounded, never throws). */
export async function releaseHandoff(redlock: Redlock, handoff: LockRef): Promise<void> {
  const ttlMs =
    'ttlMs' in handoff && typeof handoff.ttlMs === 'number' ? handoff.ttlMs : redlock.options.ttlMs;
  await releaseBatch(contextOf(redlock), [{ key: handoff.key, value: handoff.value }], ttlMs);
}
