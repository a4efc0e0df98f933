import type { MarkedLockRef, QuorumContext } from './context.ts';
import { keysOf, markerKeyOf, sendUntil } from './context.ts';
import type { NodeReply } from './node.ts';
import { defineScript } from './script.ts';

export const COMPLETE_SCRIPT = defineScript(
  'complete',
  { keysPerLock: 2, argsPerLock: 2 },
  `
--[[ Complete a batch of locks, atomically per node, each only where we still own it: write the
  completion marker of its idempotency key and release the lock key.
  KEYS, per lock i: the lock key, the completion marker of its idempotency key
  ARGV[1]: marker TTL in ms   ARGV[2i]: our owner value of lock i   ARGV[2i+1]: its fencing token
  Returns, per lock: 1 marked and released | 0 not ours here (nothing written) ]]
local out = {}
for i = 1, #KEYS / 2 do
  local lock, marker = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('GET', lock) == ARGV[2 * i] then
    -- The marker first: Redis does not undo a script that fails midway, and a lock released without
    -- its marker would let the work run again.
    redis.call('SET', marker, ARGV[2 * i + 1], 'PX', ARGV[1])
    redis.call('DEL', lock)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
`,
);

/**
 * Writes the completion marker of each lock and releases it, in one round trip per node. Returns, per
 * lock, whether a quorum did so while we owned the lock there. Never throws.
 *
 * Invariant (with reclaimBatch): a marker is written on a node only by the owner of a lock that was
 * valid on a quorum when the call was sent, and only where that node still holds the lock for it. So
 * no marker exists anywhere unless its writer held a valid quorum lock after its work succeeded.
 */
export async function completeBatch(
  ctx: QuorumContext,
  locks: readonly (MarkedLockRef & { readonly fencingToken: number })[],
  markerTtlMs: number,
): Promise<boolean[]> {
  if (locks.length === 0) return [];
  const prefix = ctx.options.keyPrefix;
  const items = locks.map((lock) => ({
    keys: [keysOf(prefix, lock.key).lock, markerKeyOf(prefix, lock.idempotencyKey)],
    args: [lock.value, String(lock.fencingToken)],
  }));
  const marked = (replies: readonly (NodeReply | undefined)[], i: number): number =>
    replies.filter((r) => r?.ok && r.replies[i] === 1).length;
  // Decided once every lock has a quorum of markers: the slowest node is not waited for.
  const replies = await sendUntil(
    ctx,
    COMPLETE_SCRIPT,
    [markerTtlMs],
    ctx.nodes.map(() => items),
    // Over items, not locks: a call left queued on a hung node must not keep Lock objects alive.
    (sofar) => items.every((_, i) => marked(sofar, i) >= ctx.quorum),
  );
  return locks.map((_, i) => marked(replies, i) >= ctx.quorum);
}
