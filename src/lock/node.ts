import type { Cluster, Redis } from 'ioredis';
import type { LuaScript, ScriptItem } from './script.ts';

/** What users pass: ordinary ioredis clients, one per independent node (a Cluster counts as one node). */
export type RedisClient = Redis | Cluster;

/** A node's answer to one batched call: a reply per lock, or why the node counts as a "no". */
export type NodeReply =
  | { readonly ok: true; readonly replies: unknown[] }
  | { readonly ok: false; readonly error: Error };

export interface NodeTimeouts {
  readonly commandTimeoutMs: number;
  readonly connectTimeoutMs: number;
}

/**
 * One independent Redis node of the quorum. It never blocks longer than the command timeout, sends
 * nothing to a client that is reconnecting (ioredis would queue it and run it late), and waits for a
 * client's first connection so a cold start does not count as a failure. It reads nothing from the
 * user's client options.
 */
export class RedisNode {
  readonly client: RedisClient;
  readonly label: string;
  readonly #timeouts: NodeTimeouts;
  /** True once the first connection attempt succeeded or failed: from then on only `ready` is waited for by nobody. */
  #firstAttemptSettled: boolean;
  #firstAttempt: Promise<void> | undefined;

  constructor(client: RedisClient, index: number, timeouts: NodeTimeouts) {
    this.client = client;
    this.label = labelOf(client, index);
    this.#timeouts = timeouts;
    this.#firstAttemptSettled = client.status === 'ready' || client.status === 'end';
  }

  /** Runs `script` over all `items` in one round trip (one per key slot on a Cluster), bounded by the command timeout. */
  async run(
    script: LuaScript,
    shared: readonly (string | number)[],
    items: readonly ScriptItem[],
  ): Promise<NodeReply> {
    if (items.length === 0) return { ok: true, replies: [] };
    const notReady = await this.#whenUsable();
    if (notReady) return { ok: false, error: notReady };
    const call = this.client.isCluster
      ? Promise.all(items.map((item) => this.#evalBatch(script, shared, [item]))).then((r) => r.flat())
      : this.#evalBatch(script, shared, items);
    try {
      const replies = await withTimeout(call, this.#timeouts.commandTimeoutMs, () =>
        this.#timeoutError(script),
      );
      if (replies.length !== items.length) {
        return {
          ok: false,
          error: new Error(`${this.label}: ${script.name} answered ${replies.length} of ${items.length}`),
        };
      }
      return { ok: true, replies };
    } catch (error) {
      return { ok: false, error: asError(error) };
    }
  }

  /** PING within the command timeout; for health checks. */
  async ping(): Promise<boolean> {
    const notReady = await this.#whenUsable();
    if (notReady) return false;
    try {
      await withTimeout(this.client.ping(), this.#timeouts.commandTimeoutMs, () => new Error('ping timeout'));
      return true;
    } catch {
      return false;
    }
  }

  async #evalBatch(
    script: LuaScript,
    shared: readonly (string | number)[],
    items: readonly ScriptItem[],
  ): Promise<unknown[]> {
    const keys = items.flatMap((item) => item.keys);
    const args = [...shared, ...items.flatMap((item) => item.args)];
    let reply: unknown;
    try {
      reply = await this.client.evalsha(script.sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!asError(error).message.includes('NOSCRIPT')) throw error;
      reply = await this.client.eval(script.lua, keys.length, ...keys, ...args);
    }
    if (!Array.isArray(reply)) throw new Error(`${this.label}: ${script.name} returned ${typeof reply}`);
    return reply;
  }

  /** Undefined when commands may be sent now; otherwise the reason this node counts as a "no". */
  async #whenUsable(): Promise<Error | undefined> {
    const status = this.client.status;
    if (status === 'ready') return undefined;
    if (!this.#firstAttemptSettled) {
      this.#firstAttempt ??= this.#awaitFirstConnection();
      await this.#firstAttempt;
      if (this.client.status === 'ready') return undefined;
    }
    return new Error(`${this.label} is not connected (${this.client.status})`);
  }

  /** Waits until the first connection is ready or has failed once, at most `connectTimeoutMs`. */
  async #awaitFirstConnection(): Promise<void> {
    const client = this.client;
    if (client.status === 'wait') client.connect().catch(() => undefined);
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        client.off('ready', done);
        client.off('close', done);
        client.off('end', done);
        resolve();
      };
      const timer = setTimeout(done, this.#timeouts.connectTimeoutMs);
      timer.unref();
      client.on('ready', done);
      client.on('close', done);
      client.on('end', done);
    });
    this.#firstAttemptSettled = true;
  }

  #timeoutError(script: LuaScript): Error {
    return new Error(
      `${this.label}: ${script.name} got no answer within ${this.#timeouts.commandTimeoutMs} ms`,
    );
  }
}

function labelOf(client: RedisClient, index: number): string {
  // A Cluster keeps its seed nodes private; its position in the node list names it well enough.
  if (client.isCluster) return `cluster#${index}`;
  const options = (client as Redis).options;
  if (options.path) return options.path;
  return `${options.host ?? 'localhost'}:${options.port ?? 6379}`;
}

export function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

/** Races `promise` against a timer; the timer is always cleared so nothing keeps the loop alive. */
export function withTimeout<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  // A late rejection of the raced promise must not become an unhandled rejection.
  promise.catch(() => undefined);
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
