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
  /** `sqs_redlock_locks_lost_total{reason}`: held locks lost (Redlock `lock_lost` events). */
  readonly locksLost: Counter<'reason'>;
  /** `sqs_redlock_sqs_errors_total{operation}`: failed SQS calls. */
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
    help: 'Held locks lost before they were released or completed, by reason (expired, not_owner).',
    labelNames: ['reason'] as const,
    registers,
  });
  const sqsErrors = new Counter({
    name: 'sqs_redlock_sqs_errors_total',
    help: 'Failed SQS calls, by operation.',
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
      const onLost = ({ error }: RedlockEvents['lock_lost'][0]): void => {
        locksLost.inc({ reason: error?.reason ?? 'unknown' });
      };
      redlock.on('lock_lost', onLost);
      undo.push(() => redlock.off('lock_lost', onLost));
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
