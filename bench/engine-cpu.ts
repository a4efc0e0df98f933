/**
 * The lock engine's own JavaScript cost per lock, without Redis, sockets or ioredis: each Redlock runs
 * over 3 stub clients that answer every EVALSHA at once (a resolved promise with the healthy answer:
 * a fresh fencing token per acquired key, 1 per completed / released / extended key). What is left is
 * the engine's bookkeeping: argument building, promise chains, tallies, Lock objects, the extender,
 * timers. This tree and `--baseline=DIR` trees run interleaved in short rounds, CPU time per lock
 * (process.cpuUsage) is compared by the median and the minimum over the rounds, so a loaded machine
 * slows both alike.
 *
 *   node --expose-gc bench/engine-cpu.ts --baseline=/tmp/wt-perf [--rounds=15] [--batches=2000] [--batch=10]
 *
 * Workloads: "batch" = acquireMany(BATCH keys, autoExtend) + completeMany (the Worker's per-batch lock
 * calls); "single" = acquire + release of one key (bench/lock.ts's single row).
 */
import { EventEmitter } from 'node:events';
import { loadavg } from 'node:os';
import type * as Tree from '../src/index.ts';
import { median } from './rows.ts';
import { flagValue, fmt, fmtRatio, markdownTable, progress, rotate, runMain } from './shared.ts';

const ROUNDS = Number(flagValue('rounds') ?? 15);
const BATCHES = Number(flagValue('batches') ?? 2000);
const BATCH = Number(flagValue('batch') ?? 10);
const BASELINES = flagValue('baseline')?.split(',') ?? [];

/** Answers EVALSHA like a healthy node: replies by script (known by its sha). */
class StubClient extends EventEmitter {
  readonly status = 'ready';
  readonly isCluster = false;
  readonly options: { host: string; port: number };
  readonly #answer: Map<string, { keysPerLock: number; reply: () => number }>;

  constructor(port: number, scripts: readonly { sha: string; keysPerLock: number; name: string }[]) {
    super();
    this.options = { host: 'stub', port };
    let token = 1_000_000;
    this.#answer = new Map(
      scripts.map((s) => [
        s.sha,
        { keysPerLock: s.keysPerLock, reply: s.name === 'acquire' ? () => ++token : () => 1 },
      ]),
    );
  }

  evalsha(sha: string, numKeys: number | string, ..._args: unknown[]): Promise<unknown[]> {
    const answer = this.#answer.get(sha);
    if (!answer) return Promise.reject(new Error(`NOSCRIPT ${sha}`));
    return Promise.resolve(Array.from({ length: Number(numKeys) / answer.keysPerLock }, answer.reply));
  }

  eval(): Promise<unknown> {
    return Promise.reject(new Error('stub: no EVAL'));
  }

  async quit(): Promise<string> {
    return 'OK';
  }

  disconnect(): void {}
}

interface Engine {
  readonly name: string;
  readonly tree: typeof Tree;
  readonly redlock: Tree.Redlock;
}

async function load(dir: string, name: string): Promise<Engine> {
  const tree = (await import(`${dir}/src/index.ts`)) as typeof Tree;
  const scripts = await Promise.all(
    ['acquire', 'complete', 'release', 'extend'].map(async (m) => {
      const mod = (await import(`${dir}/src/lock/${m}.ts`)) as Record<string, unknown>;
      return Object.values(mod).find((v) => (v as { sha?: unknown })?.sha) as {
        sha: string;
        keysPerLock: number;
        name: string;
      };
    }),
  );
  const clients = [0, 1, 2].map((i) => new StubClient(i, scripts));
  const redlock = new tree.Redlock(clients as never, { logger: tree.createLogger({ silent: true }) });
  return { name, tree, redlock };
}

let seq = 0;

async function batchRound(e: Engine): Promise<number> {
  const before = process.cpuUsage();
  for (let b = 0; b < BATCHES; b++) {
    const keys = Array.from({ length: BATCH }, () => `m-${++seq}-5f0c3c1e-8b7a-4c1d-9d2e-1a2b3c4d5e6f`);
    const results = await e.redlock.acquireMany(keys, { retryCount: 0 });
    const locks = results.filter((r) => e.tree.isLock(r)) as Tree.Lock[];
    if (locks.length !== BATCH) throw new Error(`${e.name}: ${locks.length} of ${BATCH}`);
    await e.redlock.completeMany(locks);
  }
  const cpu = process.cpuUsage(before);
  return (cpu.user + cpu.system) / (BATCHES * BATCH);
}

async function singleRound(e: Engine): Promise<number> {
  const before = process.cpuUsage();
  const ops = BATCHES * 2;
  for (let i = 0; i < ops; i++) {
    const lock = await e.redlock.acquire(`s-${++seq}`, { retryCount: 0, autoExtend: false });
    await lock.release();
  }
  const cpu = process.cpuUsage(before);
  return (cpu.user + cpu.system) / ops;
}

async function main(): Promise<void> {
  const engines = [
    await load(new URL('..', import.meta.url).pathname, 'this tree'),
    ...(await Promise.all(BASELINES.map((dir) => load(dir, dir)))),
  ];
  const workloads = [
    ['batch', batchRound],
    ['single', singleRound],
  ] as const;
  const results = new Map<string, number[]>();
  for (const e of engines) for (const [, run] of workloads) await run(e); // warm-up
  for (let round = 0; round < ROUNDS; round++) {
    for (const e of rotate(engines, round)) {
      for (const [w, run] of workloads) {
        // With --expose-gc: every round starts from a collected heap, so it pays for its own garbage only.
        (globalThis as { gc?: () => void }).gc?.();
        const us = await run(e);
        results.set(`${w}/${e.name}`, [...(results.get(`${w}/${e.name}`) ?? []), us]);
      }
    }
    progress(`round ${round + 1}/${ROUNDS}`);
  }
  const rows = workloads.flatMap(([w]) =>
    engines.map((e) => {
      const ours = results.get(`${w}/${e.name}`) ?? [];
      const first = results.get(`${w}/${engines[0]?.name}`) ?? [];
      return [
        w,
        e.name,
        fmt(median(ours), 2),
        fmt(Math.min(...ours), 2),
        fmtRatio(median(ours) / median(first)),
        fmtRatio(Math.min(...ours) / Math.min(...first)),
      ];
    }),
  );
  console.log(
    markdownTable(
      [
        'workload',
        'engine',
        'CPU µs per lock (median)',
        'CPU µs per lock (min)',
        'median vs this tree',
        'min vs this tree',
      ],
      rows,
      ['left', 'left', 'right', 'right', 'right', 'right'],
    ),
  );
  console.log(
    `\nbatch = acquireMany(${BATCH}) + completeMany per lock, ${BATCHES} batches a round; single = acquire + ` +
      `release, ${BATCHES * 2} a round; ${ROUNDS} interleaved rounds; stub nodes (no Redis, no ioredis). ` +
      `Load average at end: ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' / ')}`,
  );
  for (const e of engines) await e.redlock.quit();
}

await runMain(main);
