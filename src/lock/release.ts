import type { LockRef, QuorumContext } from './context.ts';
import { keysOf, sendUntil } from './context.ts';
import { defineScript } from './script.ts';

export const RELEASE_SCRIPT = defineScript(
  'release',
  { keysPerLock: 1, argsPerLock: 1 },
  `
--[[ Release a batch of locks, each only if we still own it.
  KEYS, per lock i: the lock key
  ARGV[i]: our owner value of lock i
  Returns, per lock: 1 released | 0 not ours (expired or taken) ]]
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    redis.call('DEL', KEYS[i])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
`,
);

/**
 * Releases `locks` on every node in one round trip per node. Resolves once a quorum has answered (the
 * rest finish in the background, bounded by the command timeout) and never throws: a node that fails
 * keeps the lock only until its TTL runs out.
 */
export async function releaseBatch(ctx: QuorumContext, locks: readonly LockRef[]): Promise<void> {
  const items = locks.map((lock) => ({
    keys: [keysOf(ctx.options.keyPrefix, lock.key).lock],
    args: [lock.value],
  }));
  await sendUntil(
    ctx,
    RELEASE_SCRIPT,
    [],
    ctx.nodes.map(() => items),
    (sofar) => sofar.filter((r) => r?.ok).length >= ctx.quorum,
  );
}

/**
 * Fire-and-forget release on chosen nodes, used to roll back partial grants. A node that timed out
 * is included: it may still run our acquire later, and the release queued behind it undoes that.
 */
export function rollback(ctx: QuorumContext, perNode: readonly (readonly LockRef[])[]): void {
  ctx.nodes.forEach((node, j) => {
    const locks = perNode[j] ?? [];
    if (locks.length === 0) return;
    const items = locks.map((lock) => ({
      keys: [keysOf(ctx.options.keyPrefix, lock.key).lock],
      args: [lock.value],
    }));
    void node.run(RELEASE_SCRIPT, [], items);
  });
}
