import type { QuorumContext } from './context.ts';
import { keysOf, sendEach } from './context.ts';
import { defineScript } from './script.ts';

export const RAISE_FENCE_SCRIPT = defineScript(
  'raise-fence',
  { keysPerLock: 1, argsPerLock: 1 },
  `
--[[ Raise fencing counters to at least a token already handed out, so any later majority sees it.
  KEYS, per lock i: the fencing counter
  ARGV[1]: counter TTL in ms (0 = keep forever)   ARGV[1+i]: the token of lock i
  Returns, per lock: 1 (the counter is now >= the token) ]]
local ttl = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if current < tonumber(ARGV[1 + i]) then
    redis.call('SET', KEYS[i], ARGV[1 + i])
  end
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
  out[i] = 1
end
return out
`,
);

/** A granted lock whose nodes answered different counters; `behind` lists the nodes below `token`. */
export interface FenceRaise {
  readonly key: string;
  readonly token: number;
  readonly behind: readonly number[];
}

/**
 * Writes each token back to the granting nodes whose counter is behind, one round trip per node that
 * needs it. Returns, per raise, how many of its `behind` nodes confirmed. Never throws.
 */
export async function raiseFences(ctx: QuorumContext, raises: readonly FenceRaise[]): Promise<number[]> {
  const itemsByNode = ctx.nodes.map((_, j) =>
    raises
      .filter((r) => r.behind.includes(j))
      .map((r) => ({ keys: [keysOf(ctx.options.keyPrefix, r.key).fence], args: [String(r.token)] })),
  );
  const replies = await sendEach(ctx, RAISE_FENCE_SCRIPT, [ctx.options.fencingTtlMs], itemsByNode);
  return raises.map((r) => r.behind.filter((j) => replies[j]?.ok === true).length);
}
