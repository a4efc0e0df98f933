/**
 * The soak's worker process (started by soak/soak.ts; not meant to be run by hand). One Worker over a
 * 3-node Redlock consumes the soak queue until SOAK_MESSAGES messages are processed, sampling itself
 * on the way, then stops cleanly and checks that it left nothing behind. Run with `--expose-gc`.
 *
 * Environment: SOAK_REDIS_URLS (comma-separated), SOAK_QUEUE_URL, SOAK_ENDPOINT, SOAK_MESSAGES,
 * SOAK_MARKS (comma-separated processed counts at which to take a checkpoint: the end of warm-up, ...,
 * SOAK_MESSAGES), SOAK_CONCURRENCY, SOAK_TTL_MS, SOAK_WORK_MS, SOAK_SAMPLE_MS, SOAK_SNAPSHOT_DIR (heap
 * snapshots at the warm-up and final checkpoints), SOAK_TIMER_STACKS=1 (see timer-probe.ts).
 *
 * The parent sends exactly up to each mark and waits for its checkpoint before sending more, so every
 * checkpoint is taken idle: after the last message of the segment, a 1 s settle, and global.gc() (a
 * regular, then a memory-reducing one).
 *
 * stdout: one JSON object per line, `type` one of
 *   checkpoint  'start' (clients connected, worker not started), 'warmup', 'cp1'..., 'final': memory
 *               after gc, live objects by constructor (v8.queryObjects), counters, busy time
 *   ready       the worker is polling; `baseline`: timers and resources before anything was created
 *   sample      every SOAK_SAMPLE_MS: memory, event-loop delay since the last sample, active resources,
 *               live timers, listener counts, queued Redis commands, messages processed
 *   summary     after worker.stop() + redlock.quit() + sqs.destroy(): outcome counts, the event-loop
 *               delay of the measured phase, and what is still live (should be the baseline)
 * The process then ends by itself: if it does not, something still holds the event loop.
 */
// First, before any module that might capture setTimeout when it loads (a side-effect import: never reordered).
import './timer-probe.ts';
import { getEventListeners, once } from 'node:events';
import path from 'node:path';
import {
  createHistogram,
  type ELDHistogram,
  monitorEventLoopDelay,
  type RecordableHistogram,
} from 'node:perf_hooks';
import { setTimeout as sleep, setImmediate as yieldToLoop } from 'node:timers/promises';
import v8 from 'node:v8';
import { type Message, SQSClient } from '@aws-sdk/client-sqs';
import { Redis } from 'ioredis';
import { Consumer } from 'sqs-consumer';
import {
  BaseHandler,
  createLogger,
  type HandlerContext,
  Lock,
  Redlock,
  Worker,
  type WorkerEvents,
} from '../src/index.ts';
import { ACQUIRE_SCRIPT } from '../src/lock/acquire.ts';
import { ADOPT_SCRIPT } from '../src/lock/adopt.ts';
import { COMPLETE_SCRIPT } from '../src/lock/complete.ts';
import { EXTEND_SCRIPT } from '../src/lock/extend.ts';
import { RAISE_FENCE_SCRIPT } from '../src/lock/fence.ts';
import { RELEASE_SCRIPT } from '../src/lock/release.ts';
import { MESSAGE_EVENTS } from '../test/helpers/events.ts';
import { liveTimerStacks, liveTimers, type TimerCounts } from './timer-probe.ts';

// ---------------------------------------------------------------------------
// What the parent reads (soak/soak.ts imports these types only)

export interface Memory {
  readonly rss: number;
  readonly heapUsed: number;
  readonly heapTotal: number;
  readonly external: number;
  readonly arrayBuffers: number;
}

export interface DelayStats {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
  readonly count: number;
}

/** Counters that should not grow: resources by type, live timers, listeners by emitter and event. */
export type Counters = Record<string, number>;

export interface Sample {
  readonly type: 'sample';
  /** Seconds since the worker started. */
  readonly t: number;
  readonly processed: number;
  readonly memory: Memory;
  /** Event-loop delay (ms) since the previous sample. */
  readonly eld: DelayStats;
  readonly counters: Counters;
}

export interface Checkpoint {
  readonly type: 'checkpoint';
  /** 'start' (before the worker starts), 'warmup', 'cp1'..., 'final'. */
  readonly label: string;
  readonly t: number;
  readonly processed: number;
  /** Seconds from the previous checkpoint to the last message of this segment (the busy time). */
  readonly busySec: number;
  /** After global.gc(). */
  readonly memory: Memory;
  /** Live objects per constructor (v8.queryObjects, after the gc). */
  readonly objects: Record<string, number>;
  readonly counters: Counters;
  /** How long the object counts (and snapshot) stalled the event loop; excluded from the delays. */
  readonly stallMs: number;
  readonly snapshot?: string;
}

export interface Ready {
  readonly type: 'ready';
  readonly pid: number;
  readonly baseline: Counters;
}

export interface Summary {
  readonly type: 'summary';
  readonly outcomes: Record<string, number>;
  readonly firstProcessedAt: number;
  readonly lastProcessedAt: number;
  /** Event-loop delay (ms) from the end of warm-up to the last message, checkpoint stalls excluded. */
  readonly eld: DelayStats;
  /** After stop, quit and destroy, and a gc: should be the baseline. */
  readonly afterStop: Counters;
  readonly afterStopTimerStacks: { count: number; stack: string }[];
  readonly sqsErrors: string[];
  /** SQS calls by command, and Redis commands by name (EVALSHA by script), over the whole run. */
  readonly sqsCalls: Record<string, number>;
  readonly redisCalls: Record<string, number>;
}

export type Line = Ready | Sample | Checkpoint | Summary;

// ---------------------------------------------------------------------------
// Configuration

function env(name: string, fallback?: string): string {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === '') throw new Error(`soak worker: ${name} is required`);
  return value;
}

function int(name: string, fallback: number): number {
  const value = Number(env(name, String(fallback)));
  if (!Number.isInteger(value) || value < 0) throw new Error(`soak worker: ${name} must be an integer >= 0`);
  return value;
}

const REDIS_URLS = env('SOAK_REDIS_URLS').split(',');
const QUEUE_URL = env('SOAK_QUEUE_URL');
const ENDPOINT = env('SOAK_ENDPOINT');
const MESSAGES = int('SOAK_MESSAGES', 100_000);
/** Processed counts at which to take a checkpoint: the end of warm-up, ..., MESSAGES (consumed as reached). */
const MARKS = env('SOAK_MARKS')
  .split(',')
  .map((m) => Number(m));
if (MARKS.length < 2 || MARKS.some((m, i) => !Number.isInteger(m) || m <= (MARKS[i - 1] ?? 0))) {
  throw new Error('soak worker: SOAK_MARKS must be increasing integers, at least two');
}
if (MARKS[MARKS.length - 1] !== MESSAGES)
  throw new Error('soak worker: the last of SOAK_MARKS must be SOAK_MESSAGES');
const CONCURRENCY = int('SOAK_CONCURRENCY', 4);
const TTL_MS = int('SOAK_TTL_MS', 6_000);
const WORK_MS = int('SOAK_WORK_MS', 0);
const SAMPLE_MS = int('SOAK_SAMPLE_MS', 500);
const SNAPSHOT_DIR = process.env.SOAK_SNAPSHOT_DIR || undefined;
/** Idle time before a checkpoint: in-flight settles end, the pollers go back to their long polls. */
const SETTLE_MS = 1_000;
/** Wait between the two global.gc() calls of a checkpoint. */
const GC_SETTLE_MS = 200;
const ELD_RESOLUTION_MS = 10;

const gc: (options?: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void =
  (globalThis as { gc?: () => void }).gc ??
  (() => {
    throw new Error('soak worker: run with --expose-gc');
  });

function emit(line: Line): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

// ---------------------------------------------------------------------------
// Probes

const MB = 1024 * 1024;

function memory(): Memory {
  const m = process.memoryUsage();
  return {
    rss: m.rss / MB,
    heapUsed: m.heapUsed / MB,
    heapTotal: m.heapTotal / MB,
    external: m.external / MB,
    arrayBuffers: m.arrayBuffers / MB,
  };
}

/** Event-loop delay: how late the monitor's timer fired, i.e. the interval minus the resolution, in ms. */
function delayStats(h: RecordableHistogram | ELDHistogram): DelayStats {
  const ms = (ns: number): number => Math.max(0, ns / 1e6 - ELD_RESOLUTION_MS);
  return h.count === 0
    ? { p50: 0, p99: 0, max: 0, mean: 0, count: 0 }
    : {
        p50: ms(h.percentile(50)),
        p99: ms(h.percentile(99)),
        max: ms(h.max),
        mean: ms(h.mean),
        count: h.count,
      };
}

function resources(): Counters {
  const counts: Counters = {};
  for (const type of process.getActiveResourcesInfo()) {
    counts[`resource.${type}`] = (counts[`resource.${type}`] ?? 0) + 1;
  }
  return counts;
}

function timerCounters(t: TimerCounts): Counters {
  return { 'timers.live': t.live, 'timers.ref': t.ref, 'timers.unref': t.unref };
}

function listenersOf(prefix: string, emitter: NodeJS.EventEmitter): Counters {
  const counts: Counters = { [`${prefix}.total`]: 0 };
  for (const name of emitter.eventNames()) {
    const n = emitter.listenerCount(name);
    counts[`${prefix}.${String(name)}`] = n;
    counts[`${prefix}.total`] = (counts[`${prefix}.total`] ?? 0) + n;
  }
  return counts;
}

/** Listeners and AbortSignal.any dependants of an AbortSignal (the latter through Node internals). */
function signalCounters(prefix: string, signal: AbortSignal): Counters {
  const dependants = Object.getOwnPropertySymbols(signal).find((s) => s.description === 'kDependantSignals');
  const set = dependants
    ? (signal as unknown as Record<symbol, { size?: number } | undefined>)[dependants]
    : undefined;
  return {
    [`${prefix}.abortListeners`]: listenerCountOf(signal),
    [`${prefix}.anyDependants`]: set?.size ?? 0,
  };
}

function listenerCountOf(target: EventTarget): number {
  return getEventListeners(target, 'abort').length;
}

/**
 * Adds what an event-loop delay monitor recorded to `into`, value by value, from its percentile
 * distribution (node cannot add an ELD histogram to a recordable one).
 */
function fold(from: ELDHistogram, into: RecordableHistogram): void {
  let previous = 0;
  let carry = 0;
  for (const [percentile, value] of from.percentiles) {
    carry += ((percentile - previous) / 100) * from.count;
    previous = percentile;
    const n = Math.floor(carry);
    carry -= n;
    for (let i = 0; i < n; i++) into.record(Math.max(1, Math.round(value)));
  }
}

// ---------------------------------------------------------------------------
// The worker

interface Order {
  orderId: string;
  /** Work this long instead of SOAK_WORK_MS (the parent's slow messages). */
  workMs?: number;
}

class SoakHandler extends BaseHandler<Order> {
  hydrate(message: Message): Order | null {
    return JSON.parse(message.Body ?? 'null') as Order | null;
  }

  async handle(input: Order, ctx: HandlerContext): Promise<void> {
    // What a real handler does: look at the signal (AbortSignal.any of lock, visibility, shutdown),
    // log through the per-message child logger (filtered out by level), do some async work.
    if (ctx.signal.aborted) throw ctx.signal.reason;
    ctx.logger.debug('handling', { orderId: input.orderId });
    const workMs = input.workMs ?? WORK_MS;
    if (workMs > 0) await sleep(workMs, undefined, { signal: ctx.signal });
    else await yieldToLoop();
  }
}

/** Counts the commands each client sends, EVALSHA by the library's script name. */
function countRedisCommands(clients: readonly Redis[], into: Record<string, number>): void {
  const scripts = [
    ACQUIRE_SCRIPT,
    ADOPT_SCRIPT,
    COMPLETE_SCRIPT,
    EXTEND_SCRIPT,
    RAISE_FENCE_SCRIPT,
    RELEASE_SCRIPT,
  ];
  const names = new Map(scripts.map((script) => [script.sha, script.name]));
  for (const client of clients) {
    const send = client.sendCommand.bind(client);
    client.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
      const [command] = args;
      const name =
        command.name === 'evalsha' ? `evalsha ${names.get(String(command.args[0])) ?? '?'}` : command.name;
      into[name] = (into[name] ?? 0) + 1;
      return send(...args);
    }) as Redis['sendCommand'];
  }
}

/** Counts the SQS calls of `sqs` by command. */
function countSqsCalls(sqs: SQSClient, into: Record<string, number>): void {
  sqs.middlewareStack.add(
    (next, context) => (args) => {
      const name = context.commandName ?? '?';
      into[name] = (into[name] ?? 0) + 1;
      return next(args);
    },
    { step: 'initialize', name: 'soakCallCounter' },
  );
}

/**
 * Runs `fn` while recording the AbortControllers and sqs-consumer Consumers it creates: the Worker's
 * shutdown controller and its pollers are private, but their listeners are worth counting.
 */
function capturing<T>(fn: () => T): { value: T; controllers: AbortController[]; consumers: Consumer[] } {
  const controllers: AbortController[] = [];
  const consumers: Consumer[] = [];
  const OriginalController = globalThis.AbortController;
  const originalCreate = Consumer.create.bind(Consumer);
  globalThis.AbortController = class extends OriginalController {
    constructor() {
      super();
      controllers.push(this);
    }
  };
  Consumer.create = (options) => {
    const consumer = originalCreate(options);
    consumers.push(consumer);
    return consumer;
  };
  try {
    return { value: fn(), controllers, consumers };
  } finally {
    globalThis.AbortController = OriginalController;
    Consumer.create = originalCreate;
  }
}

async function main(): Promise<void> {
  if (typeof (globalThis as { gc?: unknown }).gc !== 'function') throw new Error('run with --expose-gc');
  const started = performance.now();
  const seconds = (): number => (performance.now() - started) / 1000;
  const baseline = { ...resources(), ...timerCounters(liveTimers()) };

  const logger = createLogger({ silent: true });
  const clients = REDIS_URLS.map((url) => {
    const client = new Redis(url, { maxRetriesPerRequest: 1, retryStrategy: () => 50 });
    client.on('error', () => {});
    return client;
  });
  await Promise.all(clients.map((c) => c.ping()));
  const redisCalls: Record<string, number> = {};
  countRedisCommands(clients, redisCalls);
  const redlock = new Redlock(clients, { ttlMs: TTL_MS, logger });
  const sqs = new SQSClient({
    endpoint: ENDPOINT,
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
  });
  const sqsCalls: Record<string, number> = {};
  countSqsCalls(sqs, sqsCalls);
  const {
    value: worker,
    controllers,
    consumers,
  } = capturing(
    () =>
      new Worker<Order>({
        queueUrl: QUEUE_URL,
        sqs,
        redlock,
        handler: new SoakHandler(),
        logger,
        batchSize: 10,
        concurrency: CONCURRENCY,
        waitTimeSeconds: 1,
        visibilityTimeoutSec: 30,
        deadLetterQueueUrl: false,
      }),
  );
  // The first AbortController the Worker makes is its shutdown controller (a field initializer).
  const shutdownSignal = controllers[0]?.signal;
  if (!shutdownSignal || consumers.length !== CONCURRENCY) {
    throw new Error(
      `soak worker: expected the Worker's shutdown controller and ${CONCURRENCY} consumers, got ` +
        `${controllers.length} controllers and ${consumers.length} consumers`,
    );
  }

  // Outcomes, counted by event. Anything but message_processed is unexpected in a soak.
  const outcomes: Record<string, number> = {};
  const outcomeEvents: (keyof WorkerEvents)[] = [...MESSAGE_EVENTS, 'polling_paused'];
  for (const name of outcomeEvents) {
    outcomes[name] = 0;
    worker.on(name, () => {
      outcomes[name] = (outcomes[name] ?? 0) + 1;
    });
  }
  outcomes.redlock_lock_lost = 0;
  redlock.on('lock_lost', () => {
    outcomes.redlock_lock_lost = (outcomes.redlock_lock_lost ?? 0) + 1;
  });
  const sqsErrors: string[] = [];
  worker.on('sqs_error', ({ operation, error }) => {
    if (sqsErrors.length < 10) sqsErrors.push(`${operation}: ${String(error)}`);
  });

  const counters = (): Counters => ({
    ...resources(),
    ...timerCounters(liveTimers()),
    ...listenersOf('listeners.worker', worker),
    ...listenersOf('listeners.redlock', redlock),
    ...Object.assign({}, ...clients.map((c, i) => listenersOf(`listeners.redis${i}`, c))),
    ...Object.assign({}, ...consumers.map((c, i) => listenersOf(`listeners.consumer${i}`, c))),
    ...signalCounters('shutdownSignal', shutdownSignal),
    'redlock.heldLocks': redlock.heldLocks.length,
    ...Object.fromEntries(
      clients.map((c, i) => [
        `redis${i}.queued`,
        (c as unknown as { commandQueue: { length: number } }).commandQueue.length +
          (c as unknown as { offlineQueue: { length: number } }).offlineQueue.length,
      ]),
    ),
  });

  // Event-loop delay: per sample, and over the busy part of the measured phase (from the end of warm-up
  // to the last message, the idle checkpoints left out).
  const eld = monitorEventLoopDelay({ resolution: ELD_RESOLUTION_MS });
  eld.enable();
  const measured = createHistogram();
  let measuring = false;

  const checkpoint = async (label: string, snapshot: boolean, busySec: number): Promise<void> => {
    // A plain full gc frees objects but keeps the pages the heap grew to under load (RSS stays at its
    // peak); a memory-reducing ('last-resort') one gives them back, so RSS shows what is retained. The
    // pause between lets finalizers and weak callbacks of the first run (AbortSignal.any clean-ups).
    gc();
    await sleep(GC_SETTLE_MS);
    gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    const t0 = performance.now();
    const mem = memory();
    const objects: Record<string, number> = {};
    const constructors: [string, unknown][] = [
      ['Timeout', timeoutClass],
      ['Lock', Lock],
      ['AbortController', AbortController],
      ['AbortSignal', AbortSignal],
      ['Promise', Promise],
    ];
    for (const [name, ctor] of constructors) {
      objects[name] = v8.queryObjects(ctor as Parameters<typeof v8.queryObjects>[0], { format: 'count' });
    }
    let file: string | undefined;
    if (snapshot && SNAPSHOT_DIR) {
      file = v8.writeHeapSnapshot(path.join(SNAPSHOT_DIR, `soak-${label}-${process.pid}.heapsnapshot`));
    }
    const stallMs = performance.now() - t0;
    emit({
      type: 'checkpoint',
      label,
      t: seconds(),
      processed,
      busySec,
      memory: mem,
      objects,
      counters: counters(),
      stallMs,
      ...(file ? { snapshot: file } : {}),
    });
    // The stall is not the worker's: a reset right after it drops it from the monitor.
    eld.reset();
  };

  let processed = 0;
  let firstProcessedAt = Number.NaN;
  let lastProcessedAt = Number.NaN;
  let reached: (() => void) | undefined;
  worker.on('message_processed', () => {
    const now = seconds();
    if (processed === 0) firstProcessedAt = now;
    lastProcessedAt = now;
    processed++;
    if (processed === MARKS[0]) reached?.();
  });

  const sampler = setInterval(() => {
    if (measuring) fold(eld, measured);
    emit({
      type: 'sample',
      t: seconds(),
      processed,
      memory: memory(),
      eld: delayStats(eld),
      counters: counters(),
    });
    eld.reset();
  }, SAMPLE_MS);

  await sleep(SETTLE_MS);
  await checkpoint('start', false, 0);
  await worker.start();
  emit({ type: 'ready', pid: process.pid, baseline });

  // The parent sends exactly up to each mark, then waits for its checkpoint before sending more: every
  // checkpoint is taken idle, so they compare like with like and their stalls disturb nothing.
  const marks = [...MARKS];
  for (let i = 0; i < marks.length; i++) {
    const segmentStart = seconds();
    await new Promise<void>((resolve) => {
      reached = resolve;
    });
    const busySec = seconds() - segmentStart;
    if (measuring) fold(eld, measured);
    measuring = false;
    // Let the last settles end and the idle pollers go back to their long polls.
    await sleep(SETTLE_MS);
    const last = i === marks.length - 1;
    MARKS.shift();
    await checkpoint(i === 0 ? 'warmup' : last ? 'final' : `cp${i}`, i === 0 || last, busySec);
    measuring = !last;
  }

  clearInterval(sampler);
  eld.disable();
  await worker.stop({ timeoutMs: 10_000 });
  await redlock.quit();
  sqs.destroy();
  await Promise.all(clients.filter((c) => c.status !== 'end').map((c) => once(c, 'end')));
  await sleep(200);
  gc();
  emit({
    type: 'summary',
    outcomes,
    firstProcessedAt,
    lastProcessedAt,
    eld: delayStats(measured),
    afterStop: { ...resources(), ...timerCounters(liveTimers()) },
    afterStopTimerStacks: liveTimerStacks(),
    sqsErrors,
    sqsCalls,
    redisCalls,
  });
}

/** The internal class of timers, for v8.queryObjects. */
const timeoutClass = (() => {
  const timer = setTimeout(() => undefined, 0);
  clearTimeout(timer);
  return timer.constructor;
})();

process.on('SIGTERM', () => process.exit(143));
main().catch((error: unknown) => {
  process.stderr.write(`soak worker: ${String((error as Error)?.stack ?? error)}\n`);
  process.exit(1);
});
