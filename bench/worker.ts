/**
 * Worker benchmark: messages per second of the same sqs-consumer setup with no lock, with this project's
 * Worker (every batch locked on a 3-node Redlock quorum, completed and deleted), and with a per-message
 * redis-semaphore RedlockMutex around the same work, side by side in one run.
 *
 *   npm run bench:worker            # markdown table on stdout, progress on stderr
 *   npm run bench:worker -- --json  # raw numbers as JSON on stdout instead
 *   npm run bench:worker -- --only=no-lock,pipeline,lock-only,floor --pollers=4   # some rows / pollers only
 *   npm run bench:worker -- --baseline=/tmp/wt-perf --only=no-lock,pipeline,pipeline-base,lock-only,lock-only-base
 *                                   # also another tree's Worker / Redlock (DIR/src), interleaved with these
 *
 * Setup: one fauxqs SQS emulator in this process (test/helpers/sqs.ts) and 3 redis-server processes
 * (test/helpers/redis-nodes.ts). Every measurement gets a fresh standard queue pre-filled with the same
 * MESSAGES JSON bodies, then consumes it until every message is deleted. Every row polls with the same
 * number of sqs-consumer pollers (CONCURRENCIES), batchSize 10, waitTimeSeconds 1, visibility 30 s and the
 * same requested attributes; each poller handles one batch at a time (receive, handle, delete, receive).
 * The work per message is the same trivial one: JSON.parse of the body and one macrotask yield.
 *
 * - no lock: sqs-consumer `handleMessageBatch`, the batch's messages in parallel; sqs-consumer deletes
 *   the returned messages with one DeleteMessageBatch.
 * - this project: `new Worker({ batchSize: 10, concurrency, waitTimeSeconds: 1 })` with a BaseHandler
 *   (hydrate = JSON.parse, handle = the yield) over a Redlock with its own 3 clients and default options
 *   (TTL 30 s; the heartbeat, every 10 s, never fires during a measurement). `deadLetterQueueUrl: false`
 *   skips the DLQ discovery at start; everything else is at its default.
 * - redis-semaphore: the no-lock setup, each message's work wrapped in
 *   `new RedlockMutex(clients, messageId, { lockTimeout: 30000, acquireAttemptsLimit: 1 })`: acquire,
 *   work, release, the batch's messages in parallel. refreshInterval is left at its documented default
 *   (0.8 x lockTimeout: the refresh timer is armed and cleared per message, and never fires).
 * - lock-only (diagnostic, only with --only): the no-lock setup with each batch locked by this
 *   project's Redlock as the pipeline does it (acquireMany, work, completeMany, delete) but without the
 *   Worker: the gap between it and the pipeline row is the Worker's own bookkeeping.
 * - floor (diagnostic, only with --only): the no-lock setup with two quorum round trips of PING to the 3
 *   nodes per batch (before and after the work): what the round trips alone cost, with no Lua and no lock.
 *
 * Measured per run: msg/s = messages / (last delete - first receive), the receive being the moment the
 * batch reaches the handler code (sqs-consumer's handleMessageBatch, or the Worker's hydrate) and the
 * delete the `message_processed` event each library emits once DeleteMessageBatch answered; receive ->
 * delete latency per message; Redis commands per message = `INFO commandstats` calls summed over the 3
 * nodes since a `CONFIG RESETSTAT` before the run (admin commands left out), which counts the commands a
 * Lua script runs too, and Redis round trips per message = commands the benchmark's ioredis clients sent;
 * SQS calls per message; CPU time of this process (client, SDK and fauxqs alike) and of the 3
 * redis-servers per message.
 * Rows are interleaved in ROUNDS rounds, rotating their order each round, after one discarded warm-up
 * run per row; the nodes are flushed before every run. Aggregate msg/s = messages / summed duration.
 */
import { loadavg } from 'node:os';
import type { SQSClient } from '@aws-sdk/client-sqs';
import type { Redis } from 'ioredis';
import type * as thisTree from '../src/index.ts';
import { type AcquireResult, isLock, type Lock, Redlock } from '../src/index.ts';
import { type RedisNodes, startRedisNodes } from '../test/helpers/redis-nodes.ts';
import { type SqsEnv, startSqs } from '../test/helpers/sqs.ts';
import {
  aroundQuorumPings,
  type CostRow,
  commandsByName,
  costTable,
  FLOOR_NOTE,
  fillQueue,
  type MeasuredRun,
  median,
  type PollSettings,
  Probe,
  probeFigures,
  type RowFigures,
  type Running,
  rate,
  redisCpuUs,
  resetNodes,
  roundRatios,
  rowFigures,
  runJson,
  runProgress,
  SentCounter,
  silentLogger,
  startConsumers,
  startWorker,
  underRedlockMutex,
  untilSettled,
  work,
} from './rows.ts';
import {
  addCounts,
  diffCounts,
  type Environment,
  environment,
  environmentHeader,
  fmt,
  fmtRatio,
  markdownTable,
  printResult,
  progress,
  redisVersionOf,
  relativeSpread,
  rotate,
  runMain,
  totalCalls,
  wantsJson,
} from './shared.ts';

/** Messages per measured run. */
const MESSAGES = 3_000;
/** Messages of the discarded warm-up run of every row. */
const WARMUP_MESSAGES = 400;
/**
 * Pollers (sqs-consumer Consumers) per row: each handles one batch at a time. `--pollers=2,4,8` overrides
 * (e.g. to look at one setting under `--cpu-prof`).
 */
const CONCURRENCIES: readonly number[] = pollersOf(process.argv.slice(2)) ?? [2, 4];
/** Each row is measured once per round; rows are interleaved within a round. */
const ROUNDS = 5;
/** Messages per ReceiveMessage. */
const BATCH = 10;
/** Long-poll wait of every receive, in seconds (only the tail of a run ever waits). */
const WAIT_TIME_SECONDS = 1;
/** Visibility timeout of the queues and of every receive, in seconds: no message is received twice. */
const VISIBILITY_TIMEOUT_SEC = 30;
/** Lock TTL of both lock engines, in ms. */
const LOCK_TTL_MS = 30_000;
/** Number of redis-server nodes (independent Redlock quorum members). */
const NODES = 3;
/** A run that has not deleted every message by then fails (something is wrong, not slow). */
const RUN_TIMEOUT_MS = 60_000;

/** Targets of this project (reported, never used to tune the measurement). */
const TARGET_VS_NO_LOCK = 0.85;

type EngineId =
  | 'no-lock'
  | 'pipeline'
  | 'redis-semaphore'
  | 'lock-only'
  | 'floor'
  | 'pipeline-base'
  | 'lock-only-base';
/** The rows of a default run. */
const DEFAULT_ENGINES: readonly EngineId[] = ['no-lock', 'pipeline', 'redis-semaphore'];
/** Also `lock-only`, a diagnostic row: the lock engine's cost without the Worker's bookkeeping. */
const ALL_ENGINES: readonly EngineId[] = [
  'no-lock',
  'pipeline',
  'pipeline-base',
  'redis-semaphore',
  'lock-only',
  'lock-only-base',
  'floor',
];
/**
 * `--baseline=DIR`: the `*-base` rows run DIR/src's Worker and Redlock (e.g. a worktree of HEAD whose
 * src/lock is the engine before a change), so a change is measured side by side in one run.
 */
const BASELINE_DIR = process.argv.find((arg) => arg.startsWith('--baseline='))?.slice('--baseline='.length);
const baseTree: typeof thisTree | undefined = BASELINE_DIR
  ? ((await import(`${BASELINE_DIR}/src/index.ts`)) as typeof thisTree)
  : undefined;

/**
 * `--only=pipeline` (or a comma-separated list) runs only those rows, e.g. under `--cpu-prof`, or adds
 * the diagnostic one (`--only=no-lock,pipeline,lock-only`). The no-lock row is the baseline of every
 * ratio: without it the ratios print as '–'.
 */
const ENGINES: readonly EngineId[] = onlyEngines(process.argv.slice(2));
if (!baseTree && ENGINES.some((engine) => engine.endsWith('-base'))) {
  throw new Error('the *-base rows need --baseline=DIR');
}

function pollersOf(argv: readonly string[]): number[] | undefined {
  const list = argv.find((arg) => arg.startsWith('--pollers='))?.slice('--pollers='.length);
  if (!list) return undefined;
  const pollers = list.split(',').map(Number);
  if (pollers.some((n) => !Number.isInteger(n) || n < 1 || n > 100)) {
    throw new Error(`--pollers: ${list} is not a list of integers from 1 to 100`);
  }
  return pollers;
}

function onlyEngines(argv: readonly string[]): EngineId[] {
  const only = argv.find((arg) => arg.startsWith('--only='))?.slice('--only='.length);
  if (!only) return [...DEFAULT_ENGINES];
  const picked = only.split(',').map((name) => name.trim());
  const unknown = picked.filter((name) => !ALL_ENGINES.includes(name as EngineId));
  if (unknown.length > 0)
    throw new Error(`--only: unknown row ${unknown.join(', ')} (${ALL_ENGINES.join(', ')})`);
  return ALL_ENGINES.filter((engine) => picked.includes(engine));
}

const ENGINE_LABELS: Record<EngineId, string> = {
  'no-lock': 'sqs-consumer, no lock',
  pipeline: 'sqs-redlock-worker Worker (3-node Redlock)',
  'redis-semaphore': 'sqs-consumer + redis-semaphore RedlockMutex per message',
  'lock-only': 'sqs-consumer + this Redlock: acquireMany, work, completeMany per batch',
  floor: 'sqs-consumer + 2 quorum round trips of PING per batch (transport floor: no Lua, no locks)',
  'pipeline-base': `baseline Worker (${BASELINE_DIR ?? '--baseline'}/src)`,
  'lock-only-base': `sqs-consumer + baseline Redlock (${BASELINE_DIR ?? '--baseline'}/src) per batch`,
};

/** How the cost table counts each row. */
const ENGINE_ROLES: Record<EngineId, CostRow['role']> = {
  'no-lock': 'no-lock',
  pipeline: 'ours',
  'redis-semaphore': 'semaphore',
  'lock-only': 'diagnostic',
  floor: 'floor',
  'pipeline-base': 'diagnostic',
  'lock-only-base': 'diagnostic',
};

// ---------------------------------------------------------------------------
// One run's observations (the probe and the Redis counters: bench/rows.ts)

/** Counts the SQS calls of a client by command (ReceiveMessageCommand, DeleteMessageBatchCommand, ...). */
class SqsCallCounter {
  readonly counts: Record<string, number> = {};

  watch(sqs: SQSClient): void {
    const send = sqs.send.bind(sqs) as (command: object, ...rest: unknown[]) => Promise<unknown>;
    sqs.send = ((command: object, ...rest: unknown[]) => {
      const name = command.constructor.name;
      this.counts[name] = (this.counts[name] ?? 0) + 1;
      return send(command, ...rest);
    }) as SQSClient['send'];
  }

  snapshot(): Record<string, number> {
    return { ...this.counts };
  }
}

// ---------------------------------------------------------------------------
// The setups

interface Fixture {
  readonly sqs: SQSClient;
  /** redis-semaphore's clients, one per node. */
  readonly semaphoreClients: Redis[];
  /** This project's lock engine, over its own clients. */
  readonly redlock: Redlock;
  /** The --baseline tree's lock engine, over clients of its own. */
  readonly baseRedlock: Redlock | undefined;
}

type Start = (fixture: Fixture, queueUrl: string, concurrency: number, probe: Probe) => Promise<Running>;

/** What every row polls with: `concurrency` pollers, BATCH, WAIT_TIME_SECONDS, VISIBILITY_TIMEOUT_SEC. */
function polling(fixture: Fixture, concurrency: number): PollSettings {
  return {
    sqs: fixture.sqs,
    pollers: concurrency,
    batchSize: BATCH,
    waitTimeSeconds: WAIT_TIME_SECONDS,
    visibilityTimeoutSec: VISIBILITY_TIMEOUT_SEC,
  };
}

const startNoLock: Start = async (fixture, queueUrl, concurrency, probe) =>
  startConsumers(polling(fixture, concurrency), queueUrl, probe, (message) => work(message.Body));

const startSemaphore: Start = async (fixture, queueUrl, concurrency, probe) =>
  startConsumers(
    polling(fixture, concurrency),
    queueUrl,
    probe,
    underRedlockMutex(fixture.semaphoreClients, LOCK_TTL_MS),
  );

const startPipeline: Start = (fixture, queueUrl, concurrency, probe) =>
  startWorker(polling(fixture, concurrency), fixture.redlock, queueUrl, probe);

/**
 * Diagnostic: the no-lock setup with the batch locked by this project's lock engine alone, as the
 * Worker's pipeline does it (acquireMany with no retry, the work, completeMany, then the delete) but
 * without the Worker around it: the gap to the pipeline row is the Worker's own bookkeeping.
 */
const lockOnly =
  (pick: (fixture: Fixture) => Redlock | undefined, locked: (result: unknown) => boolean): Start =>
  async (fixture, queueUrl, concurrency, probe) => {
    const redlock = pick(fixture) as Redlock;
    return startConsumers(polling(fixture, concurrency), queueUrl, probe, (message) => work(message.Body), {
      async around(messages, run) {
        const results = await redlock.acquireMany(
          messages.map((m) => m.MessageId as string),
          { retryCount: 0, autoExtend: false },
        );
        const locks = results.filter(locked) as Lock[];
        if (locks.length !== messages.length) {
          await redlock.releaseMany(locks);
          throw new Error(`${locks.length} of ${messages.length} locked`);
        }
        const acked = await run();
        await redlock.completeMany(locks);
        return acked;
      },
    });
  };

const startLockOnly: Start = lockOnly(
  (fixture) => fixture.redlock,
  (result) => isLock(result as AcquireResult),
);
const startLockOnlyBase: Start = lockOnly(
  (fixture) => fixture.baseRedlock,
  (result) => baseTree?.isLock(result as never) ?? false,
);
const startPipelineBase: Start = (fixture, queueUrl, concurrency, probe) =>
  startWorker(
    polling(fixture, concurrency),
    fixture.baseRedlock as Redlock,
    queueUrl,
    probe,
    baseTree?.Worker as typeof thisTree.Worker,
  );

/** The transport floor of a batch-locking Redlock: two quorum round trips of PING per batch, no Lua, no locks. */
const startFloor: Start = async (fixture, queueUrl, concurrency, probe) =>
  startConsumers(
    polling(fixture, concurrency),
    queueUrl,
    probe,
    (message) => work(message.Body),
    aroundQuorumPings(fixture.redlock.nodes.map((node) => node.client as Redis)),
  );

const STARTS: Record<EngineId, Start> = {
  'no-lock': startNoLock,
  pipeline: startPipeline,
  'redis-semaphore': startSemaphore,
  'lock-only': startLockOnly,
  floor: startFloor,
  'pipeline-base': startPipelineBase,
  'lock-only-base': startLockOnlyBase,
};

// ---------------------------------------------------------------------------
// One measured run

interface RunResult extends MeasuredRun {
  readonly engine: EngineId;
  readonly concurrency: number;
  /** SQS calls by command between start and the last delete (the tail's empty long polls included). */
  readonly sqsCalls: Record<string, number>;
}

interface Harness {
  readonly sqsEnv: SqsEnv;
  readonly redis: RedisNodes;
  readonly fixture: Fixture;
  /** Clients only used to read `INFO cpu` (not counted: INFO is an admin command). */
  readonly statsClients: Redis[];
  /** Commands sent by the benchmark's lock clients. */
  readonly sent: SentCounter;
  readonly sqsCalls: SqsCallCounter;
}

let queueSeq = 0;

async function runOnce(
  h: Harness,
  engine: EngineId,
  concurrency: number,
  round: number,
  messages: number,
): Promise<RunResult> {
  const queue = h.sqsEnv.createQueue(`bench-worker-${++queueSeq}-${engine}-c${concurrency}`, {
    visibilityTimeoutSec: VISIBILITY_TIMEOUT_SEC,
  });
  try {
    fillQueue(h.sqsEnv, queue.queueName, messages);
    await resetNodes(h.redis.nodes);
    const redisCpuBefore = await redisCpuUs(h.statsClients);
    const sentBefore = h.sent.total;
    const sqsBefore = h.sqsCalls.snapshot();
    const probe = new Probe(messages);
    const cpuBefore = process.cpuUsage();
    const running = await STARTS[engine](h.fixture, queue.queueUrl, concurrency, probe);
    await untilSettled(probe, `${engine} c${concurrency}`, RUN_TIMEOUT_MS);
    const cpu = process.cpuUsage(cpuBefore);
    const roundTrips = h.sent.total - sentBefore;
    const sqsCalls = diffCounts(h.sqsCalls.snapshot(), sqsBefore);
    const redisCpuAfter = await redisCpuUs(h.statsClients);
    await running.stop();
    const commandStats = addCounts(...(await Promise.all(h.redis.nodes.map((node) => node.commandStats()))));
    return {
      engine,
      concurrency,
      round,
      messages,
      ...probeFigures(probe),
      commandStats,
      roundTrips,
      sqsCalls,
      processCpuUs: cpu.user + cpu.system,
      redisCpuUs: redisCpuAfter - redisCpuBefore,
    };
  } finally {
    h.sqsEnv.server.deleteQueue(queue.queueName);
  }
}

// ---------------------------------------------------------------------------
// Aggregation and report

interface Aggregate extends RowFigures {
  readonly id: string;
  readonly engine: EngineId;
  readonly label: string;
  readonly concurrency: number;
  /** SQS calls per message (receives, deletes, ...), by command. */
  readonly sqsCallsPerMsg: number;
  readonly sqsCallsByName: Record<string, number>;
}

function rowId(engine: EngineId, concurrency: number): string {
  return `c${concurrency}/${engine}`;
}

function aggregate(results: readonly RunResult[]): Aggregate[] {
  const rows: Aggregate[] = [];
  for (const concurrency of CONCURRENCIES) {
    const baseline = results.filter((r) => r.concurrency === concurrency && r.engine === 'no-lock');
    for (const engine of ENGINES) {
      const runs = results.filter((r) => r.concurrency === concurrency && r.engine === engine);
      const messages = runs.reduce((n, r) => n + r.messages, 0);
      const sqsCalls = addCounts(...runs.map((r) => r.sqsCalls));
      rows.push({
        id: rowId(engine, concurrency),
        engine,
        label: ENGINE_LABELS[engine],
        concurrency,
        ...rowFigures(runs, baseline, {
          beforeCpu: {
            sqsCallsPerMsg: totalCalls(sqsCalls, () => false) / messages,
            sqsCallsByName: perMessage(sqsCalls, messages),
          },
        }),
      });
    }
  }
  return rows;
}

function perMessage(counts: Readonly<Record<string, number>>, messages: number): Record<string, number> {
  return Object.fromEntries(Object.entries(counts).map(([name, n]) => [name, n / messages]));
}

interface TargetCheck {
  readonly concurrency: number;
  readonly vsNoLock: number;
  readonly vsNoLockHolds: boolean;
  /** Median of the per-round ratios (less sensitive to one disturbed run than the aggregate). */
  readonly vsNoLockMedian: number;
  /** Pipeline msg/s over the redis-semaphore row's. */
  readonly vsSemaphore: number;
  readonly aheadOfSemaphore: boolean;
  /** Rounds in which the pipeline row was faster than the redis-semaphore row. */
  readonly roundsAheadOfSemaphore: number;
  readonly rounds: number;
}

function targetsOf(rows: readonly Aggregate[]): TargetCheck[] {
  return CONCURRENCIES.map((concurrency) => {
    const pipeline = rows.find((r) => r.id === rowId('pipeline', concurrency));
    const semaphore = rows.find((r) => r.id === rowId('redis-semaphore', concurrency));
    const vsNoLock = pipeline?.vsNoLock ?? Number.NaN;
    const vsSemaphore = (pipeline?.msgPerSec ?? Number.NaN) / (semaphore?.msgPerSec ?? Number.NaN);
    const ours = pipeline?.roundMsgPerSec ?? [];
    const theirs = semaphore?.roundMsgPerSec ?? [];
    return {
      concurrency,
      vsNoLock,
      vsNoLockHolds: vsNoLock >= TARGET_VS_NO_LOCK,
      vsNoLockMedian: median(pipeline?.roundVsNoLock ?? []),
      vsSemaphore,
      aheadOfSemaphore: vsSemaphore > 1,
      roundsAheadOfSemaphore: ours.filter((rate, i) => rate > (theirs[i] ?? Number.POSITIVE_INFINITY)).length,
      rounds: Math.min(ours.length, theirs.length),
    };
  });
}

function report(
  env: Environment,
  rows: readonly Aggregate[],
  targets: TargetCheck[],
  runSeconds: number,
): string {
  const table = markdownTable(
    [
      'Pollers',
      'Setup',
      'msg/s',
      'vs no lock',
      'per round: median (min–max)',
      'Redis cmds/msg',
      'Redis round trips/msg',
      'SQS calls/msg',
      'p50 ms',
      'p99 ms',
      'CPU µs/msg (node)',
      'CPU µs/msg (redis)',
      'msg/s spread',
    ],
    rows.map((r) => [
      String(r.concurrency),
      r.errors > 0 ? `${r.label} (${r.errors} errors)` : r.label,
      fmt(r.msgPerSec),
      fmtRatio(r.vsNoLock),
      roundRatios(r.roundVsNoLock),
      fmt(r.redisCommandsPerMsg, 2),
      fmt(r.redisRoundTripsPerMsg, 2),
      fmt(r.sqsCallsPerMsg, 2),
      fmt(r.latency.p50Ms, 1),
      fmt(r.latency.p99Ms, 1),
      fmt(r.processCpuUsPerMsg),
      fmt(r.redisCpuUsPerMsg),
      `±${fmt(relativeSpread(r.roundMsgPerSec) * 100)}%`,
    ]),
    [
      'right',
      'left',
      'right',
      'right',
      'right',
      'right',
      'right',
      'right',
      'right',
      'right',
      'right',
      'right',
      'right',
    ],
  );
  const verdict = (holds: boolean, ratio: number): string =>
    Number.isNaN(ratio) ? 'not measured' : holds ? 'holds' : 'MISSED';
  const commandLines = rows
    .filter((r) => r.engine !== 'no-lock' && r.concurrency === CONCURRENCIES[0])
    .map((r) => `- ${r.label}: ${commandsByName(r)} per message`);
  const errors = rows.filter((r) => r.errors > 0);
  return [
    '## Worker: messages per second, sqs-consumer vs this pipeline vs redis-semaphore',
    '',
    environmentHeader(env, {
      redis: 'redis-server',
      nodes: 'Nodes',
      sqs: 'SQS',
      settings: 'Settings',
    }),
    '',
    table,
    '',
    'msg/s = messages / (last delete - first receive), summed over the rounds; "vs no lock" = msg/s over the ' +
      'no-lock row with as many pollers, "per round" = the same ratio within each round (the rows of a ' +
      'round run back to back); ' +
      'p50 / p99 = receive to delete of each message; "Redis cmds/msg" = INFO commandstats calls over the 3 ' +
      'nodes per message, commands run inside Lua scripts included, admin commands (INFO, CONFIG, ...) ' +
      'left out; "round trips/msg" = commands the lock clients sent per message; "SQS calls/msg" = SQS ' +
      'requests (receives, deletes, ...) per message from start to the last delete; CPU per message: this ' +
      'process (consumer, AWS SDK and the in-process fauxqs alike) and the 3 redis-servers together; ' +
      '"msg/s spread" = half the min-max range of the per-round msg/s.',
    '',
    'CPU µs per message added over no lock, split node / redis-servers (this process: consumer, AWS SDK ' +
      'and the in-process fauxqs; the 3 redis-servers: INFO cpu deltas), against the no-lock row with as ' +
      'many pollers, same run:',
    '',
    costTable(
      rows.map((r) => ({
        group: `${r.concurrency} pollers`,
        label: r.label,
        role: ENGINE_ROLES[r.engine],
        processCpuUsPerMsg: r.processCpuUsPerMsg,
        redisCpuUsPerMsg: r.redisCpuUsPerMsg,
      })),
      'Pollers',
    ),
    '',
    `${FLOOR_NOTE} Load average at the end of the run (1 / 5 / 15 min): ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' / ')}.`,
    '',
    'Redis commands by name (INFO commandstats, per message):',
    ...commandLines,
    '',
    ...targets.flatMap((t) => [
      `- Target, ${t.concurrency} pollers: this pipeline >= ${TARGET_VS_NO_LOCK}x no-lock msg/s: ` +
        `${fmtRatio(t.vsNoLock)} (${verdict(t.vsNoLockHolds, t.vsNoLock)}; median of the rounds ` +
        `${fmtRatio(t.vsNoLockMedian)})`,
      `- Target, ${t.concurrency} pollers: this pipeline ahead of per-message RedlockMutex: ` +
        `${fmtRatio(t.vsSemaphore)} (${verdict(t.aheadOfSemaphore, t.vsSemaphore)}; ahead in ` +
        `${t.roundsAheadOfSemaphore} of ${t.rounds} rounds)`,
    ]),
    ...errors.map((r) => `- ${r.id}: ${r.errors} errors, first: ${r.firstError}`),
    `- Run time: ${runSeconds.toFixed(1)} s`,
  ].join('\n');
}

// ---------------------------------------------------------------------------

async function main(): Promise<void> {
  const json = wantsJson();
  const startedAt = performance.now();
  const redis = await startRedisNodes(NODES);
  let sqsEnv: SqsEnv | undefined;
  let redlock: Redlock | undefined;
  let baseRedlock: Redlock | undefined;
  try {
    sqsEnv = await startSqs();
    const semaphoreClients = redis.clients();
    const redlockClients = redis.clients();
    const statsClients = redis.clients();
    // Connected (handshake done) before any run, so no run counts a handshake.
    await Promise.all([...semaphoreClients, ...redlockClients, ...statsClients].map((c) => c.ping()));
    redlock = new Redlock(redlockClients, { ttlMs: LOCK_TTL_MS, logger: silentLogger });
    const baseClients = baseTree ? redis.clients() : [];
    await Promise.all(baseClients.map((c) => c.ping()));
    baseRedlock = baseTree
      ? (new baseTree.Redlock(baseClients, {
          ttlMs: LOCK_TTL_MS,
          logger: baseTree.createLogger({ silent: true }),
        }) as unknown as Redlock)
      : undefined;
    const sent = new SentCounter([...semaphoreClients, ...redlockClients, ...baseClients]);
    const sqsCalls = new SqsCallCounter();
    sqsCalls.watch(sqsEnv.sqs);
    const h: Harness = {
      sqsEnv,
      redis,
      fixture: { sqs: sqsEnv.sqs, semaphoreClients, redlock, baseRedlock },
      statsClients,
      sent,
      sqsCalls,
    };

    const infos = await Promise.all(statsClients.map((client) => client.info('server')));
    const env = environment({
      redis: [...new Set(infos.map(redisVersionOf))].join(', '),
      nodes: `${NODES} local redis-server processes (test/helpers/redis-nodes.ts)`,
      sqs: 'fauxqs in this process (test/helpers/sqs.ts), one fresh standard queue per run',
      settings:
        `${ROUNDS} interleaved rounds × ${MESSAGES} messages per run after a ${WARMUP_MESSAGES}-message ` +
        `warm-up per row; batch ${BATCH}, waitTimeSeconds ${WAIT_TIME_SECONDS}, visibility ` +
        `${VISIBILITY_TIMEOUT_SEC} s, lock TTL ${LOCK_TTL_MS} ms; work = JSON.parse + one setImmediate`,
    });

    for (const engine of ENGINES) {
      const concurrency = Math.max(...CONCURRENCIES);
      const result = await runOnce(h, engine, concurrency, -1, WARMUP_MESSAGES);
      progress(`warm-up ${rowId(engine, concurrency).padEnd(20)} ${fmt(rate([result])).padStart(6)} msg/s`);
    }

    const results: RunResult[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      for (const concurrency of rotate(CONCURRENCIES, round)) {
        for (const engine of rotate(ENGINES, round)) {
          const result = await runOnce(h, engine, concurrency, round, MESSAGES);
          results.push(result);
          progress(
            runProgress(`round ${round + 1}/${ROUNDS} ${rowId(engine, concurrency).padEnd(20)}`, result),
          );
        }
      }
    }

    const rows = aggregate(results);
    const targets = targetsOf(rows);
    const runSeconds = (performance.now() - startedAt) / 1000;
    printResult(
      json,
      () => ({
        environment: env,
        constants: {
          MESSAGES,
          WARMUP_MESSAGES,
          CONCURRENCIES,
          ROUNDS,
          BATCH,
          WAIT_TIME_SECONDS,
          VISIBILITY_TIMEOUT_SEC,
          LOCK_TTL_MS,
          NODES,
          TARGET_VS_NO_LOCK,
        },
        rows: rows.map((row) => ({
          ...row,
          runs: results
            .filter((r) => rowId(r.engine, r.concurrency) === row.id)
            .map((r) => runJson(r, { sqsCalls: r.sqsCalls })),
        })),
        targets,
        runSeconds,
      }),
      () => report(env, rows, targets, runSeconds),
    );
  } finally {
    await redlock?.quit();
    await baseRedlock?.quit();
    await sqsEnv?.stop();
    await redis.stop();
  }
}

await runMain(main);
