import type { LockRef, QuorumContext } from './context.ts';
import { keysOf, sendUntil } from './context.ts';
import type { RedisNode } from './node.ts';
import { defineScript } from './script.ts';

export const RELEASE_SCRIPT = defineScript(
  'release',
  { keysPerLock: 1, argsPerLock: 1 },
  `
--[[ Release a batch of locks, each only if we still own it.
  KEYS, per lock i: the lock key
  ARGV[i]: our owner value of lock i
  Returns, per lock: 1 released | 0 not ours (expired or taken)
  For more than one lock, one MGET reads every lock and one DEL releases ours; a key listed twice is
  released once (1, then 0), as one GET and DEL after the other would. ]]
if #KEYS == 1 then
  if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return { 1 }
  end
  return { 0 }
end
if #KEYS == 0 then return {} end
local values = redis.call('MGET', unpack(KEYS))
local released, owned, out = {}, {}, {}
for i = 1, #KEYS do
  local lock = KEYS[i]
  if not released[lock] and values[i] == ARGV[i] then
    released[lock] = true
    owned[#owned + 1] = lock
    out[i] = 1
  else
    out[i] = 0
  end
end
if #owned > 0 then redis.call('DEL', unpack(owned)) end
return out
`,
);

/**
 * Releases `locks` on every node in one round trip per node. Resolves once a quorum has answered (the
 * rest finish in the background, bounded by the command timeout) and never throws: a node that fails
 * keeps the lock only until its TTL runs out. A node that is reconnecting is sent the release once it
 * is connected again (within `ttlMs`: later the locks are gone anyway), behind what ioredis resends.
 */
export async function releaseBatch(
  ctx: QuorumContext,
  locks: readonly LockRef[],
  ttlMs: number = ctx.options.ttlMs,
): Promise<void> {
  const items = releaseItems(ctx, locks);
  const reconnecting = ctx.nodes.filter((node) => node.isReconnecting);
  for (const node of reconnecting) node.sendWhenReconnected(RELEASE_SCRIPT, [], items, ttlMs);
  await sendUntil(
    ctx,
    RELEASE_SCRIPT,
    [],
    ctx.nodes.map((node) => (reconnecting.includes(node) ? [] : items)),
    // A reconnecting node's empty call answers at once: it is no release.
    (sofar) =>
      sofar.filter((r, j) => r?.ok && !reconnecting.includes(ctx.nodes[j] as RedisNode)).length >= ctx.quorum,
  );
}

/**
 * Fire-and-forget release on chosen nodes, used to roll back partial grants. A node that timed out
 * is included: it may still run our acquire later, and the release queued behind it undoes that; one
 * that is reconnecting gets it once connected again (behind what ioredis resends), within `ttlMs`.
 */
export function rollback(
  ctx: QuorumContext,
  perNode: readonly (readonly LockRef[])[],
  ttlMs: number = ctx.options.ttlMs,
): void {
  ctx.nodes.forEach((node, j) => {
    const locks = perNode[j] ?? [];
    if (locks.length === 0) return;
    const items = releaseItems(ctx, locks);
    if (node.isReconnecting) node.sendWhenReconnected(RELEASE_SCRIPT, [], items, ttlMs);
    else void node.run(RELEASE_SCRIPT, [], items);
  });
}

function releaseItems(ctx: QuorumContext, locks: readonly LockRef[]) {
  return locks.map((lock) => ({
    keys: [keysOf(ctx.options.keyPrefix, lock.key).lock],
    args: [lock.value],
  }));
}
