/**
 * Random fault schedules against in-process Workers, with SQS in the loop: what a schedule is
 * (fast-check arbitraries), how one is run, and the checker of what it left behind.
 *
 * A schedule: a fresh queue (standard or FIFO) with its DLQ, messages (plain, slow, failing on their
 * first run, poison), 2 or 3 Workers over the harness's 3 Redis nodes (each its own Redlock, directly
 * or through the fault proxies), a Ledger as the downstream, and steps that fault one Worker's SQS
 * calls (worker-sqs-faults.ts), a node's proxy, one node or briefly two (pause, or kill and restart:
 * nodes keep their data), or stop a Worker mid-batch and start it again. Every fault heals after its
 * duration, and all of them at the end; then the run waits for the queue to drain and checks.
 */
import type { Message } from '@aws-sdk/client-sqs';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { BaseHandler, type HandlerContext } from '../../src/index.ts';
import type { FaultProxy } from '../helpers/fault-proxy.ts';
import { Ledger, type LedgerReport } from '../helpers/ledger.ts';
import { eventually, sleep, sleepUnlessAborted } from '../helpers/lock.ts';
import type { RedisNodes } from '../helpers/redis-nodes.ts';
import { type SqsEnv, sendMessages } from '../helpers/sqs.ts';
import { type StartedWorker, workerFactory } from '../helpers/worker.ts';
import type { Tally } from './run-property.ts';
import { FAULTED_COMMANDS, type FaultedCommand, FaultySqs, type SqsFaultMode } from './worker-sqs-faults.ts';

export const NODES = 3;
/** How many message groups a FIFO schedule spreads its messages over. */
export const GROUPS = 3;
/** High enough that faults alone never redrive a message; poison reaches the DLQ through the worker. */
export const MAX_RECEIVE_COUNT = 20;

export type MessageKind = 'plain' | 'slow' | 'fail-first' | 'poison';

export interface MessageSpec {
  readonly kind: MessageKind;
  readonly workMs: number;
  /** FIFO only: its MessageGroupId is `g${group}`. */
  readonly group: number;
  /** Sent before this step (0: before the first; past the last: after it), so faults meet fresh messages. */
  readonly wave: number;
}

export interface WorkerSpec {
  /** Its Redlock reaches the nodes through the fault proxies (else directly). */
  readonly viaProxies: boolean;
  readonly concurrency: number;
  readonly batchSize: number;
}

export type WorkerStep = (
  | {
      readonly kind: 'sqs';
      readonly worker: number;
      /** One command, or every one of them (the worker's link to SQS is down or slow). */
      readonly command: FaultedCommand | 'all';
      readonly mode: SqsFaultMode;
      readonly delayMs: number;
      readonly durationMs: number;
    }
  | {
      readonly kind: 'proxy';
      readonly node: number;
      readonly fault: 'blackhole' | 'refuse' | 'delay';
      readonly delayMs: number;
      readonly durationMs: number;
    }
  | {
      readonly kind: 'node';
      /** One node (a minority), or two (a majority, kept brief). */
      readonly nodes: readonly number[];
      readonly fault: 'pause' | 'kill';
      readonly durationMs: number;
    }
  | {
      readonly kind: 'restart';
      readonly worker: number;
      /** stop({ timeoutMs }): in-flight handlers past it are aborted. */
      readonly timeoutMs: number;
      /** How long the worker stays stopped before a new one takes its place. */
      readonly downMs: number;
    }
) & {
  /** How long the schedule waits before its next step. */
  readonly gapMs: number;
};

export interface WorkerPlan {
  readonly fifo: boolean;
  readonly visibilityTimeoutSec: number;
  /** Off: SQS redelivers a slow message while it runs (the lock holds the copy back). */
  readonly extendVisibility: boolean;
  readonly lockTtlMs: number;
  readonly workers: readonly WorkerSpec[];
  readonly messages: readonly MessageSpec[];
  readonly steps: readonly WorkerStep[];
}

const nodeIndex = fc.integer({ min: 0, max: NODES - 1 });
const gapMs = fc.integer({ min: 0, max: 400 });

const messageSpec: fc.Arbitrary<MessageSpec> = fc.record({
  kind: fc.oneof(
    { weight: 3, arbitrary: fc.constant('plain' as const) },
    { weight: 3, arbitrary: fc.constant('slow' as const) },
    { weight: 2, arbitrary: fc.constant('fail-first' as const) },
    { weight: 1, arbitrary: fc.constant('poison' as const) },
  ),
  workMs: fc.integer({ min: 0, max: 1_200 }),
  group: fc.integer({ min: 0, max: GROUPS - 1 }),
  wave: fc.oneof(
    { weight: 2, arbitrary: fc.constant(0) },
    { weight: 3, arbitrary: fc.integer({ min: 1, max: 7 }) },
  ),
});

/** Batch calls can refuse single entries; the others only fail whole. */
const BATCH_COMMANDS: readonly FaultedCommand[] = ['DeleteMessageBatch', 'ChangeMessageVisibilityBatch'];

function stepArbitrary(workers: number): fc.Arbitrary<WorkerStep> {
  const worker = fc.integer({ min: 0, max: workers - 1 });
  return fc.oneof(
    {
      weight: 6,
      arbitrary: fc
        .record({
          kind: fc.constant('sqs' as const),
          worker,
          command: fc.oneof(
            { weight: 4, arbitrary: fc.constantFrom(...FAULTED_COMMANDS) },
            { weight: 1, arbitrary: fc.constant('all' as const) },
          ),
          mode: fc.constantFrom<SqsFaultMode>('delay', 'slow-reply', 'fail', 'hang', 'refuse-entry'),
          delayMs: fc.integer({ min: 50, max: 800 }),
          durationMs: fc.integer({ min: 100, max: 1_500 }),
          gapMs,
        })
        .map(
          (s): WorkerStep =>
            s.mode === 'refuse-entry' && (s.command === 'all' || !BATCH_COMMANDS.includes(s.command))
              ? { ...s, mode: 'fail' }
              : s,
        ),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('proxy' as const),
        node: nodeIndex,
        fault: fc.constantFrom('blackhole' as const, 'refuse' as const, 'delay' as const),
        delayMs: fc.integer({ min: 5, max: 200 }),
        durationMs: fc.integer({ min: 100, max: 1_500 }),
        gapMs,
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('node' as const),
        nodes: nodeIndex.map((n) => [n]),
        fault: fc.constantFrom('pause' as const, 'kill' as const),
        durationMs: fc.integer({ min: 100, max: 1_500 }),
        gapMs,
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('node' as const),
        nodes: fc.uniqueArray(nodeIndex, { minLength: 2, maxLength: 2 }),
        fault: fc.constantFrom('pause' as const, 'kill' as const),
        // Brief, but at times past a lock's TTL: the lock is lost under a running handler.
        durationMs: fc.integer({ min: 100, max: 1_800 }),
        gapMs,
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('restart' as const),
        worker,
        timeoutMs: fc.integer({ min: 0, max: 600 }),
        downMs: fc.integer({ min: 0, max: 800 }),
        gapMs,
      }),
    },
  );
}

export const workerPlanArbitrary: fc.Arbitrary<WorkerPlan> = fc
  .record({
    fifo: fc.boolean(),
    visibilityTimeoutSec: fc.constantFrom(1, 2),
    extendVisibility: fc.boolean(),
    lockTtlMs: fc.integer({ min: 800, max: 1_500 }),
    workers: fc.array(
      fc.record({
        viaProxies: fc.boolean(),
        concurrency: fc.integer({ min: 1, max: 2 }),
        batchSize: fc.integer({ min: 1, max: 10 }),
      }),
      { minLength: 2, maxLength: 3 },
    ),
    messages: fc.array(messageSpec, { minLength: 3, maxLength: 14 }),
  })
  .chain((base) =>
    fc
      .array(stepArbitrary(base.workers.length), { minLength: 2, maxLength: 8 })
      .map((steps) => ({ ...base, steps })),
  );

// ---- the handler and the downstream ----

interface ScheduleJob {
  readonly id: string;
  readonly workMs: number;
  readonly failFirst: boolean;
}

/** One effect the Ledger accepted, in the order they were accepted. */
export interface Application {
  readonly id: string;
  readonly fencingToken: number;
}

/**
 * The handler of every worker of a run: it records runs and effects in the Ledger under the fencing
 * token, fails a `failFirst` job's first run, and gives up when its signal aborts.
 */
class ScheduleHandler extends BaseHandler<ScheduleJob> {
  readonly applications: Application[] = [];
  readonly #ledger: Ledger;
  readonly #failed = new Set<string>();

  constructor(ledger: Ledger) {
    super();
    this.#ledger = ledger;
  }

  hydrate(message: Message): ScheduleJob | null {
    const job = JSON.parse(message.Body ?? '') as Partial<ScheduleJob>;
    return typeof job.id === 'string' ? (job as ScheduleJob) : null;
  }

  async handle(job: ScheduleJob, ctx: HandlerContext): Promise<void> {
    await this.#ledger.begin(job.id);
    try {
      if (job.workMs > 0) await sleepUnlessAborted(job.workMs, ctx.signal);
      if (job.failFirst && !this.#failed.has(job.id)) {
        this.#failed.add(job.id);
        throw new Error(`job ${job.id}: its first run fails`);
      }
      if (ctx.signal.aborted) throw ctx.signal.reason;
      if (await this.#ledger.apply(job.id, ctx.fencingToken)) {
        this.applications.push({ id: job.id, fencingToken: ctx.fencingToken });
      }
    } finally {
      await this.#ledger.end(job.id);
    }
  }
}

// ---- running a plan ----

export interface WorkerEnvironment {
  readonly redis: RedisNodes;
  readonly proxies: readonly FaultProxy[];
  readonly sqs: SqsEnv;
  readonly ledgerClient: Redis;
}

/** One sent message, and what the run knows of it. */
export interface SentMessage {
  readonly id: string;
  readonly messageId: string;
  readonly kind: MessageKind;
  readonly group?: string;
}

export interface WorkerRun {
  readonly plan: WorkerPlan;
  readonly sent: readonly SentMessage[];
  readonly drained: boolean;
  readonly drainMs: number;
  /** Bodies still in the queue, and in its DLQ, at the end. */
  readonly leftInQueue: readonly string[];
  readonly deadLettered: readonly string[];
  readonly report: LedgerReport;
  readonly applications: readonly Application[];
  readonly workers: readonly StartedWorker[];
  readonly injected: ReadonlyMap<string, number>;
  readonly escaped: readonly string[];
  readonly notes: readonly { readonly at: number; readonly text: string }[];
}

/** Clients to the nodes through their proxies, as the harness makes them (fail fast, keep reconnecting). */
function proxiedNodes(
  redis: RedisNodes,
  proxies: readonly FaultProxy[],
): RedisNodes & { disconnect(): void } {
  const made: Redis[] = [];
  return {
    get nodes() {
      return redis.nodes;
    },
    clients: (opts) =>
      proxies.map((proxy) => {
        const client = new Redis({
          host: '127.0.0.1',
          port: proxy.port,
          maxRetriesPerRequest: 1,
          retryStrategy: () => 50,
          ...opts,
        });
        client.on('error', () => undefined);
        made.push(client);
        return client;
      }),
    stop: async () => undefined,
    disconnect: () => {
      for (const client of made.splice(0)) client.disconnect();
    },
  };
}

/** A fault in force, and how to end it. */
interface Fault {
  timer: NodeJS.Timeout | undefined;
  heal: () => Promise<void>;
  healing?: Promise<void>;
}

/** How long a run may take, after every fault healed, for the queue to drain. */
export const DRAIN_MS = 25_000;

export async function runWorkerPlan(
  env: WorkerEnvironment,
  plan: WorkerPlan,
  run: string,
): Promise<WorkerRun> {
  const started = performance.now();
  const notes: { at: number; text: string }[] = [];
  const note = (text: string): void => {
    notes.push({ at: Math.round(performance.now() - started), text });
  };
  const escaped: string[] = [];
  const onEscaped = (error: unknown): void => {
    escaped.push(error instanceof Error ? (error.stack ?? error.message) : String(error));
  };
  process.on('unhandledRejection', onEscaped);

  const queue = env.sqs.createQueue(run, {
    fifo: plan.fifo,
    visibilityTimeoutSec: plan.visibilityTimeoutSec,
    maxReceiveCount: MAX_RECEIVE_COUNT,
  });
  const ledger = new Ledger(env.ledgerClient, run);
  const handler = new ScheduleHandler(ledger);
  const proxied = proxiedNodes(env.redis, env.proxies);
  const direct = workerFactory(env.redis, env.sqs);
  const viaProxies = workerFactory(proxied, env.sqs);
  const sqsClients = plan.workers.map(() => new FaultySqs(env.sqs));
  const everyWorker: StartedWorker[] = [];
  const current: (StartedWorker | undefined)[] = [];

  const startWorker = async (slot: number): Promise<void> => {
    const spec = plan.workers[slot] as WorkerSpec;
    const factory = spec.viaProxies ? viaProxies : direct;
    const entry = await factory.start(handler, queue.queueUrl, {
      sqs: (sqsClients[slot] as FaultySqs).client,
      batchSize: spec.batchSize,
      concurrency: spec.concurrency,
      visibilityTimeoutSec: plan.visibilityTimeoutSec,
      extendVisibility: plan.extendVisibility,
      sqsTimeoutMs: 400,
      retryBaseSec: 0.2,
      retryMaxSec: 1,
      quorumBackoffSec: 0.3,
      quorumProbeIntervalMs: 100,
      lock: { ttlMs: plan.lockTtlMs, commandTimeoutMs: 100 },
    });
    everyWorker.push(entry);
    current[slot] = entry;
  };

  const faults = new Map<string, Fault>();
  const endFault = (name: string): Promise<void> => {
    const fault = faults.get(name);
    if (!fault) return Promise.resolve();
    if (fault.timer) clearTimeout(fault.timer);
    fault.timer = undefined;
    fault.healing ??= fault.heal().finally(() => faults.delete(name));
    return fault.healing;
  };
  /** One fault at a time on each thing (`sqs:0:ReceiveMessage`, `proxy:1`, `node:2`); a busy one is skipped. */
  const startFault = async (
    names: readonly string[],
    ms: number,
    begin: () => Promise<void> | void,
    heal: () => Promise<void>,
  ): Promise<void> => {
    if (names.some((n) => faults.has(n))) return;
    const healing = { promise: undefined as Promise<void> | undefined };
    const healOnce = (): Promise<void> => {
      healing.promise ??= heal();
      return healing.promise;
    };
    for (const name of names) faults.set(name, { timer: undefined, heal: healOnce });
    await begin();
    const timer = setTimeout(() => {
      for (const name of names) void endFault(name);
    }, ms);
    for (const name of names) (faults.get(name) as Fault).timer = timer;
  };
  const restarts: Promise<void>[] = [];
  const restarting = new Set<number>();

  try {
    for (let slot = 0; slot < plan.workers.length; slot++) await startWorker(slot);
    // Ids in send order: waves in step order, each wave in plan order.
    const waveOf = (m: MessageSpec): number => Math.min(m.wave, plan.steps.length);
    const ordered = [...plan.messages].sort((a, b) => waveOf(a) - waveOf(b));
    const sent: SentMessage[] = [];
    const send = async (wave: number): Promise<void> => {
      const batch = ordered.flatMap((m, i) => (waveOf(m) === wave ? [{ m, id: `${run}-m${i}` }] : []));
      if (batch.length === 0) return;
      const bodies = batch.map(({ m, id }) => {
        const group = plan.fifo ? `g${m.group}` : undefined;
        const job =
          m.kind === 'poison'
            ? { poison: id }
            : {
                id,
                workMs: m.kind === 'slow' ? m.workMs : m.workMs % 200,
                failFirst: m.kind === 'fail-first',
              };
        return { body: JSON.stringify(job), ...(group ? { groupId: group } : {}) };
      });
      const messageIds = await sendMessages(env.sqs.sqs, queue.queueUrl, bodies);
      batch.forEach(({ m, id }, i) => {
        const group = plan.fifo ? `g${m.group}` : undefined;
        sent.push({ id, messageId: messageIds[i] ?? '', kind: m.kind, ...(group ? { group } : {}) });
      });
      note(`sent ${batch.map((b) => b.id.slice(run.length + 1)).join(' ')}`);
    };

    for (const [index, s] of plan.steps.entries()) {
      await send(index);
      switch (s.kind) {
        case 'sqs': {
          const client = sqsClients[s.worker] as FaultySqs;
          const commands = s.command === 'all' ? FAULTED_COMMANDS : [s.command];
          await startFault(
            commands.map((c) => `sqs:${s.worker}:${c}`),
            s.durationMs,
            async () => {
              note(`worker ${s.worker}: ${s.command} ${s.mode}${delayText(s)} for ${s.durationMs} ms`);
              await Promise.all(commands.map((c) => client.inject(c, { mode: s.mode, delayMs: s.delayMs })));
            },
            async () => {
              note(`worker ${s.worker}: ${s.command} healed`);
              await Promise.all(commands.map((c) => client.heal(c)));
            },
          );
          break;
        }
        case 'proxy': {
          const proxy = env.proxies[s.node] as FaultProxy;
          await startFault(
            [`proxy:${s.node}`],
            s.durationMs,
            () => {
              note(
                `proxy ${s.node}: ${s.fault}${s.fault === 'delay' ? ` ${s.delayMs} ms` : ''} for ${s.durationMs} ms`,
              );
              proxy.startFault(s.fault, s.delayMs);
            },
            async () => {
              note(`proxy ${s.node}: healed`);
              proxy.heal();
            },
          );
          break;
        }
        case 'node': {
          const nodes = s.nodes.map((i) => env.redis.nodes[i]).filter((n) => n !== undefined);
          await startFault(
            s.nodes.map((i) => `node:${i}`),
            s.durationMs,
            () => {
              note(`nodes ${s.nodes.join(',')}: ${s.fault} for ${s.durationMs} ms`);
              for (const node of nodes) {
                if (s.fault === 'pause') node.pause();
                else void node.kill();
              }
            },
            async () => {
              await Promise.all(
                nodes.map(async (node) => {
                  if (s.fault === 'pause') node.resume();
                  else await node.restart();
                }),
              );
              note(`nodes ${s.nodes.join(',')}: ${s.fault === 'pause' ? 'resumed' : 'restarted'}`);
            },
          );
          break;
        }
        case 'restart': {
          const entry = current[s.worker];
          if (!entry || restarting.has(s.worker)) break;
          restarting.add(s.worker);
          note(`worker ${s.worker}: stop({ timeoutMs: ${s.timeoutMs} }), back after ${s.downMs} ms`);
          restarts.push(
            (async () => {
              await entry.worker.stop({ timeoutMs: s.timeoutMs });
              note(`worker ${s.worker}: stopped (${entry.worker.batchesInFlight} batches left running)`);
              await sleep(s.downMs);
              // A start waits for its Redis clients: a fault in force can make it time out once.
              for (let attempt = 1; ; attempt++) {
                try {
                  await startWorker(s.worker);
                  break;
                } catch (error) {
                  if (attempt >= 3) throw error;
                  note(`worker ${s.worker}: start failed (${(error as Error).message}), again`);
                }
              }
              note(`worker ${s.worker}: started again`);
              restarting.delete(s.worker);
            })(),
          );
          break;
        }
      }
      await sleep(s.gapMs);
    }
    await send(plan.steps.length);
    await Promise.all([...faults.keys()].map(endFault));
    await Promise.all(restarts);
    note('all healed');

    const drainFrom = performance.now();
    const drained = await eventually(async () => env.sqs.counts(queue.queueName).total === 0, DRAIN_MS)
      .then(() => true)
      .catch(() => false);
    const drainMs = Math.round(performance.now() - drainFrom);
    note(drained ? `drained in ${drainMs} ms` : `not drained after ${drainMs} ms`);
    await direct.stopAll();
    await viaProxies.stopAll();
    note('workers stopped');

    const bodiesIn = (name: string | undefined): string[] => {
      const q = name ? env.sqs.server.inspectQueue(name) : undefined;
      if (!q) return [];
      return [...q.messages.ready, ...q.messages.delayed, ...q.messages.inflight.map((f) => f.message)].map(
        (m) => m.body,
      );
    };
    return {
      plan,
      sent,
      drained,
      drainMs,
      leftInQueue: bodiesIn(queue.queueName),
      deadLettered: bodiesIn(queue.dlqName),
      report: await ledger.report(sent.filter((m) => m.kind !== 'poison').map((m) => m.id)),
      applications: handler.applications,
      workers: everyWorker,
      injected: mergeCounts(sqsClients.map((c) => c.injected)),
      escaped,
      notes,
    };
  } finally {
    await Promise.all([...faults.keys()].map(endFault));
    await Promise.allSettled(restarts);
    await direct.stopAll();
    await viaProxies.stopAll();
    proxied.disconnect();
    await Promise.all(sqsClients.map((c) => c.destroy()));
    process.off('unhandledRejection', onEscaped);
  }
}

function delayText(s: { mode: SqsFaultMode; delayMs: number }): string {
  return s.mode === 'delay' || s.mode === 'slow-reply' ? ` ${s.delayMs} ms` : '';
}

function mergeCounts(maps: readonly ReadonlyMap<string, number>[]): Map<string, number> {
  const merged = new Map<string, number>();
  for (const map of maps) for (const [k, v] of map) merged.set(k, (merged.get(k) ?? 0) + v);
  return merged;
}

// ---- the checker ----

export interface WorkerViolation {
  readonly rule:
    | 'not-drained'
    | 'lost'
    | 'applied-twice'
    | 'concurrent-runs'
    | 'poison-not-dead-lettered'
    | 'dead-lettered-unrun'
    | 'fifo-order'
    | 'escaped';
  readonly detail: string;
}

/** Ids applied more than once, each excused or not by what the workers said about it. */
export interface TwiceApplied {
  readonly id: string;
  readonly times: number;
  /** The workers said so: `lock_lost` for it, or `message_processed` with `marked: false` (README, Guarantees). */
  readonly saidSo: string | undefined;
}

export function appliedTwice(run: WorkerRun): TwiceApplied[] {
  const times = new Map<string, number>();
  for (const a of run.applications) times.set(a.id, (times.get(a.id) ?? 0) + 1);
  return run.sent
    .filter((m) => (times.get(m.id) ?? 0) > 1)
    .map((m) => {
      const lockLost = run.workers.some((w) => w.events.lock_lost.some((e) => e.messageId === m.messageId));
      const unmarked = run.workers.some((w) =>
        w.events.message_processed.some((e) => e.messageId === m.messageId && !e.marked),
      );
      const saidSo = lockLost ? 'lock_lost' : unmarked ? 'message_processed unmarked' : undefined;
      return { id: m.id, times: times.get(m.id) ?? 0, saidSo };
    });
}

export function checkWorkerRun(run: WorkerRun): WorkerViolation[] {
  const violations: WorkerViolation[] = [];
  const add = (rule: WorkerViolation['rule'], detail: string): void => {
    violations.push({ rule, detail });
  };
  const idOf = (body: string): string => {
    const parsed = JSON.parse(body) as { id?: string; poison?: string };
    return parsed.id ?? parsed.poison ?? body;
  };
  const left = new Set(run.leftInQueue.map(idOf));
  const dead = new Set(run.deadLettered.map(idOf));
  const applied = new Set(run.applications.map((a) => a.id));

  if (!run.drained) add('not-drained', `still in the queue: ${[...left].join(', ')}`);
  for (const m of run.sent) {
    if (m.kind === 'poison') {
      if (!dead.has(m.id) && !left.has(m.id))
        add('poison-not-dead-lettered', `${m.id} deleted, not in the DLQ`);
    } else {
      if (!applied.has(m.id) && !left.has(m.id))
        add('lost', `${m.id} (${m.kind}) gone from the queue, never applied`);
      if (dead.has(m.id)) add('dead-lettered-unrun', `${m.id} (${m.kind}) is in the DLQ`);
    }
  }
  if (run.report.lost !== [...run.sent].filter((m) => m.kind !== 'poison' && !applied.has(m.id)).length) {
    add('lost', `the ledger and the handler disagree: ${JSON.stringify(run.report)}`);
  }
  for (const twice of appliedTwice(run)) {
    if (!twice.saidSo)
      add('applied-twice', `${twice.id}: ${twice.times} effects accepted, and no worker said it might`);
  }
  if (run.report.concurrentRuns > 0)
    add('concurrent-runs', `${run.report.concurrentRuns} overlapping run(s)`);
  if (run.plan.fifo) {
    for (let g = 0; g < GROUPS; g++) {
      const group = `g${g}`;
      const expected = run.sent.filter((m) => m.group === group && m.kind !== 'poison').map((m) => m.id);
      const firsts = [...new Set(run.applications.map((a) => a.id))].filter((id) => expected.includes(id));
      const sentOrder = expected.filter((id) => firsts.includes(id));
      if (firsts.join() !== sentOrder.join()) {
        add('fifo-order', `${group}: first applied ${firsts.join(' ')}, sent ${sentOrder.join(' ')}`);
      }
    }
  }
  for (const e of run.escaped) add('escaped', e);
  return violations;
}

/** The run's trail for a failure report: the plan, what happened when, and the outcome. */
export function describeRun(run: WorkerRun): string {
  const count = (name: keyof StartedWorker['events']): number =>
    run.workers.reduce((n, w) => n + w.events[name].length, 0);
  return [
    `plan: ${JSON.stringify(run.plan)}`,
    ...run.notes.map((n) => `  +${n.at} ms ${n.text}`),
    `sent: ${run.sent.map((m) => `${m.id}=${m.kind}${m.group ? `@${m.group}` : ''}`).join(' ')}`,
    `applied in order: ${run.applications.map((a) => `${a.id}#${a.fencingToken}`).join(' ')}`,
    `ledger: ${JSON.stringify(run.report)}`,
    `left in queue: ${run.leftInQueue.join(' ') || '-'}; DLQ: ${run.deadLettered.length}`,
    `events: processed ${count('message_processed')}, duplicates ${count('duplicate_skipped')}, contended ${count('lock_contended')}, quorum ${count('quorum_unavailable')}, poison ${count('poison_message')}, errors ${count('handler_error')}, lock lost ${count('lock_lost')}, released ${count('message_released')}, sqs errors ${count('sqs_error')}`,
    `injected: ${[...run.injected].map(([k, v]) => `${k} x${v}`).join(', ') || '-'}`,
  ].join('\n');
}

/** One line per run: how much of the Worker a schedule exercised. */
/** What a schedule exercised, as counts. */
export function tallyRun(run: WorkerRun): Tally {
  const count = (name: keyof StartedWorker['events']): number =>
    run.workers.reduce((n, w) => n + w.events[name].length, 0);
  const twice = appliedTwice(run);
  return {
    [run.plan.fifo ? 'fifo runs' : 'standard runs']: 1,
    messages: run.sent.length,
    steps: run.plan.steps.length,
    'drain ms': run.drainMs,
    processed: count('message_processed'),
    duplicates: count('duplicate_skipped'),
    contended: count('lock_contended'),
    'quorum unavailable': count('quorum_unavailable'),
    'locks lost': count('lock_lost'),
    released: count('message_released'),
    'sqs errors': count('sqs_error'),
    'applied twice': twice.length,
    'applied twice, said so': twice.filter((t) => t.saidSo).length,
    'faults injected': [...run.injected.values()].reduce((a, b) => a + b, 0),
  };
}
