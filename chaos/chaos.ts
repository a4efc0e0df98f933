/**
 * `npm run chaos`: the fault-injection suite. N worker processes run through the real CLI
 * (`node src/cli.ts run chaos/handler.ts`) against fauxqs (in this process), 3 or 5 Redis quorum nodes
 * and a ledger on its own Redis node, while a seeded schedule of faults runs:
 *   - Redis: kill and restart a minority of nodes, pause (SIGSTOP) and resume them, and a quorum-loss
 *     window (a majority killed or paused at once) that ends;
 *   - workers: SIGKILL a worker mid-handle (a replacement starts), and the GC-pause story: SIGSTOP a
 *     worker mid-handle past its lock TTL and visibility, let other workers take its messages over, then
 *     SIGCONT it: its handlers write with their stale tokens, and the ledger's fencing rejects them;
 *   - handlers that throw (on first deliveries, and at random), and poison messages (dead-lettered).
 * Every handler run writes its effect to the ledger through `apply(id, fencingToken)`.
 *
 *   npm run chaos                                  # short profile, random seed
 *   npm run chaos -- --seed 1234 --profile full    # repeat a run
 *
 * Options: --seed <n|0xhex>, --profile short|full, --workers <n>, --messages <n>, --nodes 3|5,
 * --budget-ms <n>, --keep-logs, --unsafe-kills, --json.
 *
 * Pass: nothing lost (every normal message applied, every poison message dead-lettered), no effect
 * applied twice, and no two runs of one message at once outside the GC pauses. Exit code 0 only then.
 *
 * "Mid-handle" is exact: a worker is frozen (SIGSTOP) first, its output read, and it is killed or kept
 * frozen only if a handler is in its work phase and no message of it has been written to the ledger but
 * not yet deleted from the queue; otherwise it is resumed and tried again a moment later. A kill in that
 * last window (the effect done, the completion marker not yet written) makes the redelivery write again,
 * and no lock can prevent that (it is the downstream's idempotency that must): `--unsafe-kills` kills
 * without that check, to show it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';
import { Ledger } from '../test/helpers/ledger.ts';
import { type RedisNodes, startRedisNodes } from '../test/helpers/redis-nodes.ts';
import { type SqsEnv, sendMessages, startSqs } from '../test/helpers/sqs.ts';
import {
  allFaults,
  describeFault,
  FAULT_KINDS,
  type Fault,
  type FaultKind,
  mulberry32,
  type PlannedMessage,
  PROFILES,
  type Profile,
  type ProfileName,
  parseSeed,
  planFaults,
  planMessages,
  type RedisFault,
  type Schedule,
  type WorkerFault,
} from './schedule.ts';
import { ChaosWorker, type Run } from './workers.ts';

export interface ChaosOptions {
  readonly seed: number;
  /** @defaultValue 'short' */
  readonly profile?: ProfileName;
  /** Overrides of the profile. */
  readonly workers?: number;
  readonly messages?: number;
  readonly nodes?: 3 | 5;
  readonly durationBudgetMs?: number;
  /** Kill workers without waiting for a moment when none of their messages is written but not deleted. */
  readonly unsafeKills?: boolean;
  /** Keep the workers' logs even when the run passes. @defaultValue false (kept only on failure) */
  readonly keepLogs?: boolean;
  /** Where the seed, the schedule, the fault log and the report go. @defaultValue console.log */
  readonly log?: (line: string) => void;
  /** The live progress line, about once a second. @defaultValue none */
  readonly progress?: (line: string) => void;
}

export interface FaultRecord {
  readonly kind: FaultKind;
  readonly plannedMs: number;
  readonly startedMs: number;
  readonly endedMs: number;
  readonly outcome: 'done' | 'skipped' | 'killed-instead';
  readonly detail: string;
}

export interface ChaosReport {
  readonly seed: number;
  readonly profile: ProfileName;
  readonly workers: number;
  readonly nodes: number;
  /** Messages sent: normal + poison. */
  readonly sent: number;
  readonly normal: number;
  readonly poison: number;
  /** Normal messages whose effect the ledger holds. */
  readonly completed: number;
  /** Normal messages never applied + poison messages not dead-lettered. */
  readonly lost: number;
  readonly lostIds: readonly string[];
  /** Messages whose effect the ledger accepted more than once. */
  readonly appliedTwice: number;
  readonly appliedTwiceIds: readonly string[];
  /** Writes the ledger rejected because their fencing token was older than one it had accepted. */
  readonly staleRejected: number;
  /** Of them, writes of handlers resumed after a GC pause. */
  readonly staleWritesAfterPause: number;
  /** Handler runs started (ledger `begin`). */
  readonly runsStarted: number;
  /** runsStarted − completed: executions beyond the first, for any reason (retries, takeovers). */
  readonly duplicateExecutions: number;
  /** Runs that began while another run of the same message was in progress. */
  readonly concurrentRuns: number;
  /** Of them, outside the GC pauses (where the frozen run still counts as in progress): must be 0. */
  readonly unexpectedConcurrentRuns: number;
  readonly unexpectedConcurrentIds: readonly string[];
  /**
   * Of the concurrent runs across GC pauses: runs the resumed worker began (with a lock that had expired
   * during the pause) while another worker's run of the same message was in progress.
   */
  readonly concurrentRunsBegunAfterResume: readonly string[];
  /** Distinct poison messages in the dead-letter queue. */
  readonly deadLettered: number;
  /** Messages in the dead-letter queue (a poison message may be dead-lettered twice after a kill). */
  readonly deadLetterMessages: number;
  /** Handler runs that threw on purpose. */
  readonly handlerThrows: number;
  /** Handler runs that stopped on their aborted signal. */
  readonly abortedRuns: number;
  /** Faults carried out, by kind (a GC pause that had to end in a kill counts as a GC pause). */
  readonly faults: Readonly<Record<FaultKind, number>>;
  /** GC pauses that ended with a resume (the stale-write story), not a kill. */
  readonly gcResumed: number;
  readonly faultLog: readonly FaultRecord[];
  /** Of appliedTwiceIds, those a killed worker had written while their message was still queued. */
  readonly appliedTwiceAfterKillInWriteWindow: readonly string[];
  /** Event-loop stalls over 150 ms the workers' handler modules saw: count and worst, in ms. */
  readonly workerLag: { readonly count: number; readonly maxMs: number };
  /** This process's own stalls over 250 ms (it hosts fauxqs): count and worst, in ms. */
  readonly orchestratorLag: { readonly count: number; readonly maxMs: number };
  /** Worker processes that ended without being told to (crash). */
  readonly unexpectedExits: readonly string[];
  /** Final SIGTERM exits that were not code 0. */
  readonly uncleanShutdowns: readonly string[];
  /** Every message settled (applied or dead-lettered, queue empty) within the budget. */
  readonly converged: boolean;
  readonly durationMs: number;
  readonly pass: boolean;
  readonly failures: readonly string[];
  /** The workers' logs (kept on failure, or with keepLogs). */
  readonly logDir: string | undefined;
}

const LEDGER_PREFIX = 'chaos';
const REGION = 'us-east-1';
/** How long a worker fault looks for a mid-handle moment before it is skipped. */
const FIND_MOMENT_MS = 8_000;
/** A GC pause lasts at least this much past the lock TTL and the visibility timeout... */
const GC_MARGIN_MS = 1_000;
/**
 * ...and at most this long: past it, the frozen worker is killed instead of resumed. Taking its messages
 * over can need several backoffs when the pause overlaps a quorum loss (a lost lock, no quorum): 24 s
 * leaves room for that within the short profile's budget.
 */
const GC_MAX_MS = 24_000;
/** Runs a resumed worker starts this soon after SIGCONT count as part of the GC pause. */
const AFTER_RESUME_MS = 500;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const base = PROFILES[options.profile ?? 'short'];
  const profile: Profile = {
    ...base,
    workers: options.workers ?? base.workers,
    messages: options.messages ?? base.messages,
    nodes: options.nodes ?? base.nodes,
    durationBudgetMs: options.durationBudgetMs ?? base.durationBudgetMs,
  };
  const seed = options.seed >>> 0;
  const log = options.log ?? ((line: string) => console.log(line));
  log(`chaos seed: ${seed}   (repeat with: npm run chaos -- --seed ${seed} --profile ${profile.name})`);
  const plan = planMessages(seed, profile);
  const schedule = planFaults(seed, profile);
  const poison = plan.filter((m) => m.poison).length;
  log(
    `profile ${profile.name}: ${profile.workers} workers, ${plan.length} messages (${poison} poison), ` +
      `${profile.nodes} Redis nodes, lock TTL ${profile.lockTtlMs} ms, visibility ${profile.visibilityTimeoutSec} s, ` +
      `batch ${profile.batchSize} x concurrency ${profile.concurrency}, budget ${profile.durationBudgetMs / 1000} s`,
  );
  log('schedule:');
  for (const fault of allFaults(schedule)) {
    log(`  ${describeFault(fault)}`);
  }
  const logDir = mkdtempSync(path.join(os.tmpdir(), `sqs-redlock-chaos-${seed}-`));
  const run = new ChaosRun(seed, profile, plan, schedule, logDir, options, log);
  let report: ChaosReport | undefined;
  try {
    report = await run.execute();
    return report;
  } finally {
    await run.cleanup();
    if (report?.pass && !options.keepLogs) rmSync(logDir, { recursive: true, force: true });
    else log(`worker logs: ${logDir}`);
  }
}

class ChaosRun {
  readonly #seed: number;
  readonly #profile: Profile;
  readonly #plan: readonly PlannedMessage[];
  readonly #schedule: Schedule;
  readonly #logDir: string;
  readonly #options: ChaosOptions;
  readonly #log: (line: string) => void;
  readonly #random: () => number;
  readonly #normalIds: string[];
  readonly #poisonIds: string[];

  #redis: RedisNodes | undefined;
  #ledgerNode: RedisNodes | undefined;
  #sqs: SqsEnv | undefined;
  #queue: { queueUrl: string; queueName: string; dlqUrl?: string; dlqName?: string } | undefined;
  #ledgerClient: Redis | undefined;
  #ledger: Ledger | undefined;

  /** The worker in each slot now. */
  readonly #slots: ChaosWorker[] = [];
  readonly #generations: number[] = [];
  /** Every worker process started. */
  readonly #all: ChaosWorker[] = [];
  /** Workers this run killed or stopped on purpose. */
  readonly #expectedExit = new Set<ChaosWorker>();
  readonly #unexpectedExits: string[] = [];
  /** Ids whose run was frozen by a GC pause: another run may begin while it counts as in progress. */
  readonly #gcVictimIds = new Set<string>();
  readonly #faultLog: FaultRecord[] = [];
  /** Worker slots a fault is working on. */
  readonly #busy = new Set<number>();
  /** Ids of runs a GC-paused worker began right after its resume. */
  readonly #gcLateStartIds = new Set<string>();
  /** Ids a killed worker had written while their message was still queued (see #kill). */
  readonly #killedInWriteWindow = new Set<string>();
  /** The orchestrator's own event-loop stalls (it hosts fauxqs): count and worst, in ms. */
  #lag = { count: 0, maxMs: 0 };
  #t0 = performance.now();
  #deadline = Number.POSITIVE_INFINITY;
  #sent = 0;
  #stopping = false;

  constructor(
    seed: number,
    profile: Profile,
    plan: readonly PlannedMessage[],
    schedule: Schedule,
    logDir: string,
    options: ChaosOptions,
    log: (line: string) => void,
  ) {
    this.#seed = seed;
    this.#profile = profile;
    this.#plan = plan;
    this.#schedule = schedule;
    this.#logDir = logDir;
    this.#options = options;
    this.#log = log;
    this.#random = mulberry32(seed ^ 0x5eed0003);
    this.#normalIds = plan.filter((m) => !m.poison).map((m) => m.id);
    this.#poisonIds = plan.filter((m) => m.poison).map((m) => m.id);
  }

  #elapsed(): number {
    return performance.now() - this.#t0;
  }

  #stamp(): string {
    return `[${(this.#elapsed() / 1000).toFixed(1).padStart(5)} s]`;
  }

  #event(text: string): void {
    this.#log(`${this.#stamp()} ${text}`);
  }

  async execute(): Promise<ChaosReport> {
    const p = this.#profile;
    const started = performance.now();
    process.once('exit', this.#killAllSync);

    this.#redis = await startRedisNodes(p.nodes, { appendonly: true });
    this.#ledgerNode = await startRedisNodes(1);
    this.#sqs = await startSqs();
    this.#queue = this.#sqs.createQueue('chaos', {
      visibilityTimeoutSec: p.visibilityTimeoutSec,
      // The worker finds the DLQ through the RedrivePolicy; SQS's own redrive must never move a
      // message that is merely unlucky (retried many times), or it would count as lost.
      maxReceiveCount: 1_000,
    });
    this.#ledgerClient = this.#ledgerNode.nodes[0]?.client() as Redis;
    this.#ledger = new Ledger(this.#ledgerClient, LEDGER_PREFIX);
    this.#log(
      `redis quorum nodes: ${this.#redis.nodes.map((n, i) => `#${i} ${n.port}`).join(', ')}; ledger node ${this.#ledgerNode.nodes[0]?.port}; fauxqs ${this.#sqs.endpoint}`,
    );

    for (let slot = 0; slot < p.workers; slot++) this.#spawn(slot);
    await Promise.all(this.#slots.map((w) => this.#waitReady(w, 30_000)));
    this.#log(`${p.workers} workers started in ${((performance.now() - started) / 1000).toFixed(1)} s`);

    this.#t0 = performance.now();
    this.#deadline = this.#t0 + p.durationBudgetMs;
    const progress = this.#options.progress
      ? setInterval(() => void this.#progress().catch(() => undefined), 1_000)
      : undefined;
    let last = performance.now();
    const lagMonitor = setInterval(() => {
      const now = performance.now();
      const lag = now - last - 50;
      last = now;
      if (lag > 250) {
        this.#lag.count++;
        this.#lag.maxMs = Math.max(this.#lag.maxMs, Math.round(lag));
        this.#event(`note: this process (fauxqs, the harness) stalled ${Math.round(lag)} ms`);
      }
    }, 50);
    let converged = false;
    const watcher = this.#watchWorkers();
    try {
      await Promise.all([
        this.#send(),
        this.#track(this.#schedule.redis, (f) => this.#redisFault(f)),
        this.#track(this.#schedule.kills, (f) => this.#workerFault(f)),
        this.#track(this.#schedule.pauses, (f) => this.#workerFault(f)),
      ]);
      converged = await this.#converge();
    } finally {
      this.#stopping = true;
      if (progress) clearInterval(progress);
      clearInterval(lagMonitor);
      await watcher;
    }
    if (this.#options.progress) await this.#progress();
    const durationMs = this.#elapsed();
    this.#event(
      converged ? 'converged: stopping the workers (SIGTERM)' : 'budget spent: stopping the workers',
    );
    const uncleanShutdowns = await this.#stopWorkers();
    return this.#report(converged, durationMs, uncleanShutdowns);
  }

  // ---- processes ----

  #workerEnv(): Record<string, string> {
    const p = this.#profile;
    const redis = this.#redis as RedisNodes;
    const sqs = this.#sqs as SqsEnv;
    return {
      SQS_QUEUE_URL: this.#queue?.queueUrl ?? '',
      AWS_ENDPOINT_URL_SQS: sqs.endpoint,
      AWS_REGION: REGION,
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      REDIS_URLS: redis.nodes.map((n) => n.url).join(','),
      LOCK_TTL_MS: String(p.lockTtlMs),
      VISIBILITY_TIMEOUT_SEC: String(p.visibilityTimeoutSec),
      BATCH_SIZE: String(p.batchSize),
      CONCURRENCY: String(p.concurrency),
      SHUTDOWN_TIMEOUT_MS: '5000',
      LOG_LEVEL: 'info',
      CHAOS_LEDGER_URL: this.#ledgerNode?.nodes[0]?.url ?? '',
      CHAOS_LEDGER_PREFIX: LEDGER_PREFIX,
      CHAOS_SEED: String(this.#seed),
      CHAOS_THROW_P: String(p.throwP),
    };
  }

  #spawn(slot: number): ChaosWorker {
    const generation = this.#generations[slot] ?? 0;
    this.#generations[slot] = generation + 1;
    const worker = new ChaosWorker(slot, generation, this.#workerEnv(), this.#logDir);
    this.#slots[slot] = worker;
    this.#all.push(worker);
    return worker;
  }

  async #waitReady(worker: ChaosWorker, timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${worker.name} did not start within ${timeoutMs} ms\n${worker.stderr}`)),
        timeoutMs,
      );
    });
    try {
      await Promise.race([worker.ready, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  readonly #killAllSync = (): void => {
    for (const w of this.#all) w.killSync();
  };

  /** Replaces workers that ended on their own (a crash), and reports them. */
  async #watchWorkers(): Promise<void> {
    while (!this.#stopping) {
      for (const [slot, w] of this.#slots.entries()) {
        if (w.alive || this.#expectedExit.has(w)) continue;
        const text = `${w.name} exited on its own (code ${w.exit?.code}, signal ${w.exit?.signal}): ${w.stderr.trim().split('\n').slice(-3).join(' | ')}`;
        this.#unexpectedExits.push(text);
        this.#event(`UNEXPECTED: ${text}; starting a replacement`);
        this.#expectedExit.add(w);
        const replacement = this.#spawn(slot);
        await this.#waitReady(replacement, 30_000).catch((error: unknown) => this.#event(String(error)));
      }
      await sleep(250);
    }
  }

  async #stopWorkers(): Promise<string[]> {
    this.#stopping = true;
    const unclean: string[] = [];
    await Promise.all(
      this.#slots.map(async (w) => {
        if (!w.alive) return;
        this.#expectedExit.add(w);
        const { exit, timedOut } = await w.terminate(15_000);
        if (timedOut || exit.code !== 0) {
          unclean.push(
            `${w.name}: ${timedOut ? 'did not exit within 15 s of SIGTERM (killed)' : `exit code ${exit.code}, signal ${exit.signal}`}`,
          );
        }
      }),
    );
    return unclean;
  }

  async cleanup(): Promise<void> {
    this.#stopping = true;
    for (const w of this.#all) w.killSync();
    await Promise.all(this.#all.map((w) => w.exited));
    process.off('exit', this.#killAllSync);
    await this.#ledgerClient?.quit().catch(() => this.#ledgerClient?.disconnect());
    await this.#sqs?.stop().catch(() => undefined);
    await this.#redis?.stop().catch(() => undefined);
    await this.#ledgerNode?.stop().catch(() => undefined);
  }

  // ---- messages ----

  /** Sends the plan in batches of 10, evenly over `sendMs`. */
  async #send(): Promise<void> {
    const sqs = this.#sqs as SqsEnv;
    const queueUrl = this.#queue?.queueUrl as string;
    const chunks: PlannedMessage[][] = [];
    for (let i = 0; i < this.#plan.length; i += 10) chunks.push(this.#plan.slice(i, i + 10));
    const interval = this.#profile.sendMs / Math.max(1, chunks.length);
    for (const [i, chunk] of chunks.entries()) {
      await sleep(this.#t0 + i * interval - performance.now());
      await sendMessages(sqs.sqs, queueUrl, chunk);
      this.#sent += chunk.length;
    }
    this.#event(`all ${this.#sent} messages sent`);
  }

  /** MessageIds of every message still in the queue (ready, in flight or delayed). */
  #inQueue(): Set<string> {
    const q = this.#sqs?.server.inspectQueue(this.#queue?.queueName as string);
    const ids = new Set<string>();
    if (!q) return ids;
    for (const m of q.messages.ready) ids.add(m.messageId);
    for (const m of q.messages.delayed) ids.add(m.messageId);
    for (const m of q.messages.inflight) ids.add(m.message.messageId);
    return ids;
  }

  /** Dead-letter queue: distinct poison ids found in it, and how many messages it holds. */
  #deadLetters(): { ids: Set<string>; messages: number; foreign: string[] } {
    const q = this.#sqs?.server.inspectQueue(this.#queue?.dlqName as string);
    const bodies = q
      ? [...q.messages.ready, ...q.messages.delayed, ...q.messages.inflight.map((e) => e.message)].map(
          (m) => m.body,
        )
      : [];
    const ids = new Set<string>();
    const foreign: string[] = [];
    for (const body of bodies) {
      const id = /px-\d+/.exec(body)?.[0];
      if (id) ids.add(id);
      else foreign.push(body.slice(0, 80));
    }
    return { ids, messages: bodies.length, foreign };
  }

  // ---- faults ----

  /** Runs a track's faults one after another, each at its planned time (or as soon as the previous ended). */
  async #track<F extends Fault>(faults: readonly F[], run: (fault: F) => Promise<void>): Promise<void> {
    for (const fault of faults) {
      await sleep(this.#t0 + fault.atMs - performance.now());
      if (performance.now() > this.#deadline) {
        this.#record(fault, performance.now(), 'skipped', 'the budget was spent');
        continue;
      }
      await run(fault);
    }
  }

  #record(fault: Fault, startedAt: number, outcome: FaultRecord['outcome'], detail: string): void {
    this.#faultLog.push({
      kind: fault.kind,
      plannedMs: fault.atMs,
      startedMs: Math.round(startedAt - this.#t0),
      endedMs: Math.round(this.#elapsed()),
      outcome,
      detail,
    });
  }

  async #redisFault(fault: RedisFault): Promise<void> {
    const redis = this.#redis as RedisNodes;
    const startedAt = performance.now();
    const label = fault.targets.map((t) => `${t.action} #${t.node}`).join(', ');
    for (const t of fault.targets) {
      const node = redis.nodes[t.node];
      if (!node) continue;
      if (t.action === 'kill') await node.kill();
      else node.pause();
    }
    const up = redis.nodes.filter((n) => n.isRunning && !n.isPaused).length;
    this.#event(`${fault.kind}: ${label} (${up}/${redis.nodes.length} nodes answer) for ${fault.downMs} ms`);
    await sleep(fault.downMs);
    for (const t of fault.targets) if (t.action === 'pause') redis.nodes[t.node]?.resume();
    await Promise.all(
      fault.targets.filter((t) => t.action === 'kill').map((t) => redis.nodes[t.node]?.restart()),
    );
    this.#event(
      `${fault.kind}: nodes back (${label.replaceAll('kill', 'restarted').replaceAll('pause', 'resumed')})`,
    );
    this.#record(fault, startedAt, 'done', `${label} for ${fault.downMs} ms`);
  }

  /**
   * Freezes the worker and reads what it wrote before: a moment is right when a handler is in its work
   * phase and no message of the worker has been written to the ledger but is still in the queue. The
   * worker is watched until it looks so, then frozen and checked again (its last lines may change the
   * picture); if it is not right after all, it is resumed and watched again. Resolves with the frozen
   * worker and its runs, or undefined if no such moment came in time.
   */
  async #freezeMidHandle(
    fault: WorkerFault,
    checkWritten: boolean,
  ): Promise<{ slot: number; worker: ChaosWorker; runs: Run[]; attempts: number } | undefined> {
    const until = Math.min(performance.now() + FIND_MOMENT_MS, this.#deadline);
    let queued: Set<string> | undefined;
    const looksRight = (worker: ChaosWorker): boolean => {
      if (worker.working().length === 0) return false;
      if (checkWritten && worker.wrote.size > 0) {
        queued ??= this.#inQueue();
        for (const mid of [...worker.wrote.keys()]) if (!queued.has(mid)) worker.wrote.delete(mid);
      }
      return !checkWritten || worker.wrote.size === 0;
    };
    let attempts = 0;
    const n = this.#slots.length;
    while (performance.now() < until) {
      queued = undefined;
      // The planned worker if it is at a right moment, else the next one that is.
      const slot = [...Array(n).keys()]
        .map((i) => (fault.worker + i) % n)
        .find((i) => {
          const candidate = this.#slots[i];
          return !this.#busy.has(i) && candidate?.state === 'running' && looksRight(candidate);
        });
      const worker = slot === undefined ? undefined : this.#slots[slot];
      if (slot === undefined || !worker) {
        await sleep(10);
        continue;
      }
      attempts++;
      this.#busy.add(slot);
      worker.freeze();
      await worker.settleOutput();
      queued = undefined;
      if (looksRight(worker)) return { slot, worker, runs: [...worker.inflight.values()], attempts };
      worker.thaw();
      this.#busy.delete(slot);
      await sleep(20 + this.#random() * 80);
    }
    return undefined;
  }

  async #workerFault(fault: WorkerFault): Promise<void> {
    const startedAt = performance.now();
    const unsafe = fault.kind === 'worker-kill' && this.#options.unsafeKills === true;
    const frozen = await this.#freezeMidHandle(fault, !unsafe);
    if (!frozen) {
      this.#event(
        `${fault.kind} on worker #${fault.worker}: no mid-handle moment within ${FIND_MOMENT_MS} ms, skipped`,
      );
      this.#record(fault, startedAt, 'skipped', 'no mid-handle moment');
      return;
    }
    try {
      await this.#workerFaultOn(fault, frozen, startedAt);
    } finally {
      this.#busy.delete(frozen.slot);
    }
  }

  async #workerFaultOn(
    fault: WorkerFault,
    frozen: { slot: number; worker: ChaosWorker; runs: Run[]; attempts: number },
    startedAt: number,
  ): Promise<void> {
    const { slot, worker, runs, attempts } = frozen;
    const working = runs.filter((r) => r.phase === 'work');
    if (fault.kind === 'worker-kill') {
      const written = await this.#kill(worker, runs);
      const window =
        written.length > 0 ? `; ${written.length} written but not yet deleted: ${written.join(', ')}` : '';
      const detail = `SIGKILL ${worker.name} (pid ${worker.pid}) with ${working.length} handlers mid-work, ${runs.length} in flight (freeze attempt ${attempts})${window}`;
      this.#event(`worker-kill: ${detail}`);
      await this.#replace(slot);
      this.#record(fault, startedAt, 'done', detail);
      return;
    }

    // The GC-pause story. Frozen past the lock TTL and the visibility timeout, until every run that was
    // mid-work has been superseded in the ledger by another holder's write (a higher token), then resumed.
    const frozenAt = performance.now();
    const p = this.#profile;
    const minMs = Math.max(p.lockTtlMs, p.visibilityTimeoutSec * 1000) + GC_MARGIN_MS;
    this.#event(
      `gc-pause: SIGSTOP ${worker.name} (pid ${worker.pid}) with ${working.length} handlers mid-work: ${working
        .slice(0, 6)
        .map((r) => `${r.id}(token ${r.token})`)
        .join(', ')}${working.length > 6 ? ', ...' : ''}`,
    );
    let superseded = false;
    while (performance.now() - frozenAt < GC_MAX_MS && performance.now() < this.#deadline) {
      await sleep(200);
      if (performance.now() - frozenAt < minMs) continue;
      const tokens = await (this.#ledgerClient as Redis).hmget(
        `${LEDGER_PREFIX}:tokens`,
        ...working.map((r) => r.id),
      );
      if (working.every((r, i) => Number(tokens[i] ?? 0) > r.token)) {
        superseded = true;
        break;
      }
    }
    const pausedMs = Math.round(performance.now() - frozenAt);
    for (const r of working) this.#gcVictimIds.add(r.id);
    if (!superseded) {
      // Resuming now could let a stale write land before the new holder's: that is not this story.
      await this.#kill(worker, runs);
      const detail = `${worker.name} frozen ${pausedMs} ms, its messages not all taken over: killed instead`;
      this.#event(`gc-pause: ${detail}`);
      await this.#replace(slot);
      this.#record(fault, startedAt, 'killed-instead', detail);
      return;
    }
    const before = { ...worker.staleResults };
    worker.thaw();
    this.#event(
      `gc-pause: ${worker.name} frozen ${pausedMs} ms (lock TTL ${p.lockTtlMs} ms), its ${working.length} runs taken over by other workers: SIGCONT`,
    );
    // The story ends when the resumed runs have tried their stale writes (and ended).
    const resumedAt = performance.now();
    const keys = new Set(working.map((r) => `${r.id}#${r.token}`));
    const endBy = resumedAt + 5_000;
    while (
      worker.alive &&
      (performance.now() < resumedAt + AFTER_RESUME_MS ||
        [...worker.inflight.keys()].some((k) => keys.has(k))) &&
      performance.now() < endBy
    ) {
      await sleep(20);
    }
    // A batch the worker had locked just before the freeze is handed to its handlers as it resumes,
    // before the lock engine's timer has declared those expired locks lost: those runs begin while the
    // new holders' runs are in progress. They belong to this pause too.
    for (const s of worker.starts) {
      if (s.at >= resumedAt && s.at < resumedAt + AFTER_RESUME_MS) this.#gcLateStartIds.add(s.id);
    }
    const stale = {
      rejected: worker.staleResults.rejected - before.rejected,
      applied: worker.staleResults.applied - before.applied,
    };
    const detail = `${worker.name} frozen ${pausedMs} ms, ${working.length} runs taken over, then resumed: stale writes ${stale.rejected} rejected, ${stale.applied} accepted`;
    this.#event(
      `gc-pause: resumed runs ended; stale writes: ${stale.rejected} rejected by fencing, ${stale.applied} accepted`,
    );
    this.#record(fault, startedAt, 'done', detail);
  }

  /**
   * SIGKILL; then ends, in the ledger, the runs the dead process could not end itself. Resolves the ids
   * the process had written but whose message was still in the queue: with all its output read (the
   * process is gone), this says whether the kill landed in the window a redelivery would write again.
   */
  async #kill(worker: ChaosWorker, runs: readonly Run[]): Promise<string[]> {
    this.#expectedExit.add(worker);
    await worker.kill();
    const queued = this.#inQueue();
    const written = [...worker.wrote.entries()].filter(([mid]) => queued.has(mid)).map(([, id]) => id);
    for (const id of written) this.#killedInWriteWindow.add(id);
    // Done only once the process is dead, and long before its lock and visibility lapse (so before
    // anyone else can begin these messages): it can hide no real overlap. Never below zero, in case the
    // run's `begin` had not reached the ledger yet.
    for (const run of runs) {
      await (this.#ledgerClient as Redis).eval(
        `local v = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
         if v < 0 then redis.call('HSET', KEYS[1], ARGV[1], 0) end
         return v`,
        1,
        `${LEDGER_PREFIX}:running`,
        run.id,
      );
    }
    return written;
  }

  async #replace(slot: number): Promise<void> {
    const replacement = this.#spawn(slot);
    await this.#waitReady(replacement, 30_000).catch((error: unknown) => this.#event(String(error)));
  }

  // ---- convergence and report ----

  /** Waits until every message is settled: applied or dead-lettered, the queue empty, no run in flight. */
  async #converge(): Promise<boolean> {
    const ledgerClient = this.#ledgerClient as Redis;
    while (performance.now() < this.#deadline) {
      const applied = await ledgerClient.hlen(`${LEDGER_PREFIX}:effects`);
      const queued = this.#sqs?.counts(this.#queue?.queueName as string).total ?? 0;
      const dead = this.#deadLetters().ids.size;
      const busy = this.#slots.some((w) => w.inflight.size > 0 || w.state !== 'running');
      if (applied >= this.#normalIds.length && queued === 0 && dead >= this.#poisonIds.length && !busy) {
        return true;
      }
      await sleep(250);
    }
    return false;
  }

  async #progress(): Promise<void> {
    const ledgerClient = this.#ledgerClient;
    if (!ledgerClient || !this.#sqs || !this.#queue || !this.#redis) return;
    const applied = await ledgerClient.hlen(`${LEDGER_PREFIX}:effects`);
    const q = this.#sqs.counts(this.#queue.queueName);
    const dead = this.#deadLetters().ids.size;
    const up = this.#redis.nodes.filter((n) => n.isRunning && !n.isPaused).length;
    const states = this.#slots.map((w) => (w.state === 'running' ? 'up' : w.state));
    const rejected = this.#all.reduce((n, w) => n + w.steps.rejected, 0);
    const runs = this.#all.reduce((n, w) => n + w.steps.start, 0);
    const faults = this.#faultLog.length;
    const planned = allFaults(this.#schedule).length;
    this.#options.progress?.(
      `${this.#stamp()} sent ${this.#sent}/${this.#plan.length}  applied ${applied}/${this.#normalIds.length}  ` +
        `dead-lettered ${dead}/${this.#poisonIds.length}  queue ${q.ready}+${q.inflight}+${q.delayed}  runs ${runs}  ` +
        `stale rejected ${rejected}  workers [${states.join(' ')}]  redis ${up}/${this.#redis.nodes.length}  faults ${faults}/${planned}`,
    );
  }

  async #report(converged: boolean, durationMs: number, uncleanShutdowns: string[]): Promise<ChaosReport> {
    const ledger = this.#ledger as Ledger;
    const ledgerClient = this.#ledgerClient as Redis;
    const summary = await ledger.report(this.#normalIds);
    const [effects, overlaps, stale] = await Promise.all(
      ['effects', 'overlaps', 'stale'].map((k) => ledgerClient.hgetall(`${LEDGER_PREFIX}:${k}`)),
    );
    const count = (h: Record<string, string> | undefined, id: string): number => Number(h?.[id] ?? 0);
    const dlq = this.#deadLetters();
    const lostNormal = this.#normalIds.filter((id) => count(effects, id) === 0);
    const lostPoison = this.#poisonIds.filter((id) => !dlq.ids.has(id));
    const lostIds = [...lostNormal, ...lostPoison];
    const appliedTwiceIds = this.#normalIds.filter((id) => count(effects, id) > 1);
    const acrossPause = (id: string): boolean => this.#gcVictimIds.has(id) || this.#gcLateStartIds.has(id);
    const unexpectedConcurrentIds = this.#normalIds.filter(
      (id) => count(overlaps, id) > 0 && !acrossPause(id),
    );
    const lateStartOverlaps = [...this.#gcLateStartIds].filter(
      (id) => !this.#gcVictimIds.has(id) && count(overlaps, id) > 0,
    );
    const unexpectedConcurrentRuns = unexpectedConcurrentIds.reduce((n, id) => n + count(overlaps, id), 0);
    const staleWritesAfterPause = [...this.#gcVictimIds].reduce((n, id) => n + count(stale, id), 0);
    const faults = Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])) as Record<FaultKind, number>;
    for (const f of this.#faultLog) if (f.outcome !== 'skipped') faults[f.kind]++;
    const gcResumed = this.#faultLog.filter((f) => f.kind === 'gc-pause' && f.outcome === 'done').length;
    const sum = (pick: (w: ChaosWorker) => number): number => this.#all.reduce((n, w) => n + pick(w), 0);

    // Stalls shorter than the lock TTL: the longer ones are the GC pauses themselves.
    const lags = this.#all.flatMap((w) => w.lags).filter((ms) => ms < this.#profile.lockTtlMs);
    const inWindow = appliedTwiceIds.filter((id) => this.#killedInWriteWindow.has(id));
    const failures: string[] = [];
    if (lostNormal.length > 0)
      failures.push(`${lostNormal.length} messages lost: ${lostNormal.slice(0, 10).join(', ')}`);
    if (lostPoison.length > 0)
      failures.push(
        `${lostPoison.length} poison messages not dead-lettered: ${lostPoison.slice(0, 10).join(', ')}`,
      );
    if (appliedTwiceIds.length > 0)
      failures.push(
        `${appliedTwiceIds.length} effects applied twice: ${appliedTwiceIds.slice(0, 10).join(', ')}` +
          (inWindow.length > 0
            ? ` (${inWindow.length} of them after a kill between the effect and the completion marker: ${inWindow.slice(0, 10).join(', ')})`
            : ''),
      );
    if (unexpectedConcurrentRuns > 0)
      failures.push(
        `${unexpectedConcurrentRuns} runs began while another run of the same message was in progress, outside any GC pause: ${unexpectedConcurrentIds.slice(0, 10).join(', ')}`,
      );
    if (dlq.foreign.length > 0)
      failures.push(`non-poison messages in the DLQ: ${dlq.foreign.slice(0, 3).join(' | ')}`);

    const report: ChaosReport = {
      seed: this.#seed,
      profile: this.#profile.name,
      workers: this.#profile.workers,
      nodes: this.#profile.nodes,
      sent: this.#sent,
      normal: this.#normalIds.length,
      poison: this.#poisonIds.length,
      completed: summary.applied,
      lost: lostIds.length,
      lostIds,
      appliedTwice: summary.appliedTwice,
      appliedTwiceIds,
      staleRejected: summary.staleRejected,
      staleWritesAfterPause,
      runsStarted: summary.runsStarted,
      duplicateExecutions: summary.runsStarted - summary.applied,
      concurrentRuns: summary.concurrentRuns,
      unexpectedConcurrentRuns,
      unexpectedConcurrentIds,
      concurrentRunsBegunAfterResume: lateStartOverlaps,
      deadLettered: dlq.ids.size,
      deadLetterMessages: dlq.messages,
      handlerThrows: sum((w) => w.steps.throw),
      abortedRuns: sum((w) => w.steps.aborted),
      faults,
      gcResumed,
      faultLog: this.#faultLog,
      appliedTwiceAfterKillInWriteWindow: inWindow,
      workerLag: { count: lags.length, maxMs: Math.max(0, ...lags) },
      orchestratorLag: { ...this.#lag },
      unexpectedExits: this.#unexpectedExits,
      uncleanShutdowns,
      converged,
      durationMs: Math.round(durationMs),
      pass: failures.length === 0,
      failures,
      logDir: this.#logDir,
    };
    for (const line of formatReport(report)) this.#log(line);
    if (!report.pass)
      for (const line of this.#explain([...lostNormal, ...appliedTwiceIds, ...unexpectedConcurrentIds]))
        this.#log(line);
    if (lateStartOverlaps.length > 0) {
      this.#log(
        `note: ${lateStartOverlaps.length} runs were started by a worker resumed from a GC pause, on locks that had expired during the pause, before their signal aborted (a handler that checks ctx.signal first and writes at once would write with a stale token):`,
      );
      for (const line of this.#explain(lateStartOverlaps)) this.#log(line);
    }
    return report;
  }

  /** Which worker ran what, and when, for the ids a failure names. */
  #explain(ids: readonly string[]): string[] {
    const out: string[] = [];
    const wall0 = Date.now() - this.#elapsed();
    for (const id of [...new Set(ids)].slice(0, 10)) {
      out.push(`  ${id} (grep '"id":"${id}"' ${this.#logDir}/*.log):`);
      for (const w of this.#all) {
        const steps = w.history.get(id);
        if (!steps) continue;
        const runs = new Map<number, typeof steps>();
        for (const step of steps) runs.set(step.token, [...(runs.get(step.token) ?? []), step]);
        for (const [token, run] of runs) {
          const text = run.map((s) => `${s.step} ${((s.at - wall0) / 1000).toFixed(3)} s`).join(', ');
          out.push(`    ${w.name} (pid ${w.pid}) token ${token} receive ${run[0]?.rc}: ${text}`);
        }
      }
    }
    return out;
  }
}

/** The report as a table, and the verdict. */
export function formatReport(r: ChaosReport): string[] {
  const ok = (good: boolean): string => (good ? 'ok' : 'FAIL');
  const faults = FAULT_KINDS.map((k) => `${k} ${r.faults[k]}`).join(', ');
  const rows: [string, string, string][] = [
    ['sent', `${r.sent} (${r.normal} normal, ${r.poison} poison)`, ''],
    ['completed (applied once or more)', String(r.completed), ''],
    ['lost', String(r.lost), ok(r.lost === 0)],
    ['side effects applied twice', String(r.appliedTwice), ok(r.appliedTwice === 0)],
    [
      'stale writes rejected by fencing',
      `${r.staleRejected} (${r.staleWritesAfterPause} after GC pauses)`,
      '',
    ],
    [
      'duplicate executions started',
      `${r.duplicateExecutions} (runs ${r.runsStarted} - applied ${r.completed})`,
      '',
    ],
    [
      'concurrent runs of one message',
      `${r.concurrentRuns} (${r.concurrentRuns - r.unexpectedConcurrentRuns} across GC pauses, of which ${r.concurrentRunsBegunAfterResume.length} begun after the resume; ${r.unexpectedConcurrentRuns} otherwise)`,
      ok(r.unexpectedConcurrentRuns === 0),
    ],
    ['dead-lettered', `${r.deadLettered} of ${r.poison} poison (${r.deadLetterMessages} DLQ messages)`, ''],
    ['handler throws injected', String(r.handlerThrows), ''],
    ['handler runs aborted by their signal', String(r.abortedRuns), ''],
    ['faults injected', faults, ''],
    ['GC pauses resumed (not killed)', `${r.gcResumed} of ${r.faults['gc-pause']}`, ''],
    [
      'event-loop stalls',
      `workers ${r.workerLag.count} > 150 ms (worst ${r.workerLag.maxMs} ms), orchestrator ${r.orchestratorLag.count} > 250 ms (worst ${r.orchestratorLag.maxMs} ms)`,
      '',
    ],
    ['workers that crashed', String(r.unexpectedExits.length), ''],
    ['unclean final shutdowns', String(r.uncleanShutdowns.length), ''],
    [
      'duration',
      `${(r.durationMs / 1000).toFixed(1)} s${r.converged ? '' : ' (did not converge within the budget)'}`,
      '',
    ],
  ];
  const width = Math.max(...rows.map(([name]) => name.length));
  const lines = [
    '',
    `chaos report (seed ${r.seed}, profile ${r.profile}, ${r.workers} workers, ${r.nodes} Redis nodes)`,
  ];
  for (const [name, value, verdict] of rows)
    lines.push(`  ${name.padEnd(width)}  ${value}${verdict ? `  [${verdict}]` : ''}`);
  for (const text of [...r.unexpectedExits, ...r.uncleanShutdowns]) lines.push(`  note: ${text}`);
  const skipped = r.faultLog.filter((f) => f.outcome === 'skipped');
  if (skipped.length > 0)
    lines.push(`  note: ${skipped.length} faults skipped (${skipped.map((f) => f.kind).join(', ')})`);
  lines.push('');
  lines.push(r.pass ? `PASS (seed ${r.seed})` : `FAIL (seed ${r.seed}):`);
  for (const failure of r.failures) lines.push(`  - ${failure}`);
  return lines;
}

// ---- command line ----

const USAGE = `Usage: npm run chaos -- [--seed <n|0xhex>] [--profile short|full] [--workers <n>] [--messages <n>]
                      [--nodes 3|5] [--budget-ms <n>] [--keep-logs] [--unsafe-kills] [--json]`;

function parseArgs(argv: readonly string[]): ChaosOptions & { json: boolean } {
  const out: {
    seed?: number;
    profile?: ProfileName;
    workers?: number;
    messages?: number;
    nodes?: 3 | 5;
    durationBudgetMs?: number;
    keepLogs?: boolean;
    unsafeKills?: boolean;
    json: boolean;
  } = { json: false };
  const int = (name: string, value: string | undefined, min: number, max: number): number => {
    const n = Number(value);
    if (value === undefined || !Number.isInteger(n) || n < min || n > max) {
      throw new Error(`${name} must be an integer between ${min} and ${max}, got ${JSON.stringify(value)}`);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const [flag, inline] = arg.includes('=') ? (arg.split(/=(.*)/s) as [string, string]) : [arg, undefined];
    const value = (): string | undefined => inline ?? argv[++i];
    switch (flag) {
      case '--seed':
        out.seed = parseSeed(value() ?? '');
        break;
      case '--profile': {
        const v = value();
        if (v !== 'short' && v !== 'full')
          throw new Error(`--profile must be short or full, got ${JSON.stringify(v)}`);
        out.profile = v;
        break;
      }
      case '--workers':
        out.workers = int('--workers', value(), 2, 16);
        break;
      case '--messages':
        out.messages = int('--messages', value(), 10, 100_000);
        break;
      case '--nodes': {
        const n = int('--nodes', value(), 3, 5);
        if (n !== 3 && n !== 5) throw new Error('--nodes must be 3 or 5');
        out.nodes = n;
        break;
      }
      case '--budget-ms':
        out.durationBudgetMs = int('--budget-ms', value(), 5_000, 3_600_000);
        break;
      case '--keep-logs':
        out.keepLogs = true;
        break;
      case '--unsafe-kills':
        out.unsafeKills = true;
        break;
      case '--json':
        out.json = true;
        break;
      case '--help':
      case '-h':
        throw new HelpRequested();
      default:
        throw new Error(`unknown argument ${JSON.stringify(arg)}`);
    }
  }
  return { ...out, seed: out.seed ?? (Math.random() * 0x1_0000_0000) >>> 0 };
}

class HelpRequested extends Error {}

async function main(argv: readonly string[]): Promise<number> {
  let options: ChaosOptions & { json: boolean };
  try {
    options = parseArgs(argv);
  } catch (error) {
    if (error instanceof HelpRequested) {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    process.stderr.write(`chaos: ${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const tty = process.stderr.isTTY === true;
  let live = false;
  const clearLive = (): void => {
    if (live) process.stderr.write('\r\x1b[2K');
    live = false;
  };
  let lastPlain = 0;
  const report = await runChaos({
    ...options,
    log: (line) => {
      clearLive();
      process.stdout.write(`${line}\n`);
    },
    progress: (line) => {
      if (tty) {
        clearLive();
        process.stderr.write(line.slice(0, (process.stderr.columns || 200) - 1));
        live = true;
      } else if (performance.now() - lastPlain >= 5_000) {
        lastPlain = performance.now();
        process.stderr.write(`${line}\n`);
      }
    },
  });
  clearLive();
  if (options.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  return report.pass ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  // Ctrl-C: the exit hooks kill the workers and the Redis nodes.
  process.once('SIGINT', () => process.exit(130));
  process.once('SIGTERM', () => process.exit(143));
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`chaos: ${(error as Error)?.stack ?? String(error)}\n`);
      process.exit(1);
    },
  );
}
