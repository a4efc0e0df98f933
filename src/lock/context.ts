import type { ResolvedRedlockOptions } from '../options.ts';
import type { NodeReply, RedisNode } from './node.ts';
import type { LuaScript, ScriptItem } from './script.ts';

/** What every operation module needs: the nodes, the quorum, the options and a monotonic clock. */
export interface QuorumContext {
  readonly nodes: readonly RedisNode[];
  readonly quorum: number;
  readonly options: ResolvedRedlockOptions;
  /** Monotonic milliseconds (performance.now): wall-clock jumps must not stretch a lock's validity. */
  readonly now: () => number;
}

/** The Redis keys of one lock: the owner value, the fencing counter and the completion marker share a hash tag. */
export interface LockKeys {
  readonly lock: string;
  readonly fence: string;
  readonly done: string;
}

export function keysOf(prefix: string, key: string): LockKeys {
  const tag = `${prefix}{${key}}`;
  return { lock: `${tag}:lock`, fence: `${tag}:fence`, done: `${tag}:done` };
}

/** Sends the same batch to every node at once: one round trip per node, whatever the batch size. */
export function broadcast(
  ctx: QuorumContext,
  script: LuaScript,
  shared: readonly (string | number)[],
  items: readonly ScriptItem[],
): Promise<NodeReply[]> {
  return Promise.all(ctx.nodes.map((node) => node.run(script, shared, items)));
}

/** Sends each node its own batch (some may be empty and cost nothing). */
export function sendEach(
  ctx: QuorumContext,
  script: LuaScript,
  shared: readonly (string | number)[],
  itemsByNode: readonly (readonly ScriptItem[])[],
): Promise<NodeReply[]> {
  return Promise.all(ctx.nodes.map((node, j) => node.run(script, shared, itemsByNode[j] ?? [])));
}

/** A lock as the operation modules see it. */
export interface LockRef {
  readonly key: string;
  readonly value: string;
}
