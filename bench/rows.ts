/**
 * The worker rows shared by bench/worker.ts and bench/all.ts: the message bodies and the trivial work, the
 * per-run probe and counters, the row runners (plain sqs-consumer pollers, this project's Worker, a
 * per-message redis-semaphore RedlockMutex), the pieces of one measured run, and the per-row figures.
 * Each benchmark keeps its own settings, scenarios, aggregation keys and report.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Message, SQSClient } from '@aws-sdk/client-sqs';
import type { Redis } from 'ioredis';
import { RedlockMutex } from 'redis-semaphore';
import { Consumer } from 'sqs-consumer';
import { BaseHandler, createLogger, type Redlock, Worker } from '../src/index.ts';
import { RECEIVE_SYSTEM_ATTRIBUTES } from '../src/runtime/sqs-actions.ts';
import type { RedisNode } from '../test/helpers/redis-nodes.ts';
import type { SqsEnv } from '../test/helpers/sqs.ts';
import {
  addCounts,
  fmt,
  fmtRatio,
  type LatencySummary,
  markdownTable,
  sleep,
  summarize,
  totalCalls,
} from './shared.ts';

export const silentLogger = createLogger({ silent: true });

// ---------------------------------------------------------------------------
// The work and the message bodies

export function bodyOf(i: number): string {
  return JSON.stringify({
    orderId: `order-${i}`,
    customerId: `customer-${i % 97}`,
    amountCents: 1_000 + i,
    currency: 'EUR',
    items: [
      { sku: `sku-${i % 13}`, quantity: 1 + (i % 3) },
      { sku: `sku-${i % 7}`, quantity: 1 },
    ],
    createdAt: '2024-01-01T00:00:00.000Z',
  });
}

/** The trivial per-message work of every row: parse, then give the event loop one turn. */
export async function work(body: string | undefined): Promise<void> {
  JSON.parse(body ?? 'null');
  await yieldToLoop();
}

// ---------------------------------------------------------------------------
// One run's observations

/** Receive / delete times of one run; resolves `done` once every message is deleted (or failed). */
export class Probe {
  readonly expected: number;
  readonly received = new Map<string, number>();
  readonly deleted = new Set<string>();
  readonly latenciesMs: number[] = [];
  firstReceive = Number.NaN;
  lastDelete = Number.NaN;
  errors = 0;
  firstError: string | undefined;
  readonly done: Promise<void>;
  #resolve: () => void = () => undefined;

  constructor(expected: number) {
    this.expected = expected;
    this.done = new Promise((resolve) => {
      this.#resolve = resolve;
    });
  }

  onReceive(messageId: string | undefined): void {
    const now = performance.now();
    if (Number.isNaN(this.firstReceive)) this.firstReceive = now;
    if (messageId !== undefined && !this.received.has(messageId)) this.received.set(messageId, now);
  }

  onDeleted(messageId: string | undefined): void {
    const now = performance.now();
    if (messageId === undefined || this.deleted.has(messageId)) {
      this.onError(`message ${messageId} deleted twice`);
      return;
    }
    this.deleted.add(messageId);
    this.lastDelete = now;
    const receivedAt = this.received.get(messageId);
    if (receivedAt !== undefined) this.latenciesMs.push(now - receivedAt);
    this.#check();
  }

  onError(error: unknown): void {
    this.errors++;
    this.firstError ??= error instanceof Error ? error.message : String(error);
    this.#check();
  }

  #check(): void {
    if (this.deleted.size + this.errors >= this.expected) this.#resolve();
  }
}

/** Counts the commands ioredis clients send (their round trips: nothing here pipelines), per client. */
export class SentCounter {
  readonly #perClient: number[] = [];

  /** Counts `clients`; index i of {@link perClient} is `clients[i]`. */
  constructor(clients: readonly Redis[]) {
    clients.forEach((client, i) => {
      this.#perClient[i] = 0;
      const send = client.sendCommand.bind(client);
      client.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
        this.#perClient[i] = (this.#perClient[i] ?? 0) + 1;
        return send(...args);
      }) as Redis['sendCommand'];
    });
  }

  get perClient(): number[] {
    return [...this.#perClient];
  }

  get total(): number {
    return this.#perClient.reduce((a, b) => a + b, 0);
  }
}

/** User + system CPU of the nodes `clients` are connected to, summed, in µs (INFO is an admin command). */
export async function redisCpuUs(clients: readonly Redis[]): Promise<number> {
  const infos = await Promise.all(clients.map((client) => client.info('cpu')));
  let seconds = 0;
  for (const info of infos) {
    for (const field of ['used_cpu_sys', 'used_cpu_user']) {
      seconds += Number(new RegExp(`^${field}:([0-9.]+)`, 'm').exec(info)?.[1] ?? 0);
    }
  }
  return seconds * 1e6;
}

// ---------------------------------------------------------------------------
// The rows

export interface Running {
  stop(): Promise<void>;
}

/** What every row polls with. */
export interface PollSettings {
  readonly sqs: SQSClient;
  /** sqs-consumer pollers (the Worker's `concurrency`); each handles one batch at a time. */
  readonly pollers: number;
  readonly batchSize: number;
  readonly waitTimeSeconds: number;
  readonly visibilityTimeoutSec: number;
}

/** Wraps the handling of a whole batch (`run` handles its messages and answers those to delete). */
export interface AroundBatch {
  around(messages: Message[], run: () => Promise<Message[]>): Promise<Message[]>;
}

/**
 * Resolves once `quorum` of `calls` succeeded, rejects once that can no longer happen; the calls still out
 * are not waited for (their outcome is ignored), as a Redlock resolving at quorum does not wait for them.
 */
function quorumOf(calls: readonly Promise<unknown>[], quorum: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (calls.length < quorum) {
      reject(new Error(`${calls.length} nodes connected, quorum ${quorum}`));
      return;
    }
    let succeeded = 0;
    let failed = 0;
    for (const call of calls) {
      call.then(
        () => {
          if (++succeeded === quorum) resolve();
        },
        (error: unknown) => {
          if (calls.length - ++failed < quorum) reject(error);
        },
      );
    }
  });
}

/**
 * The transport floor of a batch-locking Redlock over `clients` (one per quorum node): before and after
 * each batch's work, one PING to every connected node, waiting for a quorum of answers (as a Redlock
 * resolving at quorum does). No Lua, no locks. A killed node's client is skipped, as this project's
 * Redlock fails a call at once on a node that is not connected.
 */
export function aroundQuorumPings(clients: readonly Redis[]): AroundBatch {
  const quorum = Math.floor(clients.length / 2) + 1;
  const quorumRoundTrip = (): Promise<void> =>
    quorumOf(
      clients.filter((client) => client.status === 'ready').map((client) => client.ping()),
      quorum,
    );
  return {
    async around(_messages, run) {
      await quorumRoundTrip();
      const acked = await run();
      await quorumRoundTrip();
      return acked;
    },
  };
}

/** `settings.pollers` sqs-consumer pollers; each message goes through `perMessage`, and what resolves is deleted. */
export function startConsumers(
  settings: PollSettings,
  queueUrl: string,
  probe: Probe,
  perMessage: (message: Message) => Promise<void>,
  batch: AroundBatch = { around: (_, run) => run() },
): Running {
  let stopping = false;
  const consumers = Array.from({ length: settings.pollers }, () => {
    const consumer = Consumer.create({
      queueUrl,
      sqs: settings.sqs,
      batchSize: settings.batchSize,
      waitTimeSeconds: settings.waitTimeSeconds,
      visibilityTimeout: settings.visibilityTimeoutSec,
      // What the Worker asks for, so every row receives the same payload.
      messageSystemAttributeNames: [...RECEIVE_SYSTEM_ATTRIBUTES],
      messageAttributeNames: ['All'],
      handleMessageBatch: async (messages) => {
        for (const message of messages) probe.onReceive(message.MessageId);
        const run = async (): Promise<Message[]> => {
          const settled = await Promise.allSettled(messages.map(perMessage));
          const acked: Message[] = [];
          settled.forEach((result, i) => {
            if (result.status === 'fulfilled') acked.push(messages[i] as Message);
            else probe.onError(result.reason);
          });
          return acked;
        };
        try {
          return await batch.around(messages, run);
        } catch (error) {
          for (const _ of messages) probe.onError(error);
          return [];
        }
      },
    });
    consumer.on('message_processed', (message) => probe.onDeleted(message.MessageId));
    consumer.on('error', (error) => {
      // stop({ abort: true }) aborts the idle long poll on purpose.
      if (!stopping) probe.onError(error);
    });
    consumer.start();
    return consumer;
  });
  return {
    async stop() {
      stopping = true;
      for (const consumer of consumers) consumer.stop({ abort: true });
      const deadline = performance.now() + 5_000;
      while (consumers.some((c) => c.status.isPolling) && performance.now() < deadline) await sleep(5);
    },
  };
}

/** The no-lock work of a message, wrapped in a redis-semaphore RedlockMutex: acquire (once), work, release. */
export function underRedlockMutex(
  clients: Redis[],
  lockTimeoutMs: number,
): (message: Message) => Promise<void> {
  return async (message) => {
    const mutex = new RedlockMutex(clients, message.MessageId as string, {
      lockTimeout: lockTimeoutMs,
      acquireAttemptsLimit: 1,
    });
    await mutex.acquire();
    try {
      await work(message.Body);
    } finally {
      await mutex.release();
    }
  };
}

class BenchHandler extends BaseHandler<unknown> {
  readonly #probe: Probe;

  constructor(probe: Probe) {
    super();
    this.#probe = probe;
  }

  hydrate(message: Message): unknown {
    this.#probe.onReceive(message.MessageId);
    return JSON.parse(message.Body ?? 'null');
  }

  async handle(): Promise<void> {
    await yieldToLoop();
  }
}

/**
 * This project's Worker over `redlock` (`deadLetterQueueUrl: false` skips the DLQ discovery at start;
 * everything else at its default): hydrate = JSON.parse, handle = one macrotask yield.
 */
export async function startWorker(
  settings: PollSettings,
  redlock: Redlock,
  queueUrl: string,
  probe: Probe,
  /** Another tree's Worker (bench/worker.ts --baseline), to run its pipeline side by side with this one. */
  WorkerClass: typeof Worker = Worker,
): Promise<Running> {
  const worker = new WorkerClass<unknown>({
    queueUrl,
    sqs: settings.sqs,
    redlock,
    handler: new BenchHandler(probe),
    batchSize: settings.batchSize,
    concurrency: settings.pollers,
    waitTimeSeconds: settings.waitTimeSeconds,
    visibilityTimeoutSec: settings.visibilityTimeoutSec,
    deadLetterQueueUrl: false,
    logger: silentLogger,
  });
  worker.on('message_processed', ({ messageId }) => probe.onDeleted(messageId));
  // Anything but a processed message is a failure of the run (none is expected).
  const fail =
    (name: string) =>
    (event: { messageId: string }): void =>
      probe.onError(new Error(`${name}: ${event.messageId}`));
  worker.on('duplicate_skipped', fail('duplicate_skipped'));
  worker.on('lock_contended', fail('lock_contended'));
  worker.on('quorum_unavailable', fail('quorum_unavailable'));
  worker.on('poison_message', fail('poison_message'));
  worker.on('handler_error', fail('handler_error'));
  worker.on('lock_lost', fail('lock_lost'));
  worker.on('message_released', fail('message_released'));
  worker.on('sqs_error', ({ operation, error }) => probe.onError(new Error(`sqs ${operation}: ${error}`)));
  await worker.start();
  return { stop: () => worker.stop({ timeoutMs: 5_000 }) };
}

// ---------------------------------------------------------------------------
// One measured run

/** Pre-fills `queueName` with `messages` bodies (bodyOf 0 .. messages - 1). */
export function fillQueue(sqsEnv: SqsEnv, queueName: string, messages: number): void {
  for (let i = 0; i < messages; i++) sqsEnv.server.sendMessage(queueName, bodyOf(i));
}

/** Flushes `nodes`, then resets their `INFO commandstats`, so a run starts from the same empty data set. */
export async function resetNodes(nodes: readonly RedisNode[]): Promise<void> {
  await Promise.all(nodes.map((node) => node.flushAll()));
  await Promise.all(nodes.map((node) => node.resetStats()));
}

/** Waits for `probe.done`; a run that has not settled every message within `timeoutMs` fails (`what` names it). */
export async function untilSettled(probe: Probe, what: string, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      probe.done,
      new Promise((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new Error(`${what}: ${probe.deleted.size} of ${probe.expected} deleted after ${timeoutMs} ms`),
            ),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** What both benchmarks record of one measured run of a row. */
export interface MeasuredRun {
  readonly round: number;
  readonly messages: number;
  /** First receive to last delete, in ms. */
  readonly durationMs: number;
  /** Receive to delete of each message, in ms. */
  readonly latenciesMs: number[];
  /** `INFO commandstats` calls since the reset, summed over the nodes, admin commands included. */
  readonly commandStats: Record<string, number>;
  /** Commands the row's own clients sent. */
  readonly roundTrips: number;
  /** CPU time of this process (user + system) during the run, in µs. */
  readonly processCpuUs: number;
  /** CPU time of the redis-servers (user + system, summed) over the run, in µs. */
  readonly redisCpuUs: number;
  readonly errors: number;
  readonly firstError: string | undefined;
}

/** The probe's part of a {@link MeasuredRun}. */
export function probeFigures(
  probe: Probe,
): Pick<MeasuredRun, 'durationMs' | 'latenciesMs' | 'errors' | 'firstError'> {
  return {
    durationMs: probe.lastDelete - probe.firstReceive,
    latenciesMs: probe.latenciesMs,
    errors: probe.errors,
    firstError: probe.firstError,
  };
}

/** One run as the JSON output lists it; `extra` goes after `roundTrips`. */
export function runJson(r: MeasuredRun, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    round: r.round,
    messages: r.messages,
    durationMs: r.durationMs,
    msgPerSec: rate([r]),
    latency: summarize(r.latenciesMs),
    redisCommands: totalCalls(r.commandStats),
    commandStats: r.commandStats,
    roundTrips: r.roundTrips,
    ...extra,
    processCpuUs: r.processCpuUs,
    redisCpuUs: r.redisCpuUs,
    errors: r.errors,
  };
}

/** The progress line of one measured run (`label` names the round and the row). */
export function runProgress(label: string, result: MeasuredRun): string {
  return (
    `${label} ${fmt(rate([result])).padStart(6)} msg/s  ` +
    `${fmt(totalCalls(result.commandStats) / result.messages, 2)} redis cmds/msg` +
    (result.errors > 0 ? `  ${result.errors} errors (${result.firstError})` : '')
  );
}

// ---------------------------------------------------------------------------
// Figures of a row

/** Messages per second over `runs`: their messages over their summed duration. */
export function rate(runs: readonly Pick<MeasuredRun, 'messages' | 'durationMs'>[]): number {
  const messages = runs.reduce((n, r) => n + r.messages, 0);
  const ms = runs.reduce((n, r) => n + r.durationMs, 0);
  return (messages / ms) * 1000;
}

export function median(values: readonly number[]): number {
  const finite = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (finite.length === 0) return Number.NaN;
  const mid = Math.floor(finite.length / 2);
  return finite.length % 2 === 1
    ? (finite[mid] as number)
    : ((finite[mid - 1] as number) + (finite[mid] as number)) / 2;
}

/** `median (min–max)` of per-round ratios. */
export function roundRatios(values: readonly number[]): string {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return '–';
  return `${median(finite).toFixed(2)} (${Math.min(...finite).toFixed(2)}–${Math.max(...finite).toFixed(2)})`;
}

/** The figures every worker row reports, over its runs. */
export interface RowFigures {
  readonly messages: number;
  readonly msgPerSec: number;
  readonly roundMsgPerSec: number[];
  /** msg/s over the no-lock row's (same concurrency / scenario). */
  readonly vsNoLock: number;
  /** The same ratio within each round (the rows of a round ran back to back). */
  readonly roundVsNoLock: number[];
  readonly latency: LatencySummary;
  /** `INFO commandstats` calls per message, admin commands left out, summed over the nodes. */
  readonly redisCommandsPerMsg: number;
  /** Commands the row's own clients sent per message (round trips to a node). */
  readonly redisRoundTripsPerMsg: number;
  /** Calls per message by command name (admin commands left out). */
  readonly redisCommandsByName: Record<string, number>;
  readonly processCpuUsPerMsg: number;
  readonly redisCpuUsPerMsg: number;
  readonly errors: number;
  readonly firstError: string | undefined;
}

/**
 * The {@link RowFigures} of `runs` against the no-lock `baseline` runs, in their report order; a
 * benchmark's own figures go in after `latency` (computed from it) and before the CPU figures.
 */
export function rowFigures<AfterLatency extends object = object, BeforeCpu extends object = object>(
  runs: readonly MeasuredRun[],
  baseline: readonly MeasuredRun[],
  extra: { afterLatency?: (latency: LatencySummary) => AfterLatency; beforeCpu?: BeforeCpu } = {},
): RowFigures & AfterLatency & BeforeCpu {
  const messages = runs.reduce((n, r) => n + r.messages, 0);
  const stats = addCounts(...runs.map((r) => r.commandStats));
  const msgPerSec = rate(runs);
  const latency = summarize(runs.flatMap((r) => r.latenciesMs));
  return {
    messages,
    msgPerSec,
    roundMsgPerSec: runs.map((r) => rate([r])),
    vsNoLock: msgPerSec / rate(baseline),
    roundVsNoLock: runs.map((r) => {
      const base = baseline.find((b) => b.round === r.round);
      return base ? rate([r]) / rate([base]) : Number.NaN;
    }),
    latency,
    ...(extra.afterLatency?.(latency) as AfterLatency),
    redisCommandsPerMsg: totalCalls(stats) / messages,
    redisRoundTripsPerMsg: runs.reduce((n, r) => n + r.roundTrips, 0) / messages,
    redisCommandsByName: Object.fromEntries(
      Object.entries(stats)
        .filter(([name]) => totalCalls({ [name]: 1 }) > 0)
        .sort(([, a], [, b]) => b - a)
        .map(([name, calls]) => [name, calls / messages]),
    ),
    ...(extra.beforeCpu as BeforeCpu),
    processCpuUsPerMsg: runs.reduce((n, r) => n + r.processCpuUs, 0) / messages,
    redisCpuUsPerMsg: runs.reduce((n, r) => n + r.redisCpuUs, 0) / messages,
    errors: runs.reduce((n, r) => n + r.errors, 0),
    firstError: runs.find((r) => r.firstError)?.firstError,
  };
}

/** `name calls, ...`: a row's Redis commands by name, per message. */
export function commandsByName(row: Pick<RowFigures, 'redisCommandsByName'>): string {
  return Object.entries(row.redisCommandsByName)
    .map(([name, perMsg]) => `${name} ${fmt(perMsg, 2)}`)
    .join(', ');
}

// ---------------------------------------------------------------------------
// The cost table: CPU added per message over the no-lock row

/** One row of the cost table (`group`: the pollers or the scenario the row's no-lock baseline shares). */
export interface CostRow {
  readonly group: string;
  readonly label: string;
  /** 'semaphore': the per-message redis-semaphore RedlockMutex row, which the targets are judged against. */
  readonly role: 'no-lock' | 'ours' | 'semaphore' | 'peer' | 'floor' | 'diagnostic';
  readonly processCpuUsPerMsg: number;
  readonly redisCpuUsPerMsg: number;
}

/** What the floor is, for the note under the cost table. */
export const FLOOR_NOTE =
  'The transport floor is the no-lock setup plus two quorum round trips of PING per batch (one PING to ' +
  "every connected node before the batch's work and one after, each waiting for a quorum of answers), " +
  'with no Lua and no lock: what any engine that locks and then completes a batch over these nodes pays ' +
  'in round trips alone, so the least CPU a batch-locking Redlock can add here.';

/**
 * "CPU µs per message added over no lock, split node / redis-servers", for every row but the no-lock
 * baseline of its group, with the ratios the targets are judged on: added CPU over the transport floor's
 * and over per-message redis-semaphore's, and added redis-server CPU over redis-semaphore's.
 */
export function costTable(rows: readonly CostRow[], groupHeader: string): string {
  const byGroup = new Map<string, CostRow[]>();
  for (const r of rows) byGroup.set(r.group, [...(byGroup.get(r.group) ?? []), r]);
  const added = (r: CostRow, base: CostRow) => ({
    node: r.processCpuUsPerMsg - base.processCpuUsPerMsg,
    redis: r.redisCpuUsPerMsg - base.redisCpuUsPerMsg,
  });
  const total = (a: { node: number; redis: number }): number => a.node + a.redis;
  const lines: string[][] = [];
  for (const [group, members] of byGroup) {
    const base = members.find((r) => r.role === 'no-lock');
    if (!base) continue;
    const floor = members.find((r) => r.role === 'floor');
    const floorAdded = floor ? total(added(floor, base)) : Number.NaN;
    const semaphoreRow = members.find((r) => r.role === 'semaphore');
    const semaphore = semaphoreRow ? added(semaphoreRow, base) : undefined;
    for (const r of members) {
      if (r === base) continue;
      const a = added(r, base);
      lines.push([
        group,
        r.label,
        fmt(a.node),
        fmt(a.redis),
        fmt(total(a)),
        fmtRatio(total(a) / floorAdded),
        semaphore ? fmtRatio(total(a) / total(semaphore)) : '–',
        semaphore ? fmtRatio(a.redis / semaphore.redis) : '–',
      ]);
    }
  }
  return markdownTable(
    [
      groupHeader,
      'Setup',
      'node µs/msg added',
      'redis-servers µs/msg added',
      'total µs/msg added',
      'vs transport floor',
      'total vs redis-semaphore',
      'redis-servers vs redis-semaphore',
    ],
    lines,
    ['left', 'left', 'right', 'right', 'right', 'right', 'right', 'right'],
  );
}
