import type { LockRef, QuorumContext } from './context.ts';
import { keysOf, sendUntil } from './context.ts';
import type { NodeReply } from './node.ts';
import { defineScript } from './script.ts';

export const COMPLETE_SCRIPT = defineScript(
  'complete',
  { keysPerLock: 1, argsPerLock: 2 },
  `
--[[ Turn a batch of locks into completion markers, atomically per node, each only if we own it.
  The marker takes the lock key's place ('!' .. fencing token), so that a later acquire meets it in the
  same SET NX it already does, and it is released at the same time.
  KEYS, per lock i: the lock key
  ARGV[1]: marker TTL in ms   ARGV[2i]: our owner value of lock i   ARGV[2i+1]: its fencing token
  Returns, per lock: 1 marked (and so released) | 0 not ours (nothing written) ]]
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[2 * i] then
    redis.call('SET', KEYS[i], '!' .. ARGV[2 * i + 1], 'PX', ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
`,
);

/**
 * Writes the completion marker of each lock (which releases it), in one round trip per node. Returns,
 * per lock, whether a quorum did so while we owned the lock there. Never throws.
 */
export async function completeBatch(
  ctx: QuorumContext,
  locks: readonly (LockRef & { readonly fencingToken: number })[],
  markerTtlMs: number,
): Promise<boolean[]> {
  const items = locks.map((lock) => ({
    keys: [keysOf(ctx.options.keyPrefix, lock.key).lock],
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
