import type { LockRef, MarkedLockRef, QuorumContext } from './context.ts';
import { keysOf, markerKeyOf, sendUntil } from './context.ts';
import { type FenceRaise, raiseFences } from './fence.ts';
import type { NodeReply } from './node.ts';
import { validityMs } from './quorum.ts';
import type { LockRefusal } from './redlock.ts';
import { rollback } from './release.ts';
import { defineScript } from './script.ts';

export const ACQUIRE_SCRIPT = defineScript(
  'acquire',
  { keysPerLock: 3, argsPerLock: 1 },
  `
--[[ Acquire a batch of locks on one node; a lock whose idempotency key is completed is not taken.
  KEYS, per lock i: the lock key, its fencing counter, the completion marker of its idempotency key
  ARGV[1]: TTL in ms   ARGV[2]: counter TTL in ms (0 = keep forever)
  ARGV[3]: first token of a new counter (the client's clock in microseconds, so tokens stay monotonic
           after a counter expired or a node came back empty)
  ARGV[3+i]: our owner value of lock i (random)
  Returns, per lock, one integer: > 0 granted, the fencing token | 0 completed: the marker exists |
  < 0 held by another owner, -(its remaining ms + 1)
  For more than one lock, one EXISTS over every marker first: when none exists (the common case) no
  lock needs its own check. Nothing here writes a marker (lock and fence keys end in :lock and :fence,
  a marker in :done), so that answer holds for the whole loop. ]]
local ttl, counterTtl, first = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local n = #KEYS / 3
local anyDone = true
if n > 1 then
  local markers = {}
  for i = 1, n do markers[i] = KEYS[3 * i] end
  anyDone = redis.call('EXISTS', unpack(markers)) > 0
end
local firstToken = tonumber(first)
local out = {}
for i = 1, n do
  local lock, fence, value = KEYS[3 * i - 2], KEYS[3 * i - 1], ARGV[3 + i]
  local granted = false
  if anyDone and redis.call('EXISTS', KEYS[3 * i]) == 1 then
    out[i] = 0
  elseif redis.call('SET', lock, value, 'NX', 'PX', ttl) then
    granted = true
  elseif redis.call('GET', lock) == value then
    -- This very call run before (ioredis resends an unanswered command after a reconnect): take it over.
    -- Each attempt has its own value, so an earlier attempt's lock is never taken over.
    redis.call('PEXPIRE', lock, ttl)
    granted = true
  else
    out[i] = -(math.max(redis.call('PTTL', lock), 0) + 1)
  end
  if granted then
    -- A new counter starts at the clock (one SET); an existing one counts on (a failed SET and INCR).
    local seeded
    if counterTtl > 0 then
      seeded = redis.call('SET', fence, first, 'NX', 'PX', counterTtl)
    else
      seeded = redis.call('SET', fence, first, 'NX')
    end
    out[i] = seeded and firstToken or redis.call('INCR', fence)
  end
end
return out
`,
);

export type AcquireVerdict =
  | {
      readonly kind: 'granted';
      readonly key: string;
      /** Whose completion marker the lock writes when it completes. */
      readonly idempotencyKey: string;
      readonly value: string;
      readonly fencingToken: number;
      /** Monotonic time at which the attempt started. */
      readonly startedAt: number;
      /** Monotonic time at which validity ends: start + ttl - drift allowance. */
      readonly deadline: number;
    }
  | { readonly kind: 'held'; readonly key: string; readonly retryAfterMs: number }
  | { readonly kind: 'done'; readonly key: string }
  | {
      readonly kind: 'quorum';
      readonly key: string;
      readonly failedNodes: readonly string[];
      readonly detail: string;
    };

interface Tally {
  granted: { node: number; token: number }[];
  held: number;
  heldPttl: number;
  done: number;
  failed: number[];
}

/**
 * One attempt at a batch of locks: one round trip per node, plus one more only where granting nodes
 * disagree on a fencing counter (never in the healthy case). Partial grants are rolled back.
 */
export async function acquireBatch(
  ctx: QuorumContext,
  requests: readonly MarkedLockRef[],
  ttlMs: number,
): Promise<AcquireVerdict[]> {
  const startedAt = ctx.now();
  const firstToken = String(Date.now() * 1000 + 1);
  const prefix = ctx.options.keyPrefix;
  const items = requests.map((r) => {
    const k = keysOf(prefix, r.key);
    return { keys: [k.lock, k.fence, markerKeyOf(prefix, r.idempotencyKey)], args: [r.value] };
  });
  // Decided once every key is granted by a quorum or seen completed: the slowest node is not waited for.
  // Its reply still counts: where it granted a key that was refused (a 'done' decided by one node's
  // marker), that grant is rolled back once known (undoLate), so no lock is left that nobody owns.
  const late: { node: number; reply: NodeReply }[] = [];
  let undoLate: ((node: number, reply: NodeReply) => void) | undefined;
  const replies = await sendUntil(
    ctx,
    ACQUIRE_SCRIPT,
    [ttlMs, ctx.options.fencingTtlMs, firstToken],
    ctx.nodes.map(() => items),
    (sofar) =>
      items.every((_, i) => {
        let granted = 0;
        for (const reply of sofar) {
          const answer = reply?.ok ? reply.replies[i] : undefined;
          if (answer === 0) return true;
          if (typeof answer === 'number' && answer > 0) granted++;
        }
        return granted >= ctx.quorum;
      }),
    (node, reply) => (undoLate ? undoLate(node, reply) : late.push({ node, reply })),
  );

  const tallies = requests.map((_, i) => {
    const t: Tally = { granted: [], held: 0, heldPttl: 0, done: 0, failed: [] };
    replies.forEach((reply, j) => {
      if (reply === undefined) return; // not waited for: see undoLate
      const answer = reply.ok ? reply.replies[i] : undefined;
      if (typeof answer !== 'number') t.failed.push(j);
      else if (answer > 0) t.granted.push({ node: j, token: answer });
      else if (answer === 0) t.done++;
      else {
        t.held++;
        t.heldPttl = Math.max(t.heldPttl, -answer - 1);
      }
    });
    return t;
  });

  // Fencing: the token is the highest counter among the granting nodes. Where they disagree, write it
  // back so that a quorum holds it before the lock is handed out; any later majority overlaps that quorum.
  const raiseOf = new Map<number, FenceRaise>();
  tallies.forEach((t, i) => {
    if (t.done > 0 || t.granted.length < ctx.quorum) return;
    const token = Math.max(...t.granted.map((g) => g.token));
    const behind = t.granted.filter((g) => g.token < token).map((g) => g.node);
    if (behind.length > 0) raiseOf.set(i, { key: requests[i]?.key ?? '', token, behind });
  });
  const raised = raiseOf.size > 0 ? await raiseFences(ctx, [...raiseOf.values()]) : [];
  const raisedOf = new Map([...raiseOf.keys()].map((i, x) => [i, raised[x] ?? 0]));

  const decidedAt = ctx.now();
  const validity = validityMs(ttlMs, decidedAt - startedAt, ctx.options.driftFactor);
  const undo: LockRef[][] = ctx.nodes.map(() => []);
  const verdicts = requests.map((request, i): AcquireVerdict => {
    const t = tallies[i] as Tally;
    const failedNodes = t.failed.map((j) => ctx.nodes[j]?.label ?? `#${j}`);
    const behind = raiseOf.get(i)?.behind.length ?? 0;
    const atToken = t.granted.length - behind + (raisedOf.get(i) ?? 0);
    const verdict = decide(ctx, request, t, { validity, startedAt, decidedAt, failedNodes, atToken });
    if (verdict.kind !== 'granted') {
      // Wherever it is or may be ours: granted, or failed (a timed-out call may still run: the release
      // queues behind it on the same connection, unless a NOSCRIPT fallback re-sends the acquire behind
      // it; that lock then lingers until its TTL, unowned, and touches no other attempt's value).
      for (const g of t.granted) undo[g.node]?.push(request);
      for (const j of t.failed) undo[j]?.push(request);
    }
    return verdict;
  });
  rollback(ctx, undo, ttlMs);
  // A node answering after the decision: undo what it granted of the refused keys (or all of them if
  // it failed or timed out: its call may still run). In the healthy case it answers 'done' too: no call.
  const refused = requests.filter((_, i) => verdicts[i]?.kind !== 'granted');
  const refusedAt = requests.flatMap((_, i) => (verdicts[i]?.kind !== 'granted' ? [i] : []));
  undoLate = (node, reply) => {
    const undone = refused.filter((_, x) => {
      const answer = reply.ok ? reply.replies[refusedAt[x] as number] : undefined;
      return typeof answer !== 'number' || answer > 0;
    });
    if (undone.length > 0)
      rollback(
        ctx,
        ctx.nodes.map((_, j) => (j === node ? undone : [])),
      );
  };
  for (const { node, reply } of late.splice(0)) undoLate(node, reply);
  return verdicts;
}

function decide(
  ctx: QuorumContext,
  request: MarkedLockRef,
  t: Tally,
  at: { validity: number; startedAt: number; decidedAt: number; failedNodes: string[]; atToken: number },
): AcquireVerdict {
  const { key } = request;
  const { validity, startedAt, decidedAt, failedNodes, atToken } = at;
  // One node's marker is enough: a marker is only written by a holder of a valid quorum lock after its
  // work succeeded (see COMPLETE_SCRIPT and RECLAIM_SCRIPT).
  if (t.done > 0) return { kind: 'done', key };
  const answered = t.granted.length + t.held;
  if (t.granted.length < ctx.quorum) {
    if (answered >= ctx.quorum) return { kind: 'held', key, retryAfterMs: t.heldPttl };
    const detail = `${t.granted.length} granted, ${t.held} held elsewhere, ${t.failed.length} failed`;
    return { kind: 'quorum', key, failedNodes, detail };
  }
  const token = Math.max(...t.granted.map((g) => g.token));
  if (atToken < ctx.quorum) {
    return {
      kind: 'quorum',
      key,
      failedNodes,
      detail: `fencing token ${token} reached only ${atToken} nodes`,
    };
  }
  if (validity <= 0) {
    return { kind: 'quorum', key, failedNodes, detail: 'granted too late: no validity left of the TTL' };
  }
  const deadline = decidedAt + validity;
  const { idempotencyKey, value } = request;
  return { kind: 'granted', key, idempotencyKey, value, fencingToken: token, startedAt, deadline };
}

/** The refusal a caller sees for a verdict that did not grant the lock. */
export function toRefusal(verdict: Exclude<AcquireVerdict, { kind: 'granted' }>): LockRefusal {
  switch (verdict.kind) {
    case 'held':
      return {
        key: verdict.key,
        reason: 'held',
        retryAfterMs: verdict.retryAfterMs,
        failedNodes: [],
        detail: 'held by another owner',
      };
    case 'done':
      return {
        key: verdict.key,
        reason: 'done',
        retryAfterMs: 0,
        failedNodes: [],
        detail: 'completion marker found',
      };
    case 'quorum':
      return {
        key: verdict.key,
        reason: 'quorum',
        retryAfterMs: 0,
        failedNodes: verdict.failedNodes,
        detail: verdict.detail,
      };
  }
}
