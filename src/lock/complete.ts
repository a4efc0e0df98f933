import type { LockRef, QuorumContext } from './context.ts';
import { broadcast, keysOf } from './context.ts';
import { defineScript } from './script.ts';

export const COMPLETE_SCRIPT = defineScript(
  'complete',
  { keysPerLock: 2, argsPerLock: 2 },
  `
--[[ Mark a batch of locks completed and release them, atomically per node, each only if we own it.
  KEYS, per lock i: the lock key, the completion marker
  ARGV[1]: marker TTL in ms   ARGV[2i]: our owner value of lock i   ARGV[2i+1]: its fencing token
  Returns, per lock: 1 marked and released | 0 not ours (nothing written) ]]
local out = {}
for i = 1, #KEYS / 2 do
  local lock, done = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('GET', lock) == ARGV[2 * i] then
    redis.call('SET', done, ARGV[2 * i + 1], 'PX', ARGV[1])
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
 */
export async function completeBatch(
  ctx: QuorumContext,
  locks: readonly (LockRef & { readonly fencingToken: number })[],
  markerTtlMs: number,
): Promise<boolean[]> {
  const items = locks.map((lock) => {
    const keys = keysOf(ctx.options.keyPrefix, lock.key);
    return { keys: [keys.lock, keys.done], args: [lock.value, String(lock.fencingToken)] };
  });
  const replies = await broadcast(ctx, COMPLETE_SCRIPT, [markerTtlMs], items);
  return locks.map((_, i) => replies.filter((r) => r.ok && r.replies[i] === 1).length >= ctx.quorum);
}
