import type { NodeReply, RedisNode } from './node.ts';
import type { ResolvedRedlockOptions } from './options.ts';
import type { LuaScript, ScriptItem } from './script.ts';

/** What every operation module needs: the nodes, the quorum, the options and a monotonic clock. */
export interface QuorumContext {
  readonly nodes: readonly RedisNode[];
  readonly quorum: number;
  readonly options: ResolvedRedlockOptions;
  /** Monotonic milliseconds (performance.now): wall-clock jumps must not stretch a lock's validity. */
  readonly now: () => number;
}

/**
 * The Redis keys of one lock, sharing a hash tag (so a Cluster keeps them in one slot): the lock key
 * holds the owner value while the lock is held; the fence key the fencing counter.
 */
export interface LockKeys {
  readonly lock: string;
  readonly fence: string;
}

export function keysOf(prefix: string, key: string): LockKeys {
  const tag = `${prefix}{${key}}`;
  return { lock: `${tag}:lock`, fence: `${tag}:fence` };
}

/**
 * The completion marker of an idempotency key: the deduplication scope, which is not the lock's
 * mutual-exclusion scope (several operations on one order share a lock key, each has its own marker).
 * It has its own hash tag: on a Cluster node, a lock whose two keys fall in different slots is refused
 * by that node (CROSSSLOT), so there use the same key for both or standalone nodes.
 */
export function markerKeyOf(prefix: string, idempotencyKey: string): string {
  return `${prefix}{${idempotencyKey}}:done`;
}

/** Sends each node its own batch (an empty one costs nothing), all bounded by one shared deadline. */
export async function sendEach(
  ctx: QuorumContext,
  script: LuaScript,
  shared: readonly (string | number)[],
  itemsByNode: readonly (readonly ScriptItem[])[],
): Promise<NodeReply[]> {
  return (await sendUntil(ctx, script, shared, itemsByNode, () => false)) as NodeReply[];
}

/**
 * An `enough` for {@link sendUntil}: true once every node that was connected when the call went out has
 * answered (or timed out at the shared deadline), so a node on its first connection, which sendUntil
 * waits for up to connectTimeoutMs, is not waited for. False while no node was connected. Make it in
 * the same turn as the call, so that both see the same nodes as connected.
 */
export function connectedAnswered(
  ctx: QuorumContext,
): (replies: readonly (NodeReply | undefined)[]) => boolean {
  const cold = ctx.nodes.map((node) => !node.isReady);
  const anyConnected = cold.includes(false);
  return (replies) => anyConnected && replies.every((reply, j) => reply !== undefined || cold[j]);
}

/**
 * Like {@link sendEach}, but resolves as soon as `enough(replies)` holds for the replies so far (a
 * quorum has decided), without waiting for the slowest node; unanswered nodes are `undefined`. The
 * late calls stay bounded by the same deadline.
 */
export function sendUntil(
  ctx: QuorumContext,
  script: LuaScript,
  shared: readonly (string | number)[],
  itemsByNode: readonly (readonly ScriptItem[])[],
  enough: (replies: readonly (NodeReply | undefined)[]) => boolean,
  /** Told of each node's reply (or its timeout) that comes after the promise resolved. */
  onLate?: (node: number, reply: NodeReply) => void,
): Promise<(NodeReply | undefined)[]> {
  const n = ctx.nodes.length;
  const replies: (NodeReply | undefined)[] = new Array(n).fill(undefined);
  const sharedDeadline: boolean[] = new Array(n).fill(false);
  let waiting = n;
  return new Promise((resolve) => {
    let resolved = false;
    const settle = (j: number, reply: NodeReply): void => {
      if (replies[j] !== undefined) return;
      replies[j] = reply;
      waiting--;
      if (waiting === 0) clearTimeout(timer);
      if (resolved) onLate?.(j, reply);
      else if (waiting === 0 || enough(replies)) {
        resolved = true;
        resolve(replies.slice());
      }
    };
    // One timer for the whole broadcast: a ready node that has not answered by then is a "no". A node
    // still making its first connection is not bound by it (run() waits for it within its own bounds).
    const timer = setTimeout(() => {
      ctx.nodes.forEach((node, j) => {
        if (sharedDeadline[j] && replies[j] === undefined) settle(j, node.timedOut(script));
      });
    }, ctx.options.commandTimeoutMs);
    ctx.nodes.forEach((node, j) => {
      const items = itemsByNode[j] ?? [];
      sharedDeadline[j] = node.isReady;
      const reply = node.isReady ? node.send(script, shared, items) : node.run(script, shared, items);
      void reply.then((r) => settle(j, r));
    });
  });
}

/** A lock as the operation modules see it. */
export interface LockRef {
  readonly key: string;
  readonly value: string;
}

/** A lock with the idempotency key whose completion marker it checks (acquire) or writes (complete). */
export interface MarkedLockRef extends LockRef {
  readonly idempotencyKey: string;
}
