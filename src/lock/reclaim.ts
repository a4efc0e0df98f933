import type { LockRef, MarkedLockRef, QuorumContext } from './context.ts';
import { keysOf, markerKeyOf, sendUntil } from './context.ts';
import type { NodeReply } from './node.ts';
import { validityMs } from './quorum.ts';
import { rollback } from './release.ts';
import { defineScript } from './script.ts';

export const RECLAIM_SCRIPT = defineScript(
  'reclaim',
  { keysPerLock: 3, argsPerLock: 2 },
  `
--[[ Take back, on one node, locks whose validity ran out while their work went on, each only if no
  one has been granted it here since: the fencing counter still holds our token (every grant counts the
  counter on), and the lock key is still ours or gone. "Ours" alone is not enough: our own acquire,
  delivered late (a black-holed link, a resend), can have written our value after someone else was
  granted the key and released it. Nothing is taken once the marker exists.
  KEYS, per lock i: the lock key, its fencing counter, the completion marker of its idempotency key
  ARGV[1]: TTL in ms   ARGV[2i]: our owner value of lock i   ARGV[2i+1]: its fencing token
  Returns, per lock: 1 ours again | 0 the marker exists | -1 someone else was or is granted it ]]
local out = {}
for i = 1, #KEYS / 3 do
  local lock, fence, marker = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local value, token = ARGV[2 * i], ARGV[2 * i + 1]
  local current = redis.call('GET', lock)
  if redis.call('EXISTS', marker) == 1 then
    out[i] = 0
  elseif redis.call('GET', fence) ~= token then
    out[i] = -1
  elseif current == value then
    redis.call('PEXPIRE', lock, ARGV[1])
    out[i] = 1
  elseif not current then
    redis.call('SET', lock, value, 'PX', ARGV[1])
    out[i] = 1
  else
    out[i] = -1
  end
end
return out
`,
);

/**
 * Re-acquires, in one round trip per node, late locks (their validity ran out while their handler ran)
 * that no one was granted since, so that their success can be completed like any other: a late holder
 * must hold a valid quorum lock again before it writes a marker. Where a quorum does not answer 'ours
 * again' in time, the nodes that did (or may still, not having answered) are rolled back like a partial
 * grant. Answers, per lock, the monotonic deadline of the reclaimed lock, or undefined. Never throws.
 */
export async function reclaimBatch(
  ctx: QuorumContext,
  locks: readonly (MarkedLockRef & { readonly fencingToken: number; readonly ttlMs: number })[],
): Promise<(number | undefined)[]> {
  if (locks.length === 0) return [];
  const prefix = ctx.options.keyPrefix;
  // One TTL per call: the late locks of one batch share it (the Redlock's); the longest is used.
  const ttlMs = locks.reduce((longest, lock) => Math.max(longest, lock.ttlMs), 0);
  const items = locks.map((lock) => {
    const k = keysOf(prefix, lock.key);
    return {
      keys: [k.lock, k.fence, markerKeyOf(prefix, lock.idempotencyKey)],
      args: [lock.value, String(lock.fencingToken)],
    };
  });
  const startedAt = ctx.now();
  const ours = (replies: readonly (NodeReply | undefined)[], i: number): number =>
    replies.filter((r) => r?.ok && r.replies[i] === 1).length;
  const replies = await sendUntil(
    ctx,
    RECLAIM_SCRIPT,
    [ttlMs],
    ctx.nodes.map(() => items),
    (sofar) => items.every((_, i) => ours(sofar, i) >= ctx.quorum),
  );
  const decidedAt = ctx.now();
  const validity = validityMs(ttlMs, decidedAt - startedAt, ctx.options.driftFactor);
  const undo: LockRef[][] = ctx.nodes.map(() => []);
  const deadlines = locks.map((lock, i) => {
    if (ours(replies, i) >= ctx.quorum && validity > 0) return decidedAt + validity;
    // Not ours on a quorum: undo it wherever it may be ours (said so, failed, or not answered yet).
    replies.forEach((reply, j) => {
      const answer = reply?.ok ? reply.replies[i] : undefined;
      if (typeof answer !== 'number' || answer === 1) undo[j]?.push(lock);
    });
    return undefined;
  });
  rollback(ctx, undo, ttlMs);
  return deadlines;
}
