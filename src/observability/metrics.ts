import type { EventEmitter } from 'node:events';
import {
  type BatchObservableResult,
  type Meter,
  type ObservableGauge,
  type Counter as OtelCounter,
  type Histogram as OtelHistogram,
  metrics as otelMetrics,
} from '@opentelemetry/api';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { OutcomeKind } from '../handler/outcome.ts';
import type { QuorumStatus, Redlock, RedlockEvents } from '../lock/redlock.ts';
import type { WorkerState } from '../runtime/worker.ts';
import type { WorkerEvents } from './events.ts';
import { INSTRUMENTATION_SCOPE, SRW } from './semconv.ts';

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

/** The outcome label of each pipeline outcome (a message skipped or aborted at shutdown is `released`). */
export const OUTCOME_LABELS = {
  processed: 'processed',
  duplicate: 'duplicate',
  contended: 'contended',
  quorum: 'quorum_unavailable',
  poison: 'poison',
  failed: 'failed',
  lock_lost: 'lock_lost',
  skipped: 'released',
  aborted: 'released',
} as const satisfies Record<OutcomeKind, MessageOutcomeLabel>;

/**
 * The OpenTelemetry names of the same facts as the Prometheus metrics, recorded through the
 * `@opentelemetry/api` meter beside them (see {@link MetricsOptions.meter}). The conventions' own
 * messaging metrics (`messaging.process.duration`, ...) come with the spans (src/observability/tracing.ts).
 */
export const OTEL_METRICS = {
  /** Counter {message}, `sqs_redlock.outcome`: `sqs_redlock_messages_total`. */
  messages: 'sqs_redlock.messages',
  /** Histogram s, per batch: `sqs_redlock_lock_acquire_seconds`. */
  lockAcquireDuration: 'sqs_redlock.lock.acquire.duration',
  /** Histogram s: `sqs_redlock_handler_seconds`. */
  handlerDuration: 'sqs_redlock.handler.duration',
  /** Counter {lock}, `sqs_redlock.lock.lost_reason`: `sqs_redlock_locks_lost_total`. */
  locksLost: 'sqs_redlock.locks.lost',
  /** Counter {message}: `sqs_redlock_dead_lettered_total`. */
  deadLettered: 'sqs_redlock.dead_lettered',
  /** Counter {error}, `sqs_redlock.sqs.operation`: `sqs_redlock_sqs_errors_total`. */
  sqsErrors: 'sqs_redlock.sqs.errors',
  /** Gauge {lock}: `sqs_redlock_locks_held`. */
  locksHeld: 'sqs_redlock.locks.held',
  /** Gauge {node}: `sqs_redlock_redis_nodes_up`. */
  redisNodesUp: 'sqs_redlock.redis.nodes.up',
  /** Gauge, 1 or 0 per `sqs_redlock.redis.node`: `sqs_redlock_redis_node_up`. */
  redisNodeUp: 'sqs_redlock.redis.node.up',
  /** Gauge {node}: `sqs_redlock_redis_quorum`. */
  redisQuorum: 'sqs_redlock.redis.quorum',
  /** Gauge, 1 or 0: `sqs_redlock_polling_paused`. */
  pollingPaused: 'sqs_redlock.polling.paused',
} as const;

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
  /**
   * Where the OpenTelemetry twins of these metrics ({@link OTEL_METRICS}) are recorded: the same events
   * feed both. Taken at `attach()`. Pass `createNoopMeter()` (from `@opentelemetry/api`) for Prometheus only.
   * @defaultValue the global MeterProvider's meter `sqs-redlock-worker` (a no-op until an SDK registers one)
   */
  meter?: Meter;
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
  /** `sqs_redlock_dead_lettered_total`: poison messages this worker sent to the dead-letter queue. */
  readonly deadLettered: Counter;
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

  // What the gauges read on scrape, for Prometheus and OpenTelemetry alike.
  const read = {
    quorum: (): number | undefined => source?.redlock?.quorum,
    locksHeld: (): number | undefined => source?.redlock?.heldLocks.length,
    pollingPaused: (): number => (source?.worker.state === 'paused' ? 1 : 0),
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
  // Set while attached: the OpenTelemetry twins, fed by the same listeners and readings as Prometheus.
  let otel: OtelInstruments | undefined;
  const losses = new LossLedger((reason) => {
    locksLost.inc({ reason });
    otel?.locksLost.add(1, { [SRW.lostReason]: reason });
  });
  const deadLettered = new Counter({
    name: 'sqs_redlock_dead_lettered_total',
    help: 'Poison messages this worker sent to the dead-letter queue (messages SQS moves there after maxReceiveCount are not seen here).',
    registers,
  });
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
      const quorum = read.quorum();
      if (quorum === undefined) this.reset();
      else this.set(quorum);
    },
  });
  const locksHeld = new Gauge({
    name: 'sqs_redlock_locks_held',
    help: 'Locks this process holds now.',
    registers,
    collect() {
      const held = read.locksHeld();
      if (held === undefined) this.reset();
      else this.set(held);
    },
  });
  const pollingPaused = new Gauge({
    name: 'sqs_redlock_polling_paused',
    help: 'Whether polling is paused because no Redis quorum answers (1) or not (0).',
    registers,
    collect() {
      this.set(read.pollingPaused());
    },
  });

  const attach = (worker: MetricsWorker, redlock?: MetricsRedlock): (() => void) => {
    if (source) {
      throw new Error('createMetrics(): already attached; create one Metrics (and registry) per worker');
    }
    source = { worker, redlock };
    cached = undefined;
    const twins = otelInstruments(options.meter ?? otelMetrics.getMeter(INSTRUMENTATION_SCOPE));
    otel = twins;
    const undo: (() => void)[] = [];
    const listen = <K extends keyof WorkerEvents>(
      event: K,
      listener: (...args: WorkerEvents[K]) => void,
    ): void => {
      worker.on(event, listener);
      undo.push(() => worker.off(event, listener));
    };

    // Each listener feeds Prometheus and OpenTelemetry: one source for both.
    for (const [outcome, event] of Object.entries(OUTCOME_EVENTS)) {
      const attributes = { [SRW.outcome]: outcome };
      listen(event, () => {
        messages.inc({ outcome });
        twins.messages.add(1, attributes);
      });
    }
    listen('message_processed', ({ durationMs }) => {
      handlerSeconds.observe(durationMs / 1000);
      twins.handlerDuration.record(durationMs / 1000);
    });
    listen('poison_message', ({ deadLettered: sent }) => {
      if (!sent) return;
      deadLettered.inc();
      twins.deadLettered.add(1);
    });
    listen('sqs_error', ({ operation }) => {
      sqsErrors.inc({ operation });
      twins.sqsErrors.add(1, { [SRW.sqsOperation]: operation });
    });
    listen('batch_locked', ({ durationMs }) => {
      lockAcquireSeconds.observe(durationMs / 1000);
      twins.lockAcquireDuration.record(durationMs / 1000);
    });
    const observe = async (result: BatchObservableResult): Promise<void> => {
      losses.flushStale();
      result.observe(twins.pollingPaused, read.pollingPaused());
      const quorum = read.quorum();
      const held = read.locksHeld();
      if (quorum !== undefined) result.observe(twins.redisQuorum, quorum);
      if (held !== undefined) result.observe(twins.locksHeld, held);
      const status = await quorumStatus();
      if (!status) return;
      result.observe(twins.redisNodesUp, status.up.length);
      for (const node of status.up) result.observe(twins.redisNodeUp, 1, { [SRW.node]: node });
      for (const node of status.down) result.observe(twins.redisNodeUp, 0, { [SRW.node]: node });
    };
    twins.meter.addBatchObservableCallback(observe, twins.gauges);
    undo.push(() => twins.meter.removeBatchObservableCallback(observe, twins.gauges));

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
      otel = undefined;
    };
  };

  return {
    registry,
    messages,
    lockAcquireSeconds,
    handlerSeconds,
    locksLost,
    deadLettered,
    sqsErrors,
    redisNodesUp,
    redisNodeUp,
    redisQuorum,
    locksHeld,
    pollingPaused,
    attach,
  };
}

interface OtelInstruments {
  readonly meter: Meter;
  readonly messages: OtelCounter;
  readonly lockAcquireDuration: OtelHistogram;
  readonly handlerDuration: OtelHistogram;
  readonly locksLost: OtelCounter;
  readonly deadLettered: OtelCounter;
  readonly sqsErrors: OtelCounter;
  readonly locksHeld: ObservableGauge;
  readonly redisNodesUp: ObservableGauge;
  readonly redisNodeUp: ObservableGauge;
  readonly redisQuorum: ObservableGauge;
  readonly pollingPaused: ObservableGauge;
  /** The gauges, observed by one callback per scrape (one PING round for all of them). */
  readonly gauges: ObservableGauge[];
}

/** The OpenTelemetry twins of the Prometheus metrics: same buckets, same meaning ({@link OTEL_METRICS}). */
function otelInstruments(meter: Meter): OtelInstruments {
  const seconds = (name: string, description: string, buckets: number[]): OtelHistogram =>
    meter.createHistogram(name, { description, unit: 's', advice: { explicitBucketBoundaries: buckets } });
  const gauge = (name: string, description: string, unit: string): ObservableGauge =>
    meter.createObservableGauge(name, { description, unit });
  const instruments = {
    meter,
    messages: meter.createCounter(OTEL_METRICS.messages, {
      description: 'Messages received, by outcome (sqs_redlock.outcome).',
      unit: '{message}',
    }),
    lockAcquireDuration: seconds(
      OTEL_METRICS.lockAcquireDuration,
      'Time to acquire the locks of one batch.',
      ACQUIRE_BUCKETS,
    ),
    handlerDuration: seconds(
      OTEL_METRICS.handlerDuration,
      'Handler time of each processed message.',
      HANDLER_BUCKETS,
    ),
    locksLost: meter.createCounter(OTEL_METRICS.locksLost, {
      description: 'Held locks lost before they were released or completed, by sqs_redlock.lock.lost_reason.',
      unit: '{lock}',
    }),
    deadLettered: meter.createCounter(OTEL_METRICS.deadLettered, {
      description: 'Poison messages this worker sent to the dead-letter queue.',
      unit: '{message}',
    }),
    sqsErrors: meter.createCounter(OTEL_METRICS.sqsErrors, {
      description: 'Failed SQS calls and batch entries SQS refused, by sqs_redlock.sqs.operation.',
      unit: '{error}',
    }),
    locksHeld: gauge(OTEL_METRICS.locksHeld, 'Locks this process holds now.', '{lock}'),
    redisNodesUp: gauge(
      OTEL_METRICS.redisNodesUp,
      'Redis nodes of the lock quorum answering PING.',
      '{node}',
    ),
    redisNodeUp: gauge(OTEL_METRICS.redisNodeUp, 'Whether each Redis node answers PING (1) or not (0).', '1'),
    redisQuorum: gauge(OTEL_METRICS.redisQuorum, 'Redis nodes a lock needs.', '{node}'),
    pollingPaused: gauge(OTEL_METRICS.pollingPaused, 'Whether polling is paused for lack of a quorum.', '1'),
  };
  return {
    ...instruments,
    gauges: [
      instruments.locksHeld,
      instruments.redisNodesUp,
      instruments.redisNodeUp,
      instruments.redisQuorum,
      instruments.pollingPaused,
    ],
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
