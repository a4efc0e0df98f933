import type { LockRef, QuorumContext } from './context.ts';
import { connectedAnswered, keysOf, sendUntil } from './context.ts';
import type { NodeReply } from './node.ts';
import { defineScript } from './script.ts';

export const EXTEND_SCRIPT = defineScript(
  'extend',
  { keysPerLock: 1, argsPerLock: 2 },
  `
--[[ Extend a batch of locks, each only if we still own it.
  KEYS, per lock i: the lock key
  ARGV[2i-1]: our owner value of lock i   ARGV[2i]: its new TTL in ms
  Returns, per lock: 1 extended | 0 not ours (expired or taken)
  For more than one lock, one MGET reads every lock (PEXPIRE changes no value, so what it read holds
  for the whole loop). ]]
if #KEYS == 0 then return {} end
local values
if #KEYS == 1 then values = { redis.call('GET', KEYS[1]) } else values = redis.call('MGET', unpack(KEYS)) end
local out = {}
for i = 1, #KEYS do
  if values[i] == ARGV[2 * i - 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2 * i])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
`,
);

export type ExtendVerdict =
  /** A quorum extended it; the new validity is counted from `startedAt`. */
  | { readonly kind: 'extended' }
  /** A majority answered that the lock is not ours: it is gone. */
  | { readonly kind: 'not_owner'; readonly detail: string }
  /** Too few nodes answered: try again while validity lasts. */
  | { readonly kind: 'unreachable'; readonly detail: string };

/**
 * Extends `locks` in one round trip per node. Never throws. Answers as soon as every lock is decided
 * (a quorum extended it, or too many said not ours), or every connected node has answered: a node on
 * its first connection may take connectTimeoutMs, far longer than a short lock's validity. A lock left
 * undecided is 'unreachable' (tried again on the next tick). A late reply needs no undo: it only
 * extends what is still ours.
 */
export async function extendBatch(
  ctx: QuorumContext,
  locks: readonly (LockRef & { readonly ttlMs: number })[],
): Promise<ExtendVerdict[]> {
  const items = locks.map((lock) => ({
    keys: [keysOf(ctx.options.keyPrefix, lock.key).lock],
    args: [lock.value, lock.ttlMs],
  }));
  const n = ctx.nodes.length;
  /** Lock i's answers so far; a node not waited for (undefined) is left out. */
  const tally = (replies: readonly (NodeReply | undefined)[], i: number) => {
    let extended = 0;
    let refused = 0;
    const failed: string[] = [];
    replies.forEach((reply, j) => {
      if (reply === undefined) return;
      const answer = reply.ok ? reply.replies[i] : undefined;
      if (answer === 1) extended++;
      else if (answer === 0) refused++;
      // A failure is no "not owner": counted as one, it could declare a held lock lost.
      else failed.push(`${ctx.nodes[j]?.label}: ${reply.ok ? String(answer) : reply.error.message}`);
    });
    return { extended, refused, failed };
  };
  const isDecided = ({ extended, refused }: { extended: number; refused: number }): boolean =>
    extended >= ctx.quorum || refused > n - ctx.quorum;
  const allConnectedAnswered = connectedAnswered(ctx);
  const replies = await sendUntil(
    ctx,
    EXTEND_SCRIPT,
    [],
    ctx.nodes.map(() => items),
    (soFar) => allConnectedAnswered(soFar) || locks.every((_, i) => isDecided(tally(soFar, i))),
  );
  return locks.map((_, i): ExtendVerdict => {
    const { extended, refused, failed } = tally(replies, i);
    if (extended >= ctx.quorum) return { kind: 'extended' };
    const detail = `extension reached ${extended} of ${n} nodes (quorum ${ctx.quorum}); ${refused} said not owner${
      failed.length > 0 ? `; failed: ${failed.join('; ')}` : ''
    }`;
    // Once more than n - quorum nodes refuse, no quorum can ever extend it again.
    return refused > n - ctx.quorum ? { kind: 'not_owner', detail } : { kind: 'unreachable', detail };
  });
}
