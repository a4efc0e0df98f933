import type { EventEmitter } from 'node:events';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { QuorumStatus, Redlock, RedlockEvents } from '../lock/redlock.ts';
import type { WorkerState } from '../runtime/worker.ts';
import type { WorkerEvents } from './events.ts';

/**
 * The outcome label of `sqs_redlock_messages_total`: one per received message, from the worker's
 * events (`released`: made visible again without running, for FIFO order or at shutdown).
 */
export type MessageOutcomeLabel =
  | 'processed'
  | 'duplicate'
  | 'contended'
  | 'quorum_unavailable'
  | 'poison'
  | 'failed'
  | 'lock_lost'
  | 'released';

/** The worker event counted under each outcome label. */
export const OUTCOME_EVENTS = {
  processed: 'message_processed',
  duplicate: 'duplicate_skipped',
  contended: 'lock_contended',
  quorum_unavailable: 'quorum_unavailable',
  poison: 'poison_message',
  failed: 'handler_error',
  lock_lost: 'lock_lost',
  released: 'message_released',
} as const satisfies Record<MessageOutcomeLabel, keyof WorkerEvents>;

/** What the metrics read from a worker: its typed events, and its state on scrape. */
export interface MetricsWorker {
  on<K extends keyof WorkerEvents>(event: K, listener: (...args: WorkerEvents[K]) => void): unknown;
  off<K extends keyof WorkerEvents>(event: K, listener: (...args: WorkerEvents[K]) => void): unknown;
  readonly state?: WorkerState;
}

/** What the metrics read from a Redlock (a structural subset, so tests can pass a fake). */
export type MetricsRedlock = Pick<Redlock, 'heldLocks' | 'quorum' | 'quorumStatus'> &
  Pick<EventEmitter<RedlockEvents>, 'on' | 'off'>;

export interface MetricsOptions {
  /**
   * Where the metrics are registered. One registry per worker: the global one of prom-client is not
   * used, so two workers (or two tests) in one process never collide.
   * @defaultValue a new Registry
   */
  registry?: Registry;
  /**
   * Also collect prom-client's default process metrics (CPU, memory, event-loop lag, GC) into the
   * registry.
   * @defaultValue false
   */
  defaultMetrics?: boolean;
  /**
   * How long the answer of one Redis PING round (`quorumStatus()`) is reused, in ms. The gauges of
   * one scrape always share a round.
   * @defaultValue 1000
   */
  quorumCacheMs?: number;
}

/** The worker's Prometheus metrics, in their own registry. */
export interface Metrics {
  readonly registry: Registry;
  /** `sqs_redlock_messages_total{outcome}`: messages by outcome. */
  readonly messages: Counter<'outcome'>;
  /** `sqs_redlock_lock_acquire_seconds`: duration of each batched lock acquisition (one per batch). */
  readonly lockAcquireSeconds: Histogram;
  /** `sqs_redlock_handler_seconds`: handler time of each processed message. */
  readonly handlerSeconds: Histogram;
  /**
   * `sqs_redlock_locks_lost_total{reason}`: held locks lost (Redlock `lock_lost` events). A lock that
   * only expired is counted once its message settled otherwise than processed (a late success that was
   * taken back and completed is no loss), or after {@link EXPIRED_LOSS_WAIT_MS} if no message of the
   * worker settles under it.
   */
  readonly locksLost: Counter<'reason'>;
  /**
   * `sqs_redlock_sqs_errors_total{operation}`: failed SQS calls and refused batch entries (`receive`,
   * `delete`, `change_visibility`, `heartbeat_visibility`, `dead_letter`).
   */
  readonly sqsErrors: Counter<'operation'>;
  /** `sqs_redlock_redis_nodes_up`: nodes answering PING, on scrape. */
  readonly redisNodesUp: Gauge;
  /** `sqs_redlock_redis_node_up{node}`: 1 per node answering PING, 0 otherwise, on scrape. */
  readonly redisNodeUp: Gauge<'node'>;
  /** `sqs_redlock_redis_quorum`: how many nodes a lock needs. */
  readonly redisQuorum: Gauge;
  /** `sqs_redlock_locks_held`: locks this process holds, on scrape. */
  readonly locksHeld: Gauge;
  /** `sqs_redlock_polling_paused`: 1 while polling is paused for lack of a Redis quorum. */
  readonly pollingPaused: Gauge;
  /**
   * Subscribes to the worker's events (and, given, the Redlock's) and reads the gauges from them on
   * scrape. One worker per Metrics. Returns a function that detaches everything.
   */
  attach(worker: MetricsWorker, redlock?: MetricsRedlock): () => void;
}

const HANDLER_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const ACQUIRE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Creates the metrics of one worker in a dedicated registry; {@link Metrics.attach} feeds them. */
export function createMetrics(options: MetricsOptions = {}): Metrics {
  const registry = options.registry ?? new Registry();
  const quorumCacheMs = options.quorumCacheMs ?? 1_000;
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry });
  const registers = [registry];

  let source: { worker: MetricsWorker; redlock: MetricsRedlock | undefined } | undefined;
  // One PING round serves every gauge of a scrape (and scrapes closer together than the cache).
  let cached: { at: number; settled: boolean; status: Promise<QuorumStatus | undefined> } | undefined;
  const quorumStatus = (): Promise<QuorumStatus | undefined> => {
    const redlock = source?.redlock;
    if (!redlock) return Promise.resolve(undefined);
    const now = performance.now();
    if (!cached || (cached.settled && now - cached.at >= quorumCacheMs)) {
      const entry = {
        at: now,
        settled: false,
        status: redlock.quorumStatus().catch(() => undefined),
      };
      void entry.status.then(() => {
        entry.settled = true;
        entry.at = performance.now();
      });
      cached = entry;
    }
    return cached.status;
  };

  const messages = new Counter({
    name: 'sqs_redlock_messages_total',
    help: 'Messages received, by outcome (processed, duplicate, contended, quorum_unavailable, poison, failed, lock_lost, released).',
    labelNames: ['outcome'] as const,
    registers,
  });
  for (const outcome of Object.keys(OUTCOME_EVENTS)) messages.inc({ outcome }, 0);

  const lockAcquireSeconds = new Histogram({
    name: 'sqs_redlock_lock_acquire_seconds',
    help: 'Time to acquire the locks of one batch (one round trip per Redis node per attempt), in seconds.',
    buckets: ACQUIRE_BUCKETS,
    registers,
  });
  const handlerSeconds = new Histogram({
    name: 'sqs_redlock_handler_seconds',
    help: 'Handler time of each processed message, in seconds.',
    buckets: HANDLER_BUCKETS,
    registers,
  });
  const locksLost = new Counter({
    name: 'sqs_redlock_locks_lost_total',
    help: 'Held locks lost before they were released or completed, by reason (expired, not_owner); a late success taken back and completed is not counted.',
    labelNames: ['reason'] as const,
    registers,
    collect() {
      losses.flushStale();
    },
  });
  const losses = new LossLedger((reason) => locksLost.inc({ reason }));
  const sqsErrors = new Counter({
    name: 'sqs_redlock_sqs_errors_total',
    help: 'Failed SQS calls and batch entries SQS refused, by operation (receive, delete, change_visibility, heartbeat_visibility, dead_letter).',
    labelNames: ['operation'] as const,
    registers,
  });
  const redisNodesUp = new Gauge({
    name: 'sqs_redlock_redis_nodes_up',
    help: 'Redis nodes of the lock quorum answering PING within the command timeout.',
    registers,
    async collect() {
      const status = await quorumStatus();
      if (status) this.set(status.up.length);
      else this.reset();
    },
  });
  const redisNodeUp = new Gauge({
    name: 'sqs_redlock_redis_node_up',
    help: 'Whether each Redis node of the lock quorum answers PING within the command timeout (1) or not (0).',
    labelNames: ['node'] as const,
    registers,
    async collect() {
      const status = await quorumStatus();
      this.reset();
      for (const node of status?.up ?? []) this.set({ node }, 1);
      for (const node of status?.down ?? []) this.set({ node }, 0);
    },
  });
  const redisQuorum = new Gauge({
    name: 'sqs_redlock_redis_quorum',
    help: 'Redis nodes a lock needs (a majority of the nodes).',
    registers,
    collect() {
      if (source?.redlock) this.set(source.redlock.quorum);
      else this.reset();
    },
  });
  const locksHeld = new Gauge({
    name: 'sqs_redlock_locks_held',
    help: 'Locks this process holds now.',
    registers,
    collect() {
      if (source?.redlock) this.set(source.redlock.heldLocks.length);
      else this.reset();
    },
  });
  const pollingPaused = new Gauge({
    name: 'sqs_redlock_polling_paused',
    help: 'Whether polling is paused because no Redis quorum answers (1) or not (0).',
    registers,
    collect() {
      this.set(source?.worker.state === 'paused' ? 1 : 0);
    },
  });

  const attach = (worker: MetricsWorker, redlock?: MetricsRedlock): (() => void) => {
    if (source) {
      throw new Error('createMetrics(): already attached; create one Metrics (and registry) per worker');
    }
    source = { worker, redlock };
    cached = undefined;
    const undo: (() => void)[] = [];
    const listen = <K extends keyof WorkerEvents>(
      event: K,
      listener: (...args: WorkerEvents[K]) => void,
    ): void => {
      worker.on(event, listener);
      undo.push(() => worker.off(event, listener));
    };

    for (const [outcome, event] of Object.entries(OUTCOME_EVENTS)) {
      listen(event, () => messages.inc({ outcome }));
    }
    listen('message_processed', ({ durationMs }) => handlerSeconds.observe(durationMs / 1000));
    listen('sqs_error', ({ operation }) => sqsErrors.inc({ operation }));
    listen('batch_locked', ({ durationMs }) => lockAcquireSeconds.observe(durationMs / 1000));

    if (redlock) {
      const onLost = ({ key, fencingToken, error }: RedlockEvents['lock_lost'][0]): void => {
        losses.lost(key, fencingToken, error?.reason ?? 'unknown');
      };
      redlock.on('lock_lost', onLost);
      undo.push(() => redlock.off('lock_lost', onLost));
      // A message's outcome tells whether an expired lock was taken back and completed after all.
      listen('message_processed', ({ lockKey, fencingToken }) => losses.completed(lockKey, fencingToken));
      listen('lock_lost', ({ lockKey, fencingToken, error }) =>
        losses.settled(
          lockKey,
          fencingToken,
          (error as { reason?: string } | undefined)?.reason ?? 'unknown',
        ),
      );
      listen('handler_error', ({ lockKey, fencingToken }) => losses.settled(lockKey, fencingToken));
      listen('message_released', ({ lockKey }) => losses.settled(lockKey));
    }

    let attached = true;
    return () => {
      if (!attached) return;
      attached = false;
      for (const fn of undo.reverse()) fn();
      source = undefined;
      cached = undefined;
    };
  };

  return {
    registry,
    messages,
    lockAcquireSeconds,
    handlerSeconds,
    locksLost,
    sqsErrors,
    redisNodesUp,
    redisNodeUp,
    redisQuorum,
    locksHeld,
    pollingPaused,
    attach,
  };
}

/**
 * How long an expired lock whose message never settled is left uncounted: its holder may still
 * succeed late and complete it. Past this, it is counted (a lock of your own on the same Redlock).
 */
export const EXPIRED_LOSS_WAIT_MS = 15 * 60_000;
/** Bounds the memory of the losses waiting for their message's outcome, and of those counted. */
const MAX_TRACKED_LOSSES = 10_000;

/**
 * Counts each lost lock once: a loss for any reason but expiry at once; an expiry when its message's
 * outcome shows it was not completed (a late success that no one claimed is taken back and completed:
 * no loss). A worker `lock_lost` that the Redlock never reported is counted too.
 */
class LossLedger {
  readonly #count: (reason: string) => void;
  /** Expired locks waiting for their message's outcome, by `key\ntoken`. */
  readonly #expired = new Map<
    string,
    { readonly key: string; readonly reason: string; readonly at: number }
  >();
  /** Losses already counted, so the other report of the same loss is not counted again. */
  readonly #counted = new Set<string>();

  constructor(count: (reason: string) => void) {
    this.#count = count;
  }

  /** The Redlock reported the lock lost. */
  lost(key: string, fencingToken: number, reason: string): void {
    const id = lossId(key, fencingToken);
    if (this.#counted.has(id) || this.#expired.has(id)) return;
    if (reason !== 'expired') {
      this.#countNow(id, reason);
      return;
    }
    this.#expired.set(id, { key, reason, at: performance.now() });
    if (this.#expired.size > MAX_TRACKED_LOSSES) {
      const [oldest] = this.#expired.keys();
      if (oldest !== undefined) this.#countExpired(oldest);
    }
  }

  /** The message was processed under this lock: an expiry of it was no loss. */
  completed(key: string, fencingToken: number): void {
    this.#expired.delete(lossId(key, fencingToken));
  }

  /**
   * The message settled otherwise (failed, lost, released): an expiry of its lock counts now; with
   * `reason` (a worker `lock_lost`), so does a loss the Redlock did not report.
   */
  settled(key: string, fencingToken?: number, reason?: string): void {
    if (fencingToken === undefined) {
      for (const [id, entry] of this.#expired) if (entry.key === key) this.#countExpired(id);
      return;
    }
    const id = lossId(key, fencingToken);
    if (this.#expired.has(id)) this.#countExpired(id);
    else if (reason !== undefined && !this.#counted.has(id)) this.#countNow(id, reason);
  }

  /** Counts the expiries that waited longer than {@link EXPIRED_LOSS_WAIT_MS} (on each scrape). */
  flushStale(): void {
    const before = performance.now() - EXPIRED_LOSS_WAIT_MS;
    for (const [id, entry] of this.#expired) if (entry.at <= before) this.#countExpired(id);
  }

  #countExpired(id: string): void {
    const entry = this.#expired.get(id);
    if (!entry) return;
    this.#expired.delete(id);
    this.#countNow(id, entry.reason);
  }

  #countNow(id: string, reason: string): void {
    this.#counted.add(id);
    if (this.#counted.size > MAX_TRACKED_LOSSES) {
      const [oldest] = this.#counted;
      if (oldest !== undefined) this.#counted.delete(oldest);
    }
    this.#count(reason);
  }
}

function lossId(key: string, fencingToken: number): string {
  return `${key}\n${fencingToken}`;
}
