import type { Cluster, Redis } from 'ioredis';
import type { LuaScript, ScriptItem } from './script.ts';

/** What users pass: ordinary ioredis clients, one per independent node (a Cluster counts as one node). */
export type RedisClient = Redis | Cluster;

/**
 * A node's answer to one batched call: a reply per lock (an Error where that lock's part failed alone,
 * as on a Cluster), or why the node counts as a "no" for all of them.
 */
export type NodeReply =
  | { readonly ok: true; readonly replies: unknown[] }
  | { readonly ok: false; readonly error: Error };

/**
 * How many locks may wait in unanswered calls to one node before further calls are refused (a hung
 * node then holds about 10 MB, not memory that grows with every message). Far above what a healthy
 * node has in flight: one call per batch and step, answered within a millisecond or so.
 */
export const MAX_UNANSWERED_LOCKS = 5_000;

/**
 * Locks per EVALSHA: a larger call is split into calls of this size, sent back to back on the same
 * connection (so still about one round trip). Far above a received batch (10); it bounds the arguments
 * of one call (a few thousand) and how long one script blocks the node (well under a millisecond).
 * It must stay well below Lua's unpack() limit (about 8,000 values on Redis 7): the scripts pass a
 * call's keys to one MGET, EXISTS or DEL through unpack.
 */
export const MAX_LOCKS_PER_CALL = 500;

function chunksOf<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

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
  /**
   * True once the client has been ready, or its first connection attempt failed: from then on a client
   * that is not ready counts as a "no" at once (a reconnect is not a cold start).
   */
  #firstAttemptSettled: boolean;
  #firstAttempt: Promise<void> | undefined;
  /** Releases waiting for the client to connect again (see sendWhenReconnected), and their lock count. */
  #afterReconnect: {
    script: LuaScript;
    shared: readonly (string | number)[];
    items: readonly ScriptItem[];
    until: number;
  }[] = [];
  #afterReconnectLocks = 0;
  /** Locks in calls sent to this node and not answered yet. */
  #unanswered = 0;

  constructor(client: RedisClient, index: number, timeouts: NodeTimeouts) {
    this.client = client;
    this.label = labelOf(client, index);
    this.#timeouts = timeouts;
    this.#firstAttemptSettled = client.status === 'ready' || client.status === 'end';
    // Ready once is connected once, used or not: its first reconnect is no cold start to wait for.
    if (!this.#firstAttemptSettled) {
      client.once('ready', () => {
        this.#firstAttemptSettled = true;
      });
    }
  }

  /** Locks in calls sent to this node and not answered yet: grows only while it is slow or not answering. */
  get backlog(): number {
    return this.#unanswered;
  }

  /** Commands may be sent now, and answers are bounded by the caller's shared deadline. */
  get isReady(): boolean {
    return this.client.status === 'ready';
  }

  /**
   * Sends `script` over all `items` in one round trip (one per key slot on a Cluster). No timeout of
   * its own (the caller bounds it) and never rejects: a failure is a "no".
   *
   * A node that stops answering with its connection open (SIGSTOP, a partition without a reset) would
   * otherwise collect every call in the client's queue until it answers: once MAX_UNANSWERED_LOCKS locks
   * are in calls it has not answered, a call is refused at once instead, so memory stays bounded.
   */
  send(
    script: LuaScript,
    shared: readonly (string | number)[],
    items: readonly ScriptItem[],
  ): Promise<NodeReply> {
    if (items.length === 0) return Promise.resolve({ ok: true, replies: [] });
    // Refused only once the node owes the bound already: a call of any size still goes to a node that
    // answers (the extender renews every held lock in one call), and memory stays within the bound plus
    // one call.
    if (this.#unanswered >= MAX_UNANSWERED_LOCKS) {
      return Promise.resolve({
        ok: false,
        error: new Error(
          `${this.label}: not sent: ${this.#unanswered} locks wait for this node's answer (it is not answering)`,
        ),
      });
    }
    this.#unanswered += items.length;
    // The common case, one chunk on a plain node: no per-chunk bookkeeping.
    if (!this.client.isCluster && items.length <= MAX_LOCKS_PER_CALL) {
      return this.#evalChunk(script, shared, items).then((answer): NodeReply => {
        this.#unanswered -= items.length;
        return 'error' in answer ? { ok: false, error: answer.error } : { ok: true, replies: answer.replies };
      });
    }
    // Chunks are written back to back on one connection: still one round trip, but no call has more
    // arguments than the client and Redis can take (a spread of 100k arguments throws a RangeError). A
    // Cluster answers each lock on its own (its keys may live on another shard): one that fails (a
    // CROSSSLOT lock) fails alone, as an Error in its place, never the node's whole answer.
    const chunks = this.client.isCluster ? items.map((item) => [item]) : chunksOf(items, MAX_LOCKS_PER_CALL);
    const calls = chunks.map((chunk) => this.#evalChunk(script, shared, chunk));
    // Settled once every chunk answered, so the backlog count is given back exactly then.
    return Promise.all(calls).then((answers): NodeReply => {
      this.#unanswered -= items.length;
      const errors = answers.flatMap((a) => ('error' in a ? [a.error] : []));
      if (errors.length === answers.length) return { ok: false, error: errors[0] as Error };
      const replies = answers.flatMap((a, c) =>
        'error' in a ? (chunks[c] ?? []).map(() => a.error) : a.replies,
      );
      return { ok: true, replies };
    });
  }

  /**
   * Like {@link send}, bounded by the command timeout, and for a client still making its first
   * connection, after waiting for it (a cold start is not a "no").
   */
  async run(
    script: LuaScript,
    shared: readonly (string | number)[],
    items: readonly ScriptItem[],
  ): Promise<NodeReply> {
    if (items.length === 0) return { ok: true, replies: [] };
    // Never rejects: callers fire and forget it (rollbacks), and a rejection there would be unhandled.
    try {
      const notReady = await this.#whenUsable();
      if (notReady) return { ok: false, error: notReady };
      const own = deadline(this.#timeouts.commandTimeoutMs);
      try {
        const reply = await Promise.race([this.send(script, shared, items), own.expired]);
        return reply === TIMED_OUT ? this.timedOut(script) : reply;
      } finally {
        own.clear();
      }
    } catch (error) {
      return { ok: false, error: asError(error) };
    }
  }

  timedOut(script: LuaScript): NodeReply {
    return {
      ok: false,
      error: new Error(
        `${this.label}: ${script.name} got no answer within ${this.#timeouts.commandTimeoutMs} ms`,
      ),
    };
  }

  /**
   * Resolves true once the client is ready (at once if it is), false if it ended or `signal` aborted
   * first. A client that is reconnecting is waited for through its failed attempts; a lazy client that
   * never connected is told to. Never rejects.
   */
  whenReady(signal: AbortSignal): Promise<boolean> {
    const client = this.client;
    if (client.status === 'ready') return Promise.resolve(true);
    if (client.status === 'end' || signal.aborted) return Promise.resolve(false);
    if (client.status === 'wait') client.connect().catch(() => undefined);
    return new Promise<boolean>((resolve) => {
      const settle = (ready: boolean): void => {
        client.off('ready', onReady);
        client.off('end', onEnd);
        signal.removeEventListener('abort', onAbort);
        resolve(ready);
      };
      const onReady = (): void => settle(true);
      const onEnd = (): void => settle(false);
      const onAbort = (): void => settle(client.status === 'ready');
      client.on('ready', onReady);
      client.on('end', onEnd);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Not connected now, after it was once: its client reconnects (and may resend what was unanswered). */
  get isReconnecting(): boolean {
    const status = this.client.status;
    return this.#firstAttemptSettled && status !== 'ready' && status !== 'end';
  }

  /**
   * Sends `script` once the client is connected again, if that happens within `withinMs`; fire and
   * forget. For releases: ioredis resends, on reconnecting, the calls the node never answered (an
   * acquire decided without it), before it emits 'ready'; a release sent on 'ready' queues behind them
   * and undoes them, instead of leaving a lock nobody owns until its TTL. At most MAX_UNANSWERED_LOCKS
   * locks wait (past that, the locks are left to their TTL).
   */
  sendWhenReconnected(
    script: LuaScript,
    shared: readonly (string | number)[],
    items: readonly ScriptItem[],
    withinMs: number,
  ): void {
    if (items.length === 0 || withinMs <= 0) return;
    if (this.#afterReconnectLocks + items.length > MAX_UNANSWERED_LOCKS) return;
    this.#afterReconnect.push({ script, shared, items, until: performance.now() + withinMs });
    this.#afterReconnectLocks += items.length;
    if (this.#afterReconnect.length > 1) return;
    const client = this.client;
    const flush = (): void => {
      client.off('ready', flush);
      client.off('end', flush);
      const due = this.#afterReconnect;
      this.#afterReconnect = [];
      this.#afterReconnectLocks = 0;
      if (client.status !== 'ready') return;
      const now = performance.now();
      for (const call of due) if (call.until > now) void this.run(call.script, call.shared, call.items);
    };
    client.on('ready', flush);
    client.on('end', flush);
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

  /** One call over `chunk`: its replies, or why it failed (never rejects). */
  #evalChunk(
    script: LuaScript,
    shared: readonly (string | number)[],
    chunk: readonly ScriptItem[],
  ): Promise<{ replies: unknown[] } | { error: Error }> {
    let call: Promise<unknown[]>;
    try {
      call = this.#evalBatch(script, shared, chunk);
    } catch (error) {
      call = Promise.reject(error);
    }
    return call.then(
      (replies) =>
        replies.length === chunk.length
          ? { replies }
          : {
              error: new Error(`${this.label}: ${script.name} answered ${replies.length} of ${chunk.length}`),
            },
      (error: unknown) => ({ error: asError(error) }),
    );
  }

  #evalBatch(
    script: LuaScript,
    shared: readonly (string | number)[],
    items: readonly ScriptItem[],
  ): Promise<unknown[]> {
    // One flat array, keys then arguments: ioredis flattens an array argument, so nothing is spread.
    const argv: (string | number)[] = [];
    for (const item of items) for (const key of item.keys) argv.push(key);
    const numKeys = argv.length;
    for (const arg of shared) argv.push(arg);
    for (const item of items) for (const arg of item.args) argv.push(arg);
    const asArray = (reply: unknown): unknown[] => {
      if (!Array.isArray(reply)) throw new Error(`${this.label}: ${script.name} returned ${typeof reply}`);
      return reply;
    };
    return this.client.evalsha(script.sha, numKeys, argv as string[]).then(asArray, (error: unknown) => {
      // The node restarted or flushed its script cache: send the source once, it is cached again. The
      // EVAL goes out a round trip after the EVALSHA, so commands written meanwhile run before it. What
      // that can reorder is harmless by design: each acquire attempt has its own owner value (redlock.ts),
      // so a rollback run out of order touches only its own attempt's lock (which then lingers until
      // its TTL), and every later call on a lock checks its owner value.
      if (!asError(error).message.includes('NOSCRIPT')) throw error;
      return this.client.eval(script.lua, numKeys, argv as string[]).then(asArray);
    });
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
}

function labelOf(client: RedisClient, index: number): string {
  // A Cluster keeps its seed nodes private; its position in the node list names it well enough.
  if (client.isCluster) return `cluster#${index}`;
  const options = (client as Redis).options;
  if (options.path) return options.path;
  return `${options.host ?? 'localhost'}:${options.port ?? 6379}`;
}

export const TIMED_OUT = Symbol('timed out');

/** One timer shared by the calls of a broadcast, instead of one per node. */
export interface Deadline {
  readonly expired: Promise<typeof TIMED_OUT>;
  clear(): void;
}

export function deadline(ms: number): Deadline {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<typeof TIMED_OUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMED_OUT), ms);
  });
  return { expired, clear: () => clearTimeout(timer) };
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
