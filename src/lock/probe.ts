import type { QuorumContext } from './context.ts';
import { defineScript } from './script.ts';

/** How long a probe key lives: long enough to be written, short enough to leave nothing behind. */
export const PROBE_TTL_MS = 1_000;

export const PROBE_SCRIPT = defineScript(
  'probe',
  { keysPerLock: 1, argsPerLock: 0 },
  `
--[[ Write probe: succeeds only where the lock's own writes would (through EVALSHA, as they are sent).
  A read-only replica (READONLY), a failed save (MISCONF), a full node with noeviction (OOM), too few
  replicas (NOREPLICAS) or an ACL without the scripting commands make it fail.
  KEYS[1]: the probe key (under the key prefix)
  ARGV[1]: its TTL in ms
  Returns: {1} ]]
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return {1}
`,
);

/** One node's answer to the probe: up only if it accepted the write. */
export interface ProbeAnswer {
  readonly node: string;
  readonly up: boolean;
  /** Why it counts as down (the node's error, a timeout, not connected); absent when up. */
  readonly error?: string;
}

/**
 * Writes a short-TTL key on every node at once, one round trip each, within the command timeout: a node
 * that answers PING but refuses writes is of no use to a lock, so it counts as down here.
 */
export async function probeWrites(ctx: QuorumContext, probeKey: string): Promise<ProbeAnswer[]> {
  const item = { keys: [probeKey], args: [] };
  const replies = await Promise.all(ctx.nodes.map((node) => node.run(PROBE_SCRIPT, [PROBE_TTL_MS], [item])));
  return replies.map((reply, j) => {
    const node = ctx.nodes[j]?.label ?? `node#${j}`;
    if (!reply.ok) return { node, up: false, error: reply.error.message };
    const answer = reply.replies[0];
    if (answer === 1) return { node, up: true };
    return {
      node,
      up: false,
      error: answer instanceof Error ? answer.message : `answered ${String(answer)}`,
    };
  });
}
