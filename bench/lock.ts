/**
 * Lock engine benchmark: acquire + release throughput and latency of this project's Redlock against
 * redis-semaphore's RedlockMutex and @sesamecare-oss/redlock, side by side on the same 3 redis-server
 * nodes (started by the test harness) and the same 3 ioredis clients.
 *
 *   npm run bench:lock            # markdown table on stdout, progress on stderr
 *   npm run bench:lock -- --json  # raw numbers as JSON on stdout instead
 *   npm run bench:lock -- --quick # 3 rounds of a quarter of the operations (a look, not a result)
 *   npm run bench:lock -- --baseline=/tmp/wt-perf   # also DIR/src's Redlock, interleaved (the *-base rows)
 *
 * Method: every measurement is a warm-up followed by a fixed number of operations run by CONCURRENCY
 * closed loops; one operation is acquire + release of one key (single) or of BATCH keys (batch). Every
 * operation uses keys no other operation uses (no contention: every acquire is granted at the first
 * attempt). Engines are interleaved in ROUNDS rounds, rotating their order each round, so machine noise
 * hits every row alike; the nodes are flushed between measurements so every row starts from the same
 * data set. Throughput = operations / wall time summed over the rounds; p50 / p99 are over the latencies
 * of all rounds.
 *
 * Settings that would add work, and how each engine is kept to a single attempt and no background work:
 * - this project: `retryCount: 0`, `autoExtend: false` (locks are still tracked so loss of validity is
 *   signalled: that is part of the engine), TTL 10 s, a silent logger; other options at their defaults.
 * - redis-semaphore RedlockMutex: `acquireAttemptsLimit: 1`, `refreshInterval: 0` (no auto-refresh
 *   timer), `lockTimeout` 10 s.
 * - @sesamecare-oss/redlock: `retryCount: 0` (also applies to release); no `using()`, so no
 *   auto-extension; duration 10 s. It resolves acquire/release as soon as a quorum (2 of 3) has
 *   answered, where the other two wait for all 3 nodes (bounded by a timeout in this project).
 */
import { Redlock as SesameRedlock } from '@sesamecare-oss/redlock';
import type { Redis } from 'ioredis';
import { RedlockMutex } from 'redis-semaphore';
import { type AcquireResult, createLogger, isLock, type Lock, Redlock } from '../src/index.ts';
import { startRedisNodes } from '../test/helpers/redis-nodes.ts';
import {
  type Environment,
  environment,
  environmentHeader,
  flagValue,
  fmt,
  fmtRatio,
  type LatencySummary,
  markdownTable,
  printResult,
  progress,
  type RunResult,
  redisVersionOf,
  runFixed,
  runMain,
  summarize,
  wantsJson,
} from './shared.ts';

/** Operations in flight at once, per measurement. */
const CONCURRENCY = 16;
/** Lock TTL of every engine, in ms. */
const TTL_MS = 10_000;
/** Keys per batch. */
const BATCH = 10;
/** Each row is measured once per round; rows are interleaved within a round. */
const QUICK = process.argv.includes('--quick');
const ROUNDS = QUICK ? 3 : 5;
/** Operations per measurement (a batch operation locks BATCH keys). Sized for a ~50 s run on 2 cores. */
const ITERATIONS = QUICK
  ? ({ single: 1_750, batch: 350 } as const)
  : ({ single: 7_000, batch: 1_400 } as const);
/**
 * Single-key latency is also measured unloaded, one operation in flight, after each throughput run: at
 * CONCURRENCY in flight on a small machine, p99 mostly measures queueing behind the other loops (and
 * the scheduler), i.e. throughput again. The latency target is judged on the unloaded figure; both are
 * printed.
 */
const UNLOADED_ITERATIONS = QUICK ? 300 : 600;
/** Operations run before each measurement and discarded. */
const WARMUP = QUICK ? ({ single: 250, batch: 50 } as const) : ({ single: 500, batch: 100 } as const);
/** `--baseline=DIR`: DIR/src's Redlock as well (rows `*\/ours-base`), e.g. a worktree of HEAD. */
const BASELINE_DIR = flagValue('baseline');
const baseTree: typeof import('../src/index.ts') | undefined = BASELINE_DIR
  ? await import(`${BASELINE_DIR}/src/index.ts`)
  : undefined;
/** Number of redis-server nodes (independent Redlock quorum members). */
const NODES = 3;

/** Targets of this project (reported, never used to tune the measurement). */
const TARGET_BATCH_VS_SEMAPHORE = 3;
const TARGET_SINGLE_P99_VS_BEST_PEER = 1.2;

type Workload = 'single' | 'batch';
type EngineId = 'ours' | 'ours-base' | 'redis-semaphore' | 'sesame' | 'sesame-multi';

interface Row {
  readonly id: string;
  readonly workload: Workload;
  readonly engine: EngineId;
  readonly label: string;
  /** Acquire + release of `keys` (one key for single rows). */
  readonly op: (keys: string[]) => Promise<void>;
}

interface RowResult {
  readonly row: Row;
  readonly rounds: RunResult[];
  readonly unloadedRounds: RunResult[];
}

const ENGINE_LABELS: Record<EngineId, string> = {
  ours: 'sqs-redlock-worker Redlock',
  'ours-base': `baseline Redlock (${BASELINE_DIR ?? '--baseline'}/src)`,
  'redis-semaphore': 'redis-semaphore RedlockMutex',
  sesame: '@sesamecare-oss/redlock',
  'sesame-multi': '@sesamecare-oss/redlock multi-resource (all-or-nothing, not equivalent)',
};

/** The single and batch rows of a Redlock of this project (this tree's, or the --baseline tree's). */
function redlockRows(
  redlock: Redlock,
  engine: 'ours' | 'ours-base',
  locked: (result: AcquireResult) => boolean,
): [Row, Row] {
  return [
    {
      id: `single/${engine}`,
      workload: 'single',
      engine,
      label: ENGINE_LABELS[engine],
      op: async ([key]) => {
        const lock = await redlock.acquire(key as string);
        await lock.release();
      },
    },
    {
      id: `batch/${engine}`,
      workload: 'batch',
      engine,
      label: `${ENGINE_LABELS[engine]}: acquireMany + releaseMany`,
      op: async (keys) => {
        const results = await redlock.acquireMany(keys, { retryCount: 0 });
        const locks = results.filter(locked) as Lock[];
        await redlock.releaseMany(locks);
        if (locks.length !== keys.length) {
          throw new Error(`acquireMany granted ${locks.length} of ${keys.length}`);
        }
      },
    },
  ];
}

function buildRows(clients: Redis[]): { rows: Row[]; ours: Redlock } {
  const ours = new Redlock(clients, {
    ttlMs: TTL_MS,
    retryCount: 0,
    autoExtend: false,
    logger: createLogger({ silent: true }),
  });

  const semaphoreOptions = { lockTimeout: TTL_MS, acquireAttemptsLimit: 1, refreshInterval: 0 };

  const sesame = new SesameRedlock(clients, { retryCount: 0 });
  // Redlock emits 'error' for every node that votes against; without a listener EventEmitter would throw.
  sesame.on('error', () => undefined);

  const [oursSingle, oursBatch] = redlockRows(ours, 'ours', isLock);
  const rows: Row[] = [
    oursSingle,
    {
      id: 'single/redis-semaphore',
      workload: 'single',
      engine: 'redis-semaphore',
      label: ENGINE_LABELS['redis-semaphore'],
      op: async ([key]) => {
        const mutex = new RedlockMutex(clients, key as string, semaphoreOptions);
        await mutex.acquire();
        await mutex.release();
      },
    },
    {
      id: 'single/sesame',
      workload: 'single',
      engine: 'sesame',
      label: ENGINE_LABELS.sesame,
      op: async (keys) => {
        const lock = await sesame.acquire(keys, TTL_MS);
        await lock.release();
      },
    },
    oursBatch,
    {
      id: 'batch/redis-semaphore',
      workload: 'batch',
      engine: 'redis-semaphore',
      label: `${ENGINE_LABELS['redis-semaphore']} × ${BATCH} in parallel`,
      op: async (keys) => {
        const mutexes = keys.map((key) => new RedlockMutex(clients, key, semaphoreOptions));
        await Promise.all(mutexes.map((mutex) => mutex.acquire()));
        await Promise.all(mutexes.map((mutex) => mutex.release()));
      },
    },
    {
      id: 'batch/sesame',
      workload: 'batch',
      engine: 'sesame',
      label: `${ENGINE_LABELS.sesame} × ${BATCH} in parallel`,
      op: async (keys) => {
        const locks = await Promise.all(keys.map((key) => sesame.acquire([key], TTL_MS)));
        await Promise.all(locks.map((lock) => lock.release()));
      },
    },
    {
      id: 'batch/sesame-multi',
      workload: 'batch',
      engine: 'sesame-multi',
      label: ENGINE_LABELS['sesame-multi'],
      op: async (keys) => {
        const lock = await sesame.acquire(keys, TTL_MS);
        await lock.release();
      },
    },
  ];
  if (baseTree) {
    const base = new baseTree.Redlock(clients, {
      ttlMs: TTL_MS,
      retryCount: 0,
      autoExtend: false,
      logger: baseTree.createLogger({ silent: true }),
    }) as unknown as Redlock;
    rows.push(...redlockRows(base, 'ours-base', (r) => baseTree.isLock(r as never)));
  }
  return { rows, ours };
}

function keysFor(row: Row, tag: string, i: number): string[] {
  const size = row.workload === 'single' ? 1 : BATCH;
  return Array.from({ length: size }, (_, j) => `bench:${row.id}:${tag}:${i}:${j}`);
}

async function measure(
  row: Row,
  round: number,
  flush: () => Promise<void>,
): Promise<{ loaded: RunResult; unloaded: RunResult | undefined }> {
  await flush();
  const run = (phase: string, iterations: number, concurrency = CONCURRENCY): Promise<RunResult> =>
    runFixed({
      iterations,
      concurrency,
      op: (i) => row.op(keysFor(row, `${round}:${phase}`, i)),
    });
  await run('warmup', WARMUP[row.workload]);
  const loaded = await run('measure', ITERATIONS[row.workload]);
  const unloaded = row.workload === 'single' ? await run('unloaded', UNLOADED_ITERATIONS, 1) : undefined;
  return { loaded, unloaded };
}

/** Rows of each workload in a different order every round, so none always runs first or last. */
function roundOrder(rows: readonly Row[], round: number): Row[] {
  const ordered: Row[] = [];
  for (const workload of ['single', 'batch'] as const) {
    const group = rows.filter((row) => row.workload === workload);
    const shift = round % group.length;
    ordered.push(...group.slice(shift), ...group.slice(0, shift));
  }
  return ordered;
}

interface Aggregate {
  readonly id: string;
  readonly workload: Workload;
  readonly engine: EngineId;
  readonly label: string;
  readonly keysPerOp: number;
  readonly opsPerSec: number;
  readonly locksPerSec: number;
  readonly roundOpsPerSec: number[];
  readonly latency: LatencySummary;
  readonly errors: number;
  readonly firstError: string | undefined;
  /** Throughput over redis-semaphore's in the same workload. */
  readonly vsSemaphore: number;
  /** Single rows: p99 over the lowest p99 among the other engines. */
  readonly p99VsBestPeer: number | undefined;
  /** Single rows: latency with one operation in flight. */
  readonly unloaded: LatencySummary | undefined;
  /** Single rows: unloaded p99 over the lowest unloaded p99 among the other engines. */
  readonly unloadedP99VsBestPeer: number | undefined;
}

function aggregate(results: readonly RowResult[]): Aggregate[] {
  const base = results.map(({ row, rounds, unloadedRounds }) => {
    const ops = rounds.reduce((n, r) => n + r.iterations, 0);
    const ms = rounds.reduce((n, r) => n + r.durationMs, 0);
    const keysPerOp = row.workload === 'single' ? 1 : BATCH;
    const opsPerSec = (ops / ms) * 1000;
    return {
      id: row.id,
      workload: row.workload,
      engine: row.engine,
      label: row.label,
      keysPerOp,
      opsPerSec,
      locksPerSec: opsPerSec * keysPerOp,
      roundOpsPerSec: rounds.map((r) => (r.iterations / r.durationMs) * 1000),
      latency: summarize(rounds.flatMap((r) => r.latenciesMs)),
      errors: rounds.reduce((n, r) => n + r.errors, 0),
      firstError: rounds.find((r) => r.firstError)?.firstError?.message,
      unloaded:
        unloadedRounds.length > 0 ? summarize(unloadedRounds.flatMap((r) => r.latenciesMs)) : undefined,
    };
  });
  return base.map((a) => {
    const semaphore = base.find((b) => b.workload === a.workload && b.engine === 'redis-semaphore');
    // The baseline tree's rows are this engine before a change, never a peer.
    const peers = base.filter(
      (b) => b.workload === 'single' && b.engine !== a.engine && b.engine !== 'ours-base',
    );
    return {
      ...a,
      vsSemaphore: semaphore ? a.opsPerSec / semaphore.opsPerSec : Number.NaN,
      p99VsBestPeer:
        a.workload === 'single' && peers.length > 0
          ? a.latency.p99Ms / Math.min(...peers.map((p) => p.latency.p99Ms))
          : undefined,
      unloadedP99VsBestPeer:
        a.unloaded && peers.length > 0
          ? a.unloaded.p99Ms / Math.min(...peers.map((p) => p.unloaded?.p99Ms ?? Number.POSITIVE_INFINITY))
          : undefined,
    };
  });
}

function spread(values: readonly number[]): string {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return `±${fmt(((Math.max(...values) - Math.min(...values)) / 2 / mean) * 100, 0)}%`;
}

interface Targets {
  readonly batchVsSemaphore: number;
  readonly batchVsSemaphoreHolds: boolean;
  readonly singleP99VsBestPeer: number;
  readonly singleP99VsBestPeerHolds: boolean;
}

function targetsOf(rows: readonly Aggregate[]): Targets {
  const batch = rows.find((r) => r.id === 'batch/ours');
  const single = rows.find((r) => r.id === 'single/ours');
  const batchVsSemaphore = batch?.vsSemaphore ?? Number.NaN;
  const singleP99VsBestPeer = single?.unloadedP99VsBestPeer ?? Number.NaN;
  return {
    batchVsSemaphore,
    batchVsSemaphoreHolds: batchVsSemaphore >= TARGET_BATCH_VS_SEMAPHORE,
    singleP99VsBestPeer,
    singleP99VsBestPeerHolds: singleP99VsBestPeer <= TARGET_SINGLE_P99_VS_BEST_PEER,
  };
}

function report(env: Environment, rows: readonly Aggregate[], targets: Targets, runSeconds: number): string {
  const table = markdownTable(
    [
      'Workload',
      'Engine',
      'ops/s',
      'locks/s',
      'vs redis-semaphore',
      'p50 ms',
      'p99 ms',
      'p99 vs best peer',
      'unloaded p50 / p99 ms',
      'unloaded p99 vs best peer',
      'ops/s spread',
    ],
    rows.map((r) => [
      r.workload === 'single' ? 'single key' : `batch of ${BATCH}`,
      r.errors > 0 ? `${r.label} (${r.errors} errors)` : r.label,
      fmt(r.opsPerSec),
      fmt(r.locksPerSec),
      fmtRatio(r.vsSemaphore),
      fmt(r.latency.p50Ms, 2),
      fmt(r.latency.p99Ms, 2),
      fmtRatio(r.p99VsBestPeer),
      r.unloaded ? `${fmt(r.unloaded.p50Ms, 2)} / ${fmt(r.unloaded.p99Ms, 2)}` : '–',
      fmtRatio(r.unloadedP99VsBestPeer),
      spread(r.roundOpsPerSec),
    ]),
    ['left', 'left', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
  );
  const verdict = (holds: boolean): string => (holds ? 'holds' : 'MISSED');
  const errors = rows.filter((r) => r.errors > 0);
  return [
    '## Lock engines: acquire + release',
    '',
    environmentHeader(env, { redis: 'redis-server', nodes: 'Nodes', settings: 'Settings' }),
    '',
    table,
    '',
    `One op = acquire + release of 1 key (single) or ${BATCH} keys (batch); latency is per op. ` +
      '"vs redis-semaphore" = ops/s ratio in the same workload; "p99 vs best peer" = p99 over the lowest ' +
      `p99 of the other engines (at ${CONCURRENCY} ops in flight); "unloaded" = one op in flight, ` +
      `${UNLOADED_ITERATIONS} ops per round; "ops/s spread" = half the min-max range of the per-round ops/s.`,
    '',
    `- Target batch of ${BATCH} >= ${TARGET_BATCH_VS_SEMAPHORE}x redis-semaphore throughput: ` +
      `${fmtRatio(targets.batchVsSemaphore)} (${verdict(targets.batchVsSemaphoreHolds)})`,
    `- Target single-key p99 (unloaded) <= ${TARGET_SINGLE_P99_VS_BEST_PEER}x best peer: ` +
      `${fmtRatio(targets.singleP99VsBestPeer)} (${verdict(targets.singleP99VsBestPeerHolds)})`,
    ...errors.map((r) => `- ${r.id}: ${r.errors} failed ops, first: ${r.firstError}`),
    `- Run time: ${runSeconds.toFixed(1)} s`,
  ].join('\n');
}

async function main(): Promise<void> {
  const json = wantsJson();
  const startedAt = performance.now();
  const redis = await startRedisNodes(NODES);
  let ours: Redlock | undefined;
  try {
    const clients = redis.clients();
    const infos = await Promise.all(clients.map((client) => client.info('server')));
    const versions = [...new Set(infos.map(redisVersionOf))].join(', ');
    const built = buildRows(clients);
    ours = built.ours;
    const { rows } = built;
    const flush = async (): Promise<void> => {
      await Promise.all(redis.nodes.map((node) => node.flushAll()));
    };

    const env = environment({
      redis: versions,
      nodes: `${NODES} local redis-server processes (test/helpers/redis-nodes.ts), shared by all engines`,
      settings:
        `concurrency ${CONCURRENCY}, TTL ${TTL_MS} ms, ${ROUNDS} interleaved rounds × ` +
        `(${ITERATIONS.single} single ops | ${ITERATIONS.batch} batch ops) after ` +
        `${WARMUP.single} | ${WARMUP.batch} warm-up ops, no retries, no auto-extension`,
    });

    const rounds = new Map<string, RunResult[]>(rows.map((row) => [row.id, []]));
    const unloadedRounds = new Map<string, RunResult[]>(rows.map((row) => [row.id, []]));
    for (let round = 0; round < ROUNDS; round++) {
      for (const row of roundOrder(rows, round)) {
        const { loaded: result, unloaded } = await measure(row, round, flush);
        rounds.get(row.id)?.push(result);
        if (unloaded) unloadedRounds.get(row.id)?.push(unloaded);
        progress(
          `round ${round + 1}/${ROUNDS} ${row.id.padEnd(24)} ` +
            `${fmt((result.iterations / result.durationMs) * 1000).padStart(7)} ops/s` +
            (result.errors > 0 ? `  ${result.errors} errors` : ''),
        );
      }
    }

    const aggregates = aggregate(
      rows.map((row) => ({
        row,
        rounds: rounds.get(row.id) ?? [],
        unloadedRounds: unloadedRounds.get(row.id) ?? [],
      })),
    );
    const targets = targetsOf(aggregates);
    const runSeconds = (performance.now() - startedAt) / 1000;
    printResult(
      json,
      () => ({
        environment: env,
        constants: { CONCURRENCY, TTL_MS, BATCH, ROUNDS, ITERATIONS, WARMUP, NODES },
        rows: aggregates.map((a) => ({
          ...a,
          rounds: (rounds.get(a.id) ?? []).map((r) => ({
            iterations: r.iterations,
            durationMs: r.durationMs,
            opsPerSec: (r.iterations / r.durationMs) * 1000,
            errors: r.errors,
            latency: summarize(r.latenciesMs),
          })),
        })),
        targets,
        runSeconds,
      }),
      () => report(env, aggregates, targets, runSeconds),
    );
  } finally {
    // Quits the 3 shared clients (the peers hold no other resources: no timers were started).
    await ours?.quit();
    await redis.stop();
  }
}

await runMain(main);
