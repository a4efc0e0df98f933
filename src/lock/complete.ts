import type { LockRef, QuorumContext } from './context.ts';
import { keysOf, sendUntil } from './context.ts';
import type { NodeReply } from './node.ts';
import { defineScript } from './script.ts';

export const COMPLETE_SCRIPT = defineScript(
  'complete',
  { keysPerLock: 2, argsPerLock: 3 },
  `
--[[ Turn a batch of locks into completion markers, atomically per node, each only if we own it.
  The marker takes the lock key's place ('!' .. fencing token), so that a later acquire meets it in the
  same SET NX it already does, and it is released at the same time.
  A late lock (its validity ran out while its work went on) is still marked where its key is gone and
  the fencing counter still holds its token: no one was granted the key here since.
  KEYS, per lock i: the lock key, its fencing counter
  ARGV[1]: marker TTL in ms   ARGV[3i-1]: our owner value of lock i   ARGV[3i]: its fencing token
  ARGV[3i+1]: '1' when lock i is late, else '0'
  Returns, per lock: 1 marked (and so released) | 0 not ours (nothing written) ]]
local out = {}
for i = 1, #KEYS / 2 do
  local lock, fence = KEYS[2 * i - 1], KEYS[2 * i]
  local value, token, late = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  local current = redis.call('GET', lock)
  if current == value or (late == '1' and not current and redis.call('GET', fence) == token) then
    redis.call('SET', lock, '!' .. token, 'PX', ARGV[1])
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
 * per lock, whether a quorum did so while we owned the lock there, or, for a `late` lock, while no one
 * had been granted it since. Never throws.
 */
export async function completeBatch(
  ctx: QuorumContext,
  locks: readonly (LockRef & { readonly fencingToken: number; readonly late: boolean })[],
  markerTtlMs: number,
): Promise<boolean[]> {
  const items = locks.map((lock) => {
    const keys = keysOf(ctx.options.keyPrefix, lock.key);
    return {
      keys: [keys.lock, keys.fence],
      args: [lock.value, String(lock.fencingToken), lock.late ? '1' : '0'],
    };
  });
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
