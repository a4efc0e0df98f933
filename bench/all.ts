/**
 * One report, every peer side by side in one run: the worker throughput of no lock, this project, two
 * per-message Redlock peers and a transport-floor diagnostic row under four Redis scenarios and one with
 * SQS latency, then the cost of keeping 1,000 long-running locks alive. Prints a markdown report and writes
 * it to bench/RESULTS.md (overwritten each run).
 *
 *   npm run bench            # markdown on stdout (and in bench/RESULTS.md), progress on stderr
 *   npm run bench -- --json  # raw numbers as JSON on stdout instead (bench/RESULTS.md is still written)
 *   npm run bench -- --quick # smoke run (1 round, few messages, 5 s hold): checks the harness, writes nothing
 *   npm run bench -- --only=no-lock,ours --scenarios=paused-1-of-3 --long-running=no   # a part, e.g. under
 *                                                   # --cpu-prof; a partial run does not write RESULTS.md
 *
 * Row ids (--only=): no-lock, ours, redis-semaphore, sesame, floor. Scenario ids (--scenarios=): healthy-3,
 * sqs-latency-3, healthy-5, killed-1-of-3, paused-1-of-3.
 *
 * Setup: one fauxqs SQS emulator in this process (test/helpers/sqs.ts) and 5 redis-server processes
 * (test/helpers/redis-nodes.ts), started once and shared by every row. Every worker run gets a fresh
 * standard queue pre-filled with the same MESSAGES JSON bodies and consumes it until every message is
 * deleted. Every row polls with the same POLLERS sqs-consumer pollers, batch 10, waitTimeSeconds 1, the
 * same visibility and requested attributes; the work per message is JSON.parse + one setImmediate.
 *
 * Rows (the lock TTL is LOCK_TTL_MS everywhere; no row retries an acquire):
 * - no lock: plain sqs-consumer (`handleMessageBatch`, the batch's messages in parallel, one
 *   DeleteMessageBatch).
 * - this project: `new Worker({ batchSize: 10, concurrency: POLLERS, ... })` over a Redlock with
 *   `commandTimeoutMs` COMMAND_TIMEOUT_MS (its default): the batch is locked, completed and deleted with
 *   one round trip per node per step. Its clients are plain ioredis clients (the Redlock bounds each
 *   call itself).
 * - redis-semaphore: the no-lock setup with each message wrapped in
 *   `new RedlockMutex(clients, messageId, { lockTimeout, acquireAttemptsLimit: 1 })`: acquire, work,
 *   release; refreshInterval at its default (the per-lock refresh timer is armed and cleared per message).
 *   RedlockMutex has no per-call timeout and waits for every node (Promise.all), so its clients get the
 *   ioredis `commandTimeout` COMMAND_TIMEOUT_MS: the same bound as ours.
 * - @sesamecare-oss/redlock: the no-lock setup with each message run by
 *   `redlock.using([messageId], LOCK_TTL_MS, work)` (acquire, work, release, with its per-lock
 *   auto-extension timer: all three rows keep their locks alive while a handler runs), settings
 *   `retryCount: 0` (acquire and release: one attempt, like the others), `driftFactor` 0.01 (ours too),
 *   clients with the ioredis `commandTimeout` COMMAND_TIMEOUT_MS. It resolves as soon as a quorum voted.
 * - transport floor (a diagnostic row, not a peer: no target compares with it): the no-lock setup plus,
 *   per batch, before the work and after it, one PING to each of the scenario's quorum nodes that is
 *   connected, waiting only for a quorum (floor(n/2)+1) of answers, as a batch-locking Redlock must (ours
 *   resolves at quorum too). Its own clients, with the ioredis `commandTimeout` COMMAND_TIMEOUT_MS. What two
 *   quorum round trips per batch cost on this machine with no Lua and no lock: roughly the ceiling of any
 *   batch-locking engine's vs-no-lock ratio. PING is an admin command, so its Redis cmds/msg is 0; its round
 *   trips/msg counts the PINGs.
 *
 * Scenarios: 3 healthy nodes (nodes 0-2), 5 healthy nodes (0-4), 1 of 3 killed (node 2 gets SIGKILL before
 * the scenario's rows of a round and is restarted after them) and 1 of 3 paused (node 2 gets SIGSTOP at
 * the start of every run and SIGCONT at its end): the targets are about these four (ISSUE_SCENARIOS).
 * One more, "SQS at 5 ms per call" (nodes 0-2 healthy): every SQS call of every row goes through a second
 * SQSClient of the same fauxqs server whose middleware waits SQS_LATENCY_MS before each request, a stand-in
 * for the network and service time of real SQS (usually more: 5 ms is conservative in favour of the
 * no-lock row); the report lists it under "Context". Rows are interleaved: each round runs every scenario
 * and, within it, every row, rotating both orders each round, after one discarded warm-up run per row
 * (3 healthy nodes; the delayed SQS client gets a few warm-up calls of its own).
 * The nodes are flushed and their stats reset before every run.
 *
 * Measured per run: msg/s = messages / (last delete - first receive); receive -> delete latency per
 * message ("added" = over the no-lock row's percentile in the same scenario); Redis commands per message =
 * `INFO commandstats` deltas summed over every running node (commands Lua scripts run included, admin
 * commands left out; a paused node is counted once it has worked off its backlog after SIGCONT); Redis
 * round trips per message = commands the row's own ioredis clients sent.
 *
 * Long-running handlers: EXTENSION_LOCKS locks on nodes 0-2 held for EXTENSION_HOLD_MS with a short TTL
 * (EXTENSION_TTL_MS) so many extension ticks happen, every engine renewing each lock every TTL / 3:
 * - this project's Worker: EXTENSION_LOCKS messages in flight (100 pollers, handlers blocked), their locks
 *   kept alive by its Redlock's extender (every due lock in one call per node per tick, about TTL / 3);
 * - this project's Redlock with `autoExtend` (its one extender renews every due lock in one call per node),
 *   locks taken 10 per acquireMany, the batches spread evenly over one extension interval;
 * - EXTENSION_LOCKS redis-semaphore RedlockMutex instances, refreshInterval = TTL / 3 (one timer per lock),
 *   taken in the same spread batches.
 * Counted over the hold: round trips per node (commands the engine's clients sent) and `INFO commandstats`.
 */
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import { ListQueuesCommand, type Message, SQSClient } from '@aws-sdk/client-sqs';
import { Redlock as SesameRedlock } from '@sesamecare-oss/redlock';
import type { Redis } from 'ioredis';
import { RedlockMutex } from 'redis-semaphore';
import { BaseHandler, isLock, type Lock, Redlock, Worker } from '../src/index.ts';
import { type RedisNode, type RedisNodes, startRedisNodes } from '../test/helpers/redis-nodes.ts';
import { type SqsEnv, startSqs } from '../test/helpers/sqs.ts';
import {
  aroundQuorumPings,
  type CostRow,
  commandsByName,
  costTable,
  FLOOR_NOTE,
  fillQueue,
  type MeasuredRun,
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
  sleep,
  summarize,
  totalCalls,
  wantsJson,
} from './shared.ts';

// ---------------------------------------------------------------------------
// Settings

/** `--quick`: a smoke run of the harness, far too short for figures; bench/RESULTS.md is left alone. */
const QUICK = process.argv.slice(2).includes('--quick');
/** `--only=`, `--scenarios=`, `--long-running=no`: a part of the run (RESULTS.md is left alone). */
const PARTIAL = process.argv.slice(2).some((arg) => /^--(only|scenarios|long-running)=/.test(arg));

/** The comma-separated values of `--name=a,b` picked from `all` (all of them without the flag). */
function pick<T extends string>(name: string, all: readonly T[]): T[] {
  const list = process.argv
    .slice(2)
    .find((arg) => arg.startsWith(`--${name}=`))
    ?.slice(name.length + 3);
  if (list === undefined) return [...all];
  const picked = list.split(',').map((v) => v.trim());
  const unknown = picked.filter((v) => !all.includes(v as T));
  if (unknown.length > 0) throw new Error(`--${name}: unknown ${unknown.join(', ')} (${all.join(', ')})`);
  return all.filter((v) => picked.includes(v));
}

/** Messages per measured run, the same for every row of every scenario. */
const MESSAGES = QUICK ? 200 : 2_000;
/** Messages of the discarded warm-up run of every row (3 healthy nodes). */
const WARMUP_MESSAGES = QUICK ? 50 : 300;
/** sqs-consumer pollers per row (the Worker's `concurrency`); each handles one batch at a time. */
const POLLERS = 4;
/** Each row is measured once per round; scenarios and rows are interleaved within a round. */
const ROUNDS = QUICK ? 1 : 3;
/** Messages per ReceiveMessage. */
const BATCH = 10;
/** Long-poll wait of every receive, in seconds (only the tail of a run ever waits). */
const WAIT_TIME_SECONDS = 1;
/** Visibility timeout of the queues and of every receive, in seconds: no message is received twice. */
const VISIBILITY_TIMEOUT_SEC = 60;
/** Lock TTL of every engine in the worker rows, in ms. */
const LOCK_TTL_MS = 30_000;
/**
 * Per-node command bound of every engine: this project's `commandTimeoutMs` (its default), and the
 * ioredis `commandTimeout` of the peers' clients (they have no bound of their own).
 */
const COMMAND_TIMEOUT_MS = 500;
/** redis-server processes started once for the whole run. */
const TOTAL_NODES = 5;
/** The node killed or paused in the fault scenarios (one of the 3 quorum members). */
const FAULTY_NODE = 2;
/** Wait before every SQS request in the "SQS at 5 ms per call" scenario, in ms (a stand-in for real SQS). */
const SQS_LATENCY_MS = 5;
/** Region and credentials of the delayed SQS client: those of test/helpers/sqs.ts (fauxqs checks neither). */
const SQS_REGION = 'us-east-1';
const SQS_CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' };
/** A run that has not deleted every message by then fails (something is wrong, not slow). */
const RUN_TIMEOUT_MS = 90_000;

/** Locks held at once in the long-running-handler test. */
const EXTENSION_LOCKS = 1_000;
/** How long they are held, in ms. */
const EXTENSION_HOLD_MS = QUICK ? 5_000 : 30_000;
/** Their TTL, in ms: short, so that many extension ticks happen during the hold. */
const EXTENSION_TTL_MS = 3_000;
/** Extension cadence of both engines: ours extends a lock TTL / 3 after its last renewal. */
const EXTENSION_INTERVAL_MS = EXTENSION_TTL_MS / 3;
/** Locks taken together (one acquireMany for ours), as a worker locking batches of 10 would. */
const EXTENSION_ACQUIRE_BATCH = 10;
/**
 * The batches are taken evenly spread over this many ms, as a worker receiving messages over time takes
 * them; one extension interval, so every phase of the extension cycle holds some locks.
 */
const EXTENSION_ACQUIRE_SPREAD_MS = EXTENSION_INTERVAL_MS;

/** Targets of this project (reported, never used to tune the measurement). */
const TARGET_VS_NO_LOCK = 0.85;
const TARGET_FAULT_VS_HEALTHY = 0.8;
const TARGET_COMMANDS_VS_BEST_PEER = 1 / 3;
/** "O(1) round trips per node per tick": at most this many per extension period, whatever the lock count. */
const TARGET_EXTENSION_ROUND_TRIPS_PER_PERIOD = 2;

const RESULTS_FILE = new URL('./RESULTS.md', import.meta.url);

// ---------------------------------------------------------------------------
// Scenarios and rows

type ScenarioId = 'healthy-3' | 'sqs-latency-3' | 'healthy-5' | 'killed-1-of-3' | 'paused-1-of-3';
type Fault = 'none' | 'kill' | 'pause';

interface Scenario {
  readonly id: ScenarioId;
  readonly label: string;
  /** Quorum members: nodes 0 .. nodes-1. */
  readonly nodes: 3 | 5;
  readonly fault: Fault;
  /** Every SQS call of every row goes through {@link Fixture.delayedSqs} (SQS_LATENCY_MS per request). */
  readonly sqsLatency: boolean;
}

const ALL_SCENARIOS: readonly Scenario[] = [
  { id: 'healthy-3', label: '3 healthy nodes', nodes: 3, fault: 'none', sqsLatency: false },
  {
    id: 'sqs-latency-3',
    label: `3 healthy nodes, SQS at ${SQS_LATENCY_MS} ms per call`,
    nodes: 3,
    fault: 'none',
    sqsLatency: true,
  },
  { id: 'healthy-5', label: '5 healthy nodes', nodes: 5, fault: 'none', sqsLatency: false },
  { id: 'killed-1-of-3', label: '1 of 3 killed (SIGKILL)', nodes: 3, fault: 'kill', sqsLatency: false },
  { id: 'paused-1-of-3', label: '1 of 3 paused (SIGSTOP)', nodes: 3, fault: 'pause', sqsLatency: false },
];
/** The scenarios the targets of the issue are about (the others are context). */
const ISSUE_SCENARIOS: readonly ScenarioId[] = ['healthy-3', 'healthy-5', 'killed-1-of-3', 'paused-1-of-3'];

type EngineId = 'no-lock' | 'ours' | 'redis-semaphore' | 'sesame' | 'floor';
const ENGINES: readonly EngineId[] = pick('only', [
  'no-lock',
  'ours',
  'redis-semaphore',
  'sesame',
  'floor',
] as const);
const SCENARIOS: readonly Scenario[] = ALL_SCENARIOS.filter((s) =>
  pick(
    'scenarios',
    ALL_SCENARIOS.map((x) => x.id),
  ).includes(s.id),
);
const LONG_RUNNING = !process.argv.slice(2).includes('--long-running=no');
/** The rows this project is judged against ('floor' is a diagnostic, never one of them). */
const PEERS: readonly EngineId[] = ['redis-semaphore', 'sesame'];

const ENGINE_LABELS: Record<EngineId, string> = {
  'no-lock': 'sqs-consumer, no lock',
  ours: 'sqs-redlock-worker Worker',
  'redis-semaphore': 'sqs-consumer + redis-semaphore RedlockMutex per message',
  sesame: 'sqs-consumer + @sesamecare-oss/redlock using() per message',
  floor: 'sqs-consumer + 2 quorum round trips of PING per batch (transport floor: no Lua, no locks)',
};

// ---------------------------------------------------------------------------
// Observation helpers (the probe, the work and the Redis counters: bench/rows.ts)

async function until(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// ---------------------------------------------------------------------------
// The engines

interface Fixture {
  readonly sqsEnv: SqsEnv;
  /** A second client of the same fauxqs server that waits SQS_LATENCY_MS before each request. */
  readonly delayedSqs: SQSClient;
  readonly redis: RedisNodes;
  /** This project's lock engine over nodes 0-2 and over 0-4 (the same 5 clients). */
  readonly ours: Record<3 | 5, Redlock>;
  readonly semaphoreClients: Redis[];
  readonly sesame: Record<3 | 5, SesameRedlock>;
  /** Every engine client, by engine (5 each: one per node). */
  readonly clients: Record<Exclude<EngineId, 'no-lock'>, Redis[]>;
  readonly sent: Record<Exclude<EngineId, 'no-lock'>, SentCounter>;
  /** One client per node for INFO cpu only (admin: never counted). */
  readonly statsClients: Redis[];
}

type Start = (f: Fixture, scenario: Scenario, queueUrl: string, probe: Probe) => Promise<Running>;

/**
 * What every row polls with: POLLERS pollers, BATCH, WAIT_TIME_SECONDS, VISIBILITY_TIMEOUT_SEC, through the
 * scenario's SQS client (the delayed one in the SQS-latency scenario).
 */
function polling(f: Fixture, scenario: Scenario): PollSettings {
  return {
    sqs: scenario.sqsLatency ? f.delayedSqs : f.sqsEnv.sqs,
    pollers: POLLERS,
    batchSize: BATCH,
    waitTimeSeconds: WAIT_TIME_SECONDS,
    visibilityTimeoutSec: VISIBILITY_TIMEOUT_SEC,
  };
}

/** A second client of the same fauxqs server whose middleware waits SQS_LATENCY_MS before each request. */
function delayedSqsClient(endpoint: string): SQSClient {
  const client = new SQSClient({ endpoint, region: SQS_REGION, credentials: SQS_CREDENTIALS });
  client.middlewareStack.add(
    (next) => async (args) => {
      await sleep(SQS_LATENCY_MS);
      return next(args);
    },
    { step: 'finalizeRequest', name: 'benchLatency' },
  );
  return client;
}

const startNoLock: Start = async (f, scenario, queueUrl, probe) =>
  startConsumers(polling(f, scenario), queueUrl, probe, (message) => work(message.Body));

const startSemaphore: Start = async (f, scenario, queueUrl, probe) =>
  startConsumers(
    polling(f, scenario),
    queueUrl,
    probe,
    underRedlockMutex(f.semaphoreClients.slice(0, scenario.nodes), LOCK_TTL_MS),
  );

const startSesame: Start = async (f, scenario, queueUrl, probe) => {
  const sesame = f.sesame[scenario.nodes];
  return startConsumers(polling(f, scenario), queueUrl, probe, (message) =>
    sesame.using([message.MessageId as string], LOCK_TTL_MS, () => work(message.Body)),
  );
};

const startOurs: Start = (f, scenario, queueUrl, probe) =>
  startWorker(polling(f, scenario), f.ours[scenario.nodes], queueUrl, probe);

/**
 * The transport floor of a batch-locking Redlock: the no-lock setup plus, before and after each batch's
 * work, one PING to every connected quorum node, waiting for a quorum of answers. No Lua, no locks.
 */
const startFloor: Start = async (f, scenario, queueUrl, probe) =>
  startConsumers(
    polling(f, scenario),
    queueUrl,
    probe,
    (message) => work(message.Body),
    aroundQuorumPings(f.clients.floor.slice(0, scenario.nodes)),
  );

const STARTS: Record<EngineId, Start> = {
  'no-lock': startNoLock,
  ours: startOurs,
  'redis-semaphore': startSemaphore,
  sesame: startSesame,
  floor: startFloor,
};

// ---------------------------------------------------------------------------
// Faults

function faultyNode(f: Fixture): RedisNode {
  return f.redis.nodes[FAULTY_NODE] as RedisNode;
}

/** The engine clients connected to the faulty node. */
function faultyClients(f: Fixture): Redis[] {
  return [...Object.values(f.clients), f.statsClients].map((clients) => clients[FAULTY_NODE] as Redis);
}

async function killFaulty(f: Fixture): Promise<void> {
  await faultyNode(f).kill();
  // Every client has seen the connection go, so no run starts by writing into a dead socket.
  await until('the clients to see the killed node', () =>
    faultyClients(f).every((c) => c.status !== 'ready'),
  );
}

async function restartFaulty(f: Fixture): Promise<void> {
  await faultyNode(f).restart();
  await until(
    'the clients to reconnect to the restarted node',
    () => faultyClients(f).every((c) => c.status === 'ready'),
    15_000,
  );
}

/**
 * After SIGCONT: the node works off what the clients queued while it was stopped. A PING on each engine
 * client answers after everything sent before it on that connection, so the stats read next count it.
 * Twice: a late reply can make an engine send more (an EVAL after NOSCRIPT on a restarted node), and the
 * second PING queues behind that.
 */
async function drainFaulty(f: Fixture): Promise<void> {
  const ping = async (client: Redis): Promise<void> => {
    const deadline = performance.now() + 10_000;
    for (;;) {
      try {
        await client.ping();
        return;
      } catch (error) {
        if (performance.now() > deadline) throw error;
      }
    }
  };
  await Promise.all(
    faultyClients(f).map(async (client) => {
      await ping(client);
      await ping(client);
    }),
  );
}

// ---------------------------------------------------------------------------
// One measured run

interface RunResult extends MeasuredRun {
  readonly scenario: ScenarioId;
  readonly engine: EngineId;
}

let queueSeq = 0;

/** User + system CPU of `nodes`, summed, in µs (INFO is an admin command: not counted as a command). */
function nodesCpuUs(f: Fixture, nodes: readonly RedisNode[]): Promise<number> {
  return redisCpuUs(nodes.map((node) => f.statsClients[f.redis.nodes.indexOf(node)] as Redis));
}

async function runOnce(
  f: Fixture,
  scenario: Scenario,
  engine: EngineId,
  round: number,
  messages: number,
): Promise<RunResult> {
  const queue = f.sqsEnv.createQueue(`bench-all-${++queueSeq}-${scenario.id}-${engine}`, {
    visibilityTimeoutSec: VISIBILITY_TIMEOUT_SEC,
  });
  const running = f.redis.nodes.filter((node) => node.isRunning);
  const paused = scenario.fault === 'pause';
  try {
    fillQueue(f.sqsEnv, queue.queueName, messages);
    await resetNodes(running);
    const sentBefore = engine === 'no-lock' ? 0 : f.sent[engine].total;
    const redisCpuBefore = await nodesCpuUs(f, running);
    const probe = new Probe(messages);
    if (paused) faultyNode(f).pause();
    let roundTrips = 0;
    let processCpuUs = 0;
    const cpuBefore = process.cpuUsage();
    try {
      const started = await STARTS[engine](f, scenario, queue.queueUrl, probe);
      try {
        await untilSettled(probe, `${scenario.id}/${engine}`, RUN_TIMEOUT_MS);
        const cpu = process.cpuUsage(cpuBefore);
        processCpuUs = cpu.user + cpu.system;
      } finally {
        await started.stop();
      }
      roundTrips = engine === 'no-lock' ? 0 : f.sent[engine].total - sentBefore;
    } finally {
      if (paused) {
        faultyNode(f).resume();
        await drainFaulty(f);
      }
    }
    const commandStats = addCounts(...(await Promise.all(running.map((node) => node.commandStats()))));
    const redisCpu = (await nodesCpuUs(f, running)) - redisCpuBefore;
    return {
      scenario: scenario.id,
      engine,
      round,
      messages,
      ...probeFigures(probe),
      commandStats,
      roundTrips,
      processCpuUs,
      redisCpuUs: redisCpu,
    };
  } finally {
    f.sqsEnv.server.deleteQueue(queue.queueName);
  }
}

// ---------------------------------------------------------------------------
// Long-running handlers: the cost of keeping EXTENSION_LOCKS locks alive

type ExtensionEngine = 'ours-worker' | 'ours-redlock' | 'redis-semaphore';
const EXTENSION_ENGINES: readonly ExtensionEngine[] = ['ours-worker', 'ours-redlock', 'redis-semaphore'];

const EXTENSION_LABELS: Record<ExtensionEngine, string> = {
  'ours-worker': `sqs-redlock-worker Worker: ${fmt(EXTENSION_LOCKS)} in-flight messages`,
  'ours-redlock': 'sqs-redlock-worker Redlock, autoExtend (one extender)',
  'redis-semaphore': `redis-semaphore RedlockMutex × ${fmt(EXTENSION_LOCKS)} (per-lock refresh timers)`,
};

interface ExtensionResult {
  readonly engine: ExtensionEngine;
  readonly label: string;
  readonly locks: number;
  readonly holdMs: number;
  /** Time it took to take every lock, in ms. */
  readonly acquireMs: number;
  /** Commands the engine's clients sent to each node during the hold (its round trips). */
  readonly roundTripsPerNode: number[];
  /** `INFO commandstats` over the 3 nodes during the hold, admin commands included. */
  readonly commandStats: Record<string, number>;
  /** Lock renewals per node during the hold (PEXPIRE calls, both engines renew with one). */
  readonly renewalsPerNode: number[];
  /** Locks lost during the hold (none expected). */
  readonly lost: number;
}

interface HeldLocks {
  readonly lost: () => number;
  release(): Promise<void>;
  /** Stops the engine and closes its clients. */
  close(): Promise<void>;
}

/** Runs `take(b)` for every batch b, batch b starting b × spread / batches ms after the first. */
async function spreadOut(take: (batch: number) => Promise<void>): Promise<void> {
  const batches = EXTENSION_LOCKS / EXTENSION_ACQUIRE_BATCH;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: batches }, async (_, b) => {
      const at = started + (b * EXTENSION_ACQUIRE_SPREAD_MS) / batches;
      await sleep(Math.max(0, at - performance.now()));
      await take(b);
    }),
  );
}

async function holdOurs(clients: Redis[]): Promise<HeldLocks> {
  const redlock = new Redlock(clients, {
    ttlMs: EXTENSION_TTL_MS,
    autoExtend: true,
    commandTimeoutMs: COMMAND_TIMEOUT_MS,
    logger: silentLogger,
  });
  const locks: Lock[] = [];
  await spreadOut(async (b) => {
    const keys = Array.from({ length: EXTENSION_ACQUIRE_BATCH }, (_, j) => `ext:ours:${b}:${j}`);
    const results = await redlock.acquireMany(keys, { retryCount: 0 });
    for (const result of results) {
      if (!isLock(result)) throw new Error(`acquire refused: ${result.reason} ${result.detail}`);
      locks.push(result);
    }
  });
  return {
    lost: () => locks.filter((lock) => lock.state === 'lost').length,
    release: () => redlock.releaseMany(locks),
    close: () => redlock.quit(),
  };
}

/** Holds the handlers of every in-flight message until released. */
class HoldingHandler extends BaseHandler<string> {
  started = 0;
  readonly #gate: Promise<void>;
  readonly #onStarted: () => void;

  constructor(gate: Promise<void>, onStarted: () => void) {
    super();
    this.#gate = gate;
    this.#onStarted = onStarted;
  }

  hydrate(message: Message): string {
    return message.Body ?? '';
  }

  async handle(): Promise<void> {
    this.started++;
    this.#onStarted();
    await this.#gate;
  }
}

/**
 * A Worker with EXTENSION_LOCKS messages in flight (batches of 10, enough pollers for all of them), every
 * handler blocked until released: its Redlock's extender renews every in-flight lock, its heartbeat the
 * visibility.
 */
async function holdWorker(f: Fixture, clients: Redis[]): Promise<HeldLocks> {
  const redlock = new Redlock(clients, {
    ttlMs: EXTENSION_TTL_MS,
    commandTimeoutMs: COMMAND_TIMEOUT_MS,
    logger: silentLogger,
  });
  const queue = f.sqsEnv.createQueue(`bench-all-${++queueSeq}-long-running`, {
    visibilityTimeoutSec: VISIBILITY_TIMEOUT_SEC,
  });
  fillQueue(f.sqsEnv, queue.queueName, EXTENSION_LOCKS);
  let open: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  let allStarted: () => void = () => undefined;
  const started = new Promise<void>((resolve) => {
    allStarted = resolve;
  });
  const handler: HoldingHandler = new HoldingHandler(gate, () => {
    if (handler.started === EXTENSION_LOCKS) allStarted();
  });
  let processed = 0;
  let lost = 0;
  const worker = new Worker<string>({
    queueUrl: queue.queueUrl,
    sqs: f.sqsEnv.sqs,
    redlock,
    handler,
    batchSize: BATCH,
    concurrency: EXTENSION_LOCKS / BATCH,
    waitTimeSeconds: WAIT_TIME_SECONDS,
    visibilityTimeoutSec: VISIBILITY_TIMEOUT_SEC,
    heartbeatIntervalMs: EXTENSION_INTERVAL_MS,
    deadLetterQueueUrl: false,
    logger: silentLogger,
  });
  worker.on('message_processed', () => {
    processed++;
  });
  worker.on('lock_lost', () => {
    lost++;
  });
  await worker.start();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    started,
    new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`only ${handler.started} of ${EXTENSION_LOCKS} handlers started`)),
        RUN_TIMEOUT_MS,
      );
    }),
  ]).finally(() => clearTimeout(timer));
  return {
    lost: () => lost,
    release: async () => {
      open();
      await until('every held message to be processed', () => processed + lost >= EXTENSION_LOCKS, 30_000);
    },
    close: async () => {
      await worker.stop({ timeoutMs: 5_000 });
      await redlock.quit();
      f.sqsEnv.server.deleteQueue(queue.queueName);
    },
  };
}

async function holdSemaphore(clients: Redis[]): Promise<HeldLocks> {
  let lost = 0;
  const mutexes = Array.from(
    { length: EXTENSION_LOCKS },
    (_, i) =>
      new RedlockMutex(clients, `ext:semaphore:${i}`, {
        lockTimeout: EXTENSION_TTL_MS,
        refreshInterval: EXTENSION_INTERVAL_MS,
        acquireAttemptsLimit: 1,
        onLockLost: () => {
          lost++;
        },
      }),
  );
  await spreadOut(async (b) => {
    const batch = mutexes.slice(b * EXTENSION_ACQUIRE_BATCH, (b + 1) * EXTENSION_ACQUIRE_BATCH);
    await Promise.all(batch.map((mutex) => mutex.acquire()));
  });
  return {
    lost: () => lost,
    release: async () => {
      await Promise.all(mutexes.map((m) => m.release()));
    },
    close: async () => {
      await Promise.all(clients.map((client) => client.quit()));
    },
  };
}

async function measureExtension(f: Fixture, engine: ExtensionEngine): Promise<ExtensionResult> {
  const nodes = f.redis.nodes.slice(0, 3);
  await Promise.all(nodes.map((node) => node.flushAll()));
  // Fresh clients: the counts are this test's only. Ours bounds its calls itself; the peer's get the bound.
  const clients = nodes.map((node) =>
    node.client(engine === 'redis-semaphore' ? { commandTimeout: COMMAND_TIMEOUT_MS } : {}),
  );
  await Promise.all(clients.map((c) => c.ping()));
  const sent = new SentCounter(clients);
  const acquireStarted = performance.now();
  const holding =
    engine === 'ours-worker'
      ? await holdWorker(f, clients)
      : engine === 'ours-redlock'
        ? await holdOurs(clients)
        : await holdSemaphore(clients);
  const acquireMs = performance.now() - acquireStarted;
  await Promise.all(nodes.map((node) => node.resetStats()));
  const before = sent.perClient;
  await sleep(EXTENSION_HOLD_MS);
  const after = sent.perClient;
  const perNode = await Promise.all(nodes.map((node) => node.commandStats()));
  const lost = holding.lost();
  await holding.release();
  await holding.close();
  return {
    engine,
    label: EXTENSION_LABELS[engine],
    locks: EXTENSION_LOCKS,
    holdMs: EXTENSION_HOLD_MS,
    acquireMs,
    roundTripsPerNode: after.map((n, i) => n - (before[i] ?? 0)),
    commandStats: addCounts(...perNode),
    renewalsPerNode: perNode.map((stats) => stats.pexpire ?? 0),
    lost,
  };
}

interface ExtensionAggregate extends ExtensionResult {
  /** Extension periods in the hold (every lock is due once per period). */
  readonly periods: number;
  /** Round trips per node per extension period. */
  readonly roundTripsPerNodePerPeriod: number;
  /** Renewals per lock over the hold (mean over the nodes). */
  readonly renewalsPerLock: number;
  /** Locks renewed by one round trip (mean). */
  readonly locksPerRoundTrip: number;
  /** `INFO commandstats` calls over the 3 nodes per extension period, admin left out. */
  readonly commandsPerPeriod: number;
  /** Of which top-level (round trips over the 3 nodes). */
  readonly roundTripsPerPeriod: number;
  /** Commands per lock renewal (3 nodes). */
  readonly commandsPerRenewal: number;
}

function aggregateExtension(r: ExtensionResult): ExtensionAggregate {
  const periods = r.holdMs / EXTENSION_INTERVAL_MS;
  const mean = (values: readonly number[]): number => values.reduce((a, b) => a + b, 0) / values.length;
  const roundTrips = mean(r.roundTripsPerNode);
  const renewals = mean(r.renewalsPerNode);
  const commands = totalCalls(r.commandStats);
  return {
    ...r,
    periods,
    roundTripsPerNodePerPeriod: roundTrips / periods,
    renewalsPerLock: renewals / r.locks,
    locksPerRoundTrip: renewals / roundTrips,
    commandsPerPeriod: commands / periods,
    roundTripsPerPeriod: (roundTrips * r.roundTripsPerNode.length) / periods,
    commandsPerRenewal: commands / (renewals * r.renewalsPerNode.length),
  };
}

// ---------------------------------------------------------------------------
// Aggregation

interface Aggregate extends RowFigures {
  readonly scenario: ScenarioId;
  readonly engine: EngineId;
  readonly label: string;
  /** Latency over the no-lock row's percentile in the same scenario. */
  readonly addedP50Ms: number;
  readonly addedP99Ms: number;
}

function aggregate(results: readonly RunResult[]): Aggregate[] {
  const rows: Aggregate[] = [];
  for (const scenario of SCENARIOS) {
    const baseline = results.filter((r) => r.scenario === scenario.id && r.engine === 'no-lock');
    const baseLatency = summarize(baseline.flatMap((r) => r.latenciesMs));
    for (const engine of ENGINES) {
      const runs = results.filter((r) => r.scenario === scenario.id && r.engine === engine);
      rows.push({
        scenario: scenario.id,
        engine,
        label: ENGINE_LABELS[engine],
        ...rowFigures(runs, baseline, {
          afterLatency: (latency) => ({
            addedP50Ms: latency.p50Ms - baseLatency.p50Ms,
            addedP99Ms: latency.p99Ms - baseLatency.p99Ms,
          }),
        }),
      });
    }
  }
  return rows;
}

// ---------------------------------------------------------------------------
// Targets

interface Verdict {
  readonly target: string;
  readonly measured: string;
  readonly holds: boolean;
}

function row(rows: readonly Aggregate[], scenario: ScenarioId, engine: EngineId): Aggregate | undefined {
  return rows.find((r) => r.scenario === scenario && r.engine === engine);
}

function targetsOf(
  rows: readonly Aggregate[],
  results: readonly RunResult[],
  extension: readonly ExtensionAggregate[],
): Verdict[] {
  const verdicts: Verdict[] = [];
  const ours3 = row(rows, 'healthy-3', 'ours');
  const floor3 = row(rows, 'healthy-3', 'floor');
  verdicts.push({
    target: `this project >= ${TARGET_VS_NO_LOCK}x no-lock msg/s, 3 healthy nodes`,
    measured:
      `${fmtRatio(ours3?.vsNoLock)} (per round ${roundRatios(ours3?.roundVsNoLock ?? [])})` +
      (floor3
        ? `; transport floor in the same run: ${fmtRatio(floor3.vsNoLock)} (per round ${roundRatios(floor3.roundVsNoLock)})`
        : ''),
    holds: (ours3?.vsNoLock ?? 0) >= TARGET_VS_NO_LOCK,
  });
  const issueScenarios = SCENARIOS.filter((s) => ISSUE_SCENARIOS.includes(s.id));
  for (const scenario of issueScenarios) {
    const ours = row(rows, scenario.id, 'ours');
    const peers = PEERS.map((peer) => row(rows, scenario.id, peer));
    const ratios = peers.map((p) => (ours?.msgPerSec ?? 0) / (p?.msgPerSec ?? Number.NaN));
    const roundsAhead = roundsAheadOfPeers(results, scenario.id);
    verdicts.push({
      target: `this project ahead of every peer row, ${scenario.label}`,
      measured:
        PEERS.map((peer, i) => `${fmtRatio(ratios[i])} ${peer}`).join(', ') +
        ` (ahead of both in ${roundsAhead} of ${ROUNDS} rounds)`,
      // Ahead overall and in most rounds: one lucky round must not carry the verdict.
      holds: ratios.every((r) => r > 1) && roundsAhead > ROUNDS / 2,
    });
  }
  for (const scenarioId of ['killed-1-of-3', 'paused-1-of-3'] as const) {
    const faulty = row(rows, scenarioId, 'ours');
    const ratio = (faulty?.msgPerSec ?? 0) / (ours3?.msgPerSec ?? Number.NaN);
    // Judged on the ratios over each scenario's own no-lock row: the scenarios ran at different moments of a
    // shared machine, and a stopped node also frees a core for everything else.
    const normalized = (faulty?.vsNoLock ?? 0) / (ours3?.vsNoLock ?? Number.NaN);
    const label = ALL_SCENARIOS.find((s) => s.id === scenarioId)?.label ?? scenarioId;
    verdicts.push({
      target: `this project, ${label}: >= ${TARGET_FAULT_VS_HEALTHY}x its 3-healthy figure (vs-no-lock ratio over vs-no-lock ratio)`,
      measured:
        `${fmtRatio(faulty?.vsNoLock)} / ${fmtRatio(ours3?.vsNoLock)} = ${fmtRatio(normalized)}; ` +
        `raw msg/s ${fmtRatio(ratio)}`,
      holds: normalized >= TARGET_FAULT_VS_HEALTHY,
    });
  }
  for (const scenario of issueScenarios) {
    const ours = row(rows, scenario.id, 'ours');
    const peers = PEERS.map((peer) => row(rows, scenario.id, peer)).filter((p) => p !== undefined);
    const best = Math.min(...peers.map((p) => p.redisCommandsPerMsg));
    const bestTrips = Math.min(...peers.map((p) => p.redisRoundTripsPerMsg));
    const ratio = (ours?.redisCommandsPerMsg ?? Number.NaN) / best;
    const tripRatio = (ours?.redisRoundTripsPerMsg ?? Number.NaN) / bestTrips;
    verdicts.push({
      target: `Redis commands per message <= 1/3 of the best peer's (INFO commandstats), ${scenario.label}`,
      measured:
        `${fmt(ours?.redisCommandsPerMsg ?? Number.NaN, 2)} vs ${fmt(best, 2)}: ${fmtRatio(ratio)}; ` +
        `round trips ${fmt(ours?.redisRoundTripsPerMsg ?? Number.NaN, 2)} vs ${fmt(bestTrips, 2)}: ${fmtRatio(tripRatio)}`,
      holds: ratio <= TARGET_COMMANDS_VS_BEST_PEER,
    });
  }
  const semaphore = extension.find((e) => e.engine === 'redis-semaphore');
  for (const ours of extension.filter((e) => e.engine !== 'redis-semaphore')) {
    verdicts.push({
      target:
        `extension cost O(1) round trips per node per tick, ${EXTENSION_LABELS[ours.engine]} (<= ` +
        `${TARGET_EXTENSION_ROUND_TRIPS_PER_PERIOD} per node per extension period with ${fmt(EXTENSION_LOCKS)} locks)`,
      measured:
        `${fmt(ours.roundTripsPerNodePerPeriod, 2)} per node per period, ${fmt(ours.locksPerRoundTrip)} locks per ` +
        'round trip' +
        (semaphore
          ? `; per-lock timers: ${fmt(semaphore.roundTripsPerNodePerPeriod)} per node per period, ` +
            `${fmt(semaphore.locksPerRoundTrip, 2)} lock per round trip`
          : '') +
        (ours.lost > 0 ? `; ${ours.lost} locks LOST` : ''),
      holds: ours.roundTripsPerNodePerPeriod <= TARGET_EXTENSION_ROUND_TRIPS_PER_PERIOD && ours.lost === 0,
    });
  }
  return verdicts;
}

/**
 * Figures outside the targets: this project with SQS latency, and how close the transport floor lies (the
 * vs-no-lock ratio a batch-locking engine could reach at most). Rows that did not run are left out.
 */
function contextOf(rows: readonly Aggregate[]): string[] {
  const lines: string[] = [];
  const ratio = (r: Aggregate): string =>
    `${fmtRatio(r.vsNoLock)} (per round ${roundRatios(r.roundVsNoLock)})`;
  const labelOf = (id: ScenarioId): string => ALL_SCENARIOS.find((s) => s.id === id)?.label ?? id;
  const oursSlow = row(rows, 'sqs-latency-3', 'ours');
  if (oursSlow) lines.push(`this project vs no lock, ${labelOf('sqs-latency-3')}: ${ratio(oursSlow)}`);
  for (const id of ['healthy-3', 'sqs-latency-3'] as const) {
    const floor = row(rows, id, 'floor');
    if (floor) lines.push(`transport floor vs no lock, ${labelOf(id)}: ${ratio(floor)}`);
  }
  return lines;
}

function roundsAheadOfPeers(results: readonly RunResult[], scenario: ScenarioId): number {
  let ahead = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const of = (engine: EngineId): number => {
      const r = results.find((x) => x.scenario === scenario && x.engine === engine && x.round === round);
      return r ? rate([r]) : Number.NaN;
    };
    const ours = of('ours');
    if (PEERS.every((peer) => ours > of(peer))) ahead++;
  }
  return ahead;
}

// ---------------------------------------------------------------------------
// Report

function loadAverage(): string {
  return os
    .loadavg()
    .map((n) => n.toFixed(2))
    .join(' / ');
}

/** Per locked row of the 3-healthy scenario: CPU added over no lock, and the ratio it predicts. */
/** How the cost table counts each row. */
const COST_ROLES: Record<EngineId, CostRow['role']> = {
  'no-lock': 'no-lock',
  ours: 'ours',
  'redis-semaphore': 'semaphore',
  sesame: 'peer',
  floor: 'floor',
};

function cpuLines(rows: readonly Aggregate[]): string[] {
  const base = row(rows, 'healthy-3', 'no-lock');
  if (!base) return [];
  const baseCpu = base.processCpuUsPerMsg + base.redisCpuUsPerMsg;
  return rows
    .filter((r) => r.scenario === 'healthy-3' && r.engine !== 'no-lock')
    .map(
      (r) =>
        `- ${r.label}: +${fmt(r.processCpuUsPerMsg - base.processCpuUsPerMsg)} µs node, ` +
        `+${fmt(r.redisCpuUsPerMsg - base.redisCpuUsPerMsg)} µs redis per message; predicted ` +
        `${fmtRatio(baseCpu / (r.processCpuUsPerMsg + r.redisCpuUsPerMsg))}, measured ${fmtRatio(r.vsNoLock)}`,
    );
}

function report(
  env: Environment,
  rows: readonly Aggregate[],
  extension: readonly ExtensionAggregate[],
  verdicts: readonly Verdict[],
  context: readonly string[],
  runSeconds: number,
  loadAtEnd: string,
): string {
  const scenarioLabel = new Map(SCENARIOS.map((s) => [s.id, s.label]));
  const workerTable = markdownTable(
    [
      'Scenario',
      'Setup',
      'msg/s',
      'vs no lock',
      'per round: median (min–max)',
      'p50 ms',
      'p99 ms',
      'added p50 / p99 ms',
      'Redis cmds/msg',
      'Redis round trips/msg',
      'CPU µs/msg (node / redis)',
      'msg/s spread',
    ],
    rows.map((r) => [
      scenarioLabel.get(r.scenario) ?? r.scenario,
      r.errors > 0 ? `${r.label} (${r.errors} errors)` : r.label,
      fmt(r.msgPerSec),
      fmtRatio(r.vsNoLock),
      roundRatios(r.roundVsNoLock),
      fmt(r.latency.p50Ms, 1),
      fmt(r.latency.p99Ms, 1),
      r.engine === 'no-lock' ? '–' : `${fmt(r.addedP50Ms, 1)} / ${fmt(r.addedP99Ms, 1)}`,
      fmt(r.redisCommandsPerMsg, 2),
      fmt(r.redisRoundTripsPerMsg, 2),
      `${fmt(r.processCpuUsPerMsg)} / ${fmt(r.redisCpuUsPerMsg)}`,
      `±${fmt(relativeSpread(r.roundMsgPerSec) * 100)}%`,
    ]),
    [
      'left',
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
    ],
  );
  // The floor sends PING only, an admin command: it has none to list.
  const commandLines = rows
    .filter((r) => r.engine !== 'no-lock' && r.engine !== 'floor' && r.scenario === 'healthy-3')
    .map((r) => `- ${r.label}: ${commandsByName(r)}`);
  const extensionTable = markdownTable(
    [
      'Engine',
      'Locks',
      'Round trips per node per period',
      'Round trips per period (3 nodes)',
      'Redis cmds per period (3 nodes)',
      'Locks per round trip',
      'Renewals per lock',
      'Redis cmds per renewal',
      'Lost',
      'Taking the locks (ms)',
    ],
    extension.map((e) => [
      e.label,
      fmt(e.locks),
      fmt(e.roundTripsPerNodePerPeriod, 2),
      fmt(e.roundTripsPerPeriod, 1),
      fmt(e.commandsPerPeriod),
      fmt(e.locksPerRoundTrip, e.locksPerRoundTrip < 10 ? 2 : 0),
      fmt(e.renewalsPerLock, 1),
      fmt(e.commandsPerRenewal, 2),
      String(e.lost),
      fmt(e.acquireMs),
    ]),
    ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
  );
  const errors = rows.filter((r) => r.errors > 0);
  return [
    '# Benchmark results: sqs-redlock-worker vs no lock vs per-message Redlock peers',
    '',
    environmentHeader(env, {
      redis: 'redis-server',
      nodes: 'Nodes',
      sqs: 'SQS',
      settings: 'Settings',
      timeouts: 'Timeouts',
      load: 'Load average at start (1 / 5 / 15 min)',
    }),
    `- Load average at end (1 / 5 / 15 min): ${loadAtEnd}`,
    `- Run time: ${runSeconds.toFixed(1)} s`,
    '',
    '## Worker throughput',
    '',
    workerTable,
    '',
    'msg/s = messages / (last delete - first receive), summed over the rounds; "vs no lock" = msg/s over the ' +
      'no-lock row of the same scenario (the figure to read on a shared machine), "per round" = that ratio within each round; p50 / p99 = receive to ' +
      'delete of each message, "added" = over the no-lock row\'s percentile in the same scenario; "Redis cmds/msg" ' +
      '= INFO commandstats calls over every running node per message, commands run inside Lua scripts included, ' +
      'admin commands (INFO, CONFIG, PING, ...) left out; "round trips/msg" = commands the row\'s own clients ' +
      'sent per message; "CPU µs/msg" = CPU time per message of this process (engine, AWS SDK and the ' +
      'in-process fauxqs alike) and of the running redis-servers together; "msg/s spread" = half the min-max ' +
      'range of the per-round msg/s. @sesamecare-oss/redlock also runs a SELECT (via pcall) in each of its ' +
      'scripts; SELECT counts as an admin command here, so its figure is one command per script call per node low. ' +
      'The transport floor row is a diagnostic, not a peer: the no-lock setup plus, before and after each ' +
      "batch's work, one PING to each of the scenario's connected quorum nodes, waiting for a quorum of answers " +
      '(as a batch-locking Redlock must; this project resolves at quorum too): what two quorum round trips per ' +
      'batch cost on this machine with no Lua and no lock, so about the best vs-no-lock ratio any batch-locking ' +
      'engine can reach here; PING is an admin command, so its Redis cmds/msg is 0 and its round trips/msg ' +
      `counts the PINGs. In "${ALL_SCENARIOS.find((s) => s.id === 'sqs-latency-3')?.label}" every SQS call of ` +
      `every row goes through a client that waits ${SQS_LATENCY_MS} ms before each request, a stand-in for the ` +
      'network and service time of real SQS (usually more, so conservative in favour of the no-lock row).',
    '',
    'Redis commands by name, 3 healthy nodes (INFO commandstats per message, all nodes):',
    ...commandLines,
    '',
    'Where the time goes, 3 healthy nodes: this process, fauxqs and the redis-servers share the same cores, so a ' +
      "row's msg/s follows its CPU per message (node + redis) closely; CPU added per message over the no-lock row, " +
      'and the vs-no-lock ratio that CPU alone predicts:',
    ...cpuLines(rows),
    '',
    '### CPU µs per message added over no lock, split node / redis-servers',
    '',
    costTable(
      rows.map((r) => ({
        group: scenarioLabel.get(r.scenario) ?? r.scenario,
        label: r.label,
        role: COST_ROLES[r.engine],
        processCpuUsPerMsg: r.processCpuUsPerMsg,
        redisCpuUsPerMsg: r.redisCpuUsPerMsg,
      })),
      'Scenario',
    ),
    '',
    `Node = this process (the engine, the AWS SDK and the in-process fauxqs alike), redis-servers = INFO cpu ` +
      `deltas of the running nodes, both over the no-lock row of the same scenario and run. ${FLOOR_NOTE} ` +
      `The targets: ours at most a third of per-message redis-semaphore's added CPU or within 1.5x of the ` +
      `floor's, whichever is larger; redis-servers at most half of redis-semaphore's. Load average at the end of ` +
      `the run: ${loadAtEnd}.`,
    '',
    `## Long-running handlers: ${fmt(EXTENSION_LOCKS)} locks held for ${EXTENSION_HOLD_MS / 1000} s`,
    '',
    extensionTable,
    '',
    `TTL ${EXTENSION_TTL_MS} ms on nodes 0-2; both engines renew a lock every ${EXTENSION_INTERVAL_MS} ms ` +
      `(ours: TTL / 3 after its last renewal, one extender per Redlock renewing every due lock in one call per ` +
      `node; redis-semaphore: refreshInterval ${EXTENSION_INTERVAL_MS} ms, one timer and one call per node per ` +
      `lock). Locks taken in batches of ${EXTENSION_ACQUIRE_BATCH} (one acquireMany for ours, ${EXTENSION_ACQUIRE_BATCH} ` +
      `acquires in parallel for redis-semaphore), the batches evenly spread over ${EXTENSION_ACQUIRE_SPREAD_MS} ms as ` +
      'a worker receiving messages over time takes them (the Worker row: 100 pollers taking a pre-filled queue), ' +
      'then counted over the hold only. ' +
      '"period" = one extension interval, in which every lock is renewed once: an extension tick of the whole set. ' +
      '"Round trips" = commands the engine\'s clients sent; "Redis cmds" = INFO commandstats calls (Lua-run ' +
      'GET / PEXPIRE included); "Renewals" = PEXPIRE calls per node. The Worker keeps its in-flight locks alive ' +
      "through its Redlock's extender, which renews every due lock in one call: one round trip per node per tick too.",
    '',
    '## Targets',
    '',
    ...verdicts.map((v) => `- ${v.target}: ${v.measured} — **${v.holds ? 'holds' : 'MISSED'}**`),
    ...errors.map((r) => `- ${r.scenario}/${r.engine}: ${r.errors} errors, first: ${r.firstError}`),
    '',
    ...(context.length > 0
      ? [
          `Context (no targets: those above are about ${ISSUE_SCENARIOS.map((id) => ALL_SCENARIOS.find((s) => s.id === id)?.label ?? id).join(', ')}):`,
          ...context.map((line) => `- ${line}`),
          '',
        ]
      : []),
    '## Reproduce',
    '',
    '```sh',
    'npm run bench            # this report, also written to bench/RESULTS.md',
    'npm run bench -- --json  # raw numbers',
    '```',
    '',
    'Needs redis-server on PATH (the harness starts 5 on free ports) and Node 24; fauxqs runs in process. ' +
      'The machine may be shared: read the ratios, not the absolute msg/s.',
  ].join('\n');
}

// ---------------------------------------------------------------------------

async function main(): Promise<void> {
  const json = wantsJson();
  const startedAt = performance.now();
  const loadAtStart = loadAverage();
  const redis = await startRedisNodes(TOTAL_NODES);
  let sqsEnv: SqsEnv | undefined;
  let delayedSqs: SQSClient | undefined;
  let ours5: Redlock | undefined;
  try {
    sqsEnv = await startSqs();
    const delayed = delayedSqsClient(sqsEnv.endpoint);
    delayedSqs = delayed;
    // Its connections open and its middleware resolved before any run, as the warm-up runs do for the other.
    for (let i = 0; i < 3; i++) {
      await Promise.all(Array.from({ length: POLLERS }, () => delayed.send(new ListQueuesCommand({}))));
    }
    const oursClients = redis.clients();
    const semaphoreClients = redis.clients({ commandTimeout: COMMAND_TIMEOUT_MS });
    const sesameClients = redis.clients({ commandTimeout: COMMAND_TIMEOUT_MS });
    const floorClients = redis.clients({ commandTimeout: COMMAND_TIMEOUT_MS });
    const statsClients = redis.clients({ commandTimeout: 2_000 });
    // Connected (handshake done) before any run, so no run counts a handshake.
    await Promise.all(
      [...oursClients, ...semaphoreClients, ...sesameClients, ...floorClients, ...statsClients].map((c) =>
        c.ping(),
      ),
    );
    const redlockOptions = { ttlMs: LOCK_TTL_MS, commandTimeoutMs: COMMAND_TIMEOUT_MS, logger: silentLogger };
    const ours3 = new Redlock(oursClients.slice(0, 3), redlockOptions);
    ours5 = new Redlock(oursClients, redlockOptions);
    const sesameSettings = { retryCount: 0, driftFactor: 0.01 };
    const f: Fixture = {
      sqsEnv,
      delayedSqs,
      redis,
      ours: { 3: ours3, 5: ours5 },
      semaphoreClients,
      sesame: {
        3: new SesameRedlock(sesameClients.slice(0, 3), sesameSettings),
        5: new SesameRedlock(sesameClients, sesameSettings),
      },
      clients: {
        ours: oursClients,
        'redis-semaphore': semaphoreClients,
        sesame: sesameClients,
        floor: floorClients,
      },
      sent: {
        ours: new SentCounter(oursClients),
        'redis-semaphore': new SentCounter(semaphoreClients),
        sesame: new SentCounter(sesameClients),
        floor: new SentCounter(floorClients),
      },
      statsClients,
    };

    const infoClients = redis.clients();
    const infos = await Promise.all(infoClients.map((client) => client.info('server')));
    for (const client of infoClients) client.disconnect();
    const env = environment({
      redis: [...new Set(infos.map(redisVersionOf))].join(', '),
      nodes: `${TOTAL_NODES} local redis-server processes (test/helpers/redis-nodes.ts), started once, shared by every row`,
      sqs:
        'fauxqs in this process (test/helpers/sqs.ts), one fresh standard queue per run; in the SQS-latency ' +
        `scenario every call goes through a second client that waits ${SQS_LATENCY_MS} ms before each request`,
      settings:
        `${ROUNDS} interleaved rounds × ${MESSAGES} messages per run (every row) after a ${WARMUP_MESSAGES}-message ` +
        `warm-up per row; ${POLLERS} pollers, batch ${BATCH}, waitTimeSeconds ${WAIT_TIME_SECONDS}, visibility ` +
        `${VISIBILITY_TIMEOUT_SEC} s, lock TTL ${LOCK_TTL_MS} ms, no acquire retries; work = JSON.parse + one setImmediate`,
      timeouts:
        `${COMMAND_TIMEOUT_MS} ms per node call for every engine: this project's commandTimeoutMs; the ioredis ` +
        'commandTimeout of the redis-semaphore and @sesamecare-oss/redlock clients (neither bounds a call itself; ' +
        'RedlockMutex waits for every node, sesame for a quorum); sesame retryCount 0, driftFactor 0.01 (ours 0.01); ' +
        'RedlockMutex acquireAttemptsLimit 1',
      load: loadAtStart,
    });
    progress(`load average ${loadAtStart}`);

    const healthy3 = ALL_SCENARIOS[0] as Scenario;
    for (const engine of ENGINES) {
      const result = await runOnce(f, healthy3, engine, -1, WARMUP_MESSAGES);
      progress(`warm-up ${engine.padEnd(16)} ${fmt(rate([result])).padStart(6)} msg/s`);
    }

    const results: RunResult[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      for (const scenario of rotate(SCENARIOS, round)) {
        if (scenario.fault === 'kill') await killFaulty(f);
        try {
          for (const engine of rotate(ENGINES, round)) {
            const result = await runOnce(f, scenario, engine, round, MESSAGES);
            results.push(result);
            progress(
              runProgress(
                `round ${round + 1}/${ROUNDS} ${scenario.id.padEnd(14)} ${engine.padEnd(16)}`,
                result,
              ),
            );
          }
        } finally {
          if (scenario.fault === 'kill') await restartFaulty(f);
        }
      }
    }

    const extensionResults: ExtensionResult[] = [];
    for (const engine of LONG_RUNNING ? EXTENSION_ENGINES : []) {
      progress(`long-running: ${engine}, ${EXTENSION_LOCKS} locks for ${EXTENSION_HOLD_MS / 1000} s`);
      const result = await measureExtension(f, engine);
      extensionResults.push(result);
      progress(
        `long-running: ${engine} round trips per node ${result.roundTripsPerNode.join(' / ')}, ` +
          `renewals per node ${result.renewalsPerNode.join(' / ')}, lost ${result.lost}`,
      );
    }

    const rows = aggregate(results);
    const extension = extensionResults.map(aggregateExtension);
    const verdicts = targetsOf(rows, results, extension);
    const context = contextOf(rows);
    const runSeconds = (performance.now() - startedAt) / 1000;
    const loadAtEnd = loadAverage();
    const markdown = report(env, rows, extension, verdicts, context, runSeconds, loadAtEnd);
    if (!QUICK && !PARTIAL) {
      await writeFile(RESULTS_FILE, `${markdown}\n`);
      progress(`written ${RESULTS_FILE.pathname}`);
    }
    printResult(
      json,
      () => ({
        environment: { ...env, loadAtEnd },
        constants: {
          MESSAGES,
          WARMUP_MESSAGES,
          POLLERS,
          ROUNDS,
          BATCH,
          WAIT_TIME_SECONDS,
          VISIBILITY_TIMEOUT_SEC,
          LOCK_TTL_MS,
          COMMAND_TIMEOUT_MS,
          TOTAL_NODES,
          FAULTY_NODE,
          SQS_LATENCY_MS,
          EXTENSION_LOCKS,
          EXTENSION_HOLD_MS,
          EXTENSION_TTL_MS,
          EXTENSION_INTERVAL_MS,
        },
        rows: rows.map((r) => ({
          ...r,
          runs: results
            .filter((x) => x.scenario === r.scenario && x.engine === r.engine)
            .map((x) => runJson(x)),
        })),
        extension,
        verdicts,
        context,
        runSeconds,
      }),
      () => markdown,
    );
  } finally {
    await ours5?.quit();
    delayedSqs?.destroy();
    await sqsEnv?.stop();
    await redis.stop();
  }
}

await runMain(main);
