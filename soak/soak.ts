/**
 * Soak test: 100,000 messages through one Worker, watching for growth in memory, timers and listeners.
 *
 *   npm run soak                              # 100,000 messages (a few minutes)
 *   npm run soak -- --messages 20000          # a quick run
 *   npm run soak -- --heap-snapshots /tmp/s   # heap snapshots at the end of warm-up and at the end
 *
 * Writing a heap snapshot leaves its native memory with the allocator: with --heap-snapshots the RSS
 * numbers are not those of the worker alone (use it to diff the two heaps, not for the RSS check).
 *
 * Options: --messages N (100000), --warmup N (10% of messages, at most 10000), --checkpoints N (9),
 * --concurrency N (pollers, 4), --backlog N (messages kept in the queue, 4000), --ttl-ms N (lock TTL,
 * 6000: the heartbeat then beats every 2 s), --work-ms N (handler work; 0: one setImmediate),
 * --slow-every N and --slow-ms M (every Nth message works M ms instead, 2500 and 2500: long enough for
 * heartbeats to extend its lock and visibility while the other pollers go on; --slow-every 0: none),
 * --hang-node-sec N (fault injection, 0: none: SIGSTOP the first Redis node for N s from the start of
 * the third segment after warm-up; the worker goes on with a quorum of 2, and the report shows what
 * that costs and whether it all comes back),
 * --heap-snapshots DIR, --timer-stacks (creation stacks of timers still live after stop),
 * --samples FILE (the worker's raw JSON lines), --json (the report as JSON).
 *
 * Setup: 3 redis-server processes (test/helpers/redis-nodes.ts) and fauxqs (test/helpers/sqs.ts) in
 * this process; the Worker runs alone in a child process (soak/worker.ts, with --expose-gc) so its RSS
 * is its own. The run is cut into segments: warm-up, then `--checkpoints` equal ones. For each, this
 * process sends exactly its messages (SendMessageBatch, keeping about `--backlog` in the queue), and
 * the worker, once it has processed the last one, lets everything settle (1 s), calls global.gc() and
 * takes a checkpoint: RSS and heap, live objects by constructor (v8.queryObjects), counters. Every
 * checkpoint is thus taken idle, comparable with the others, and its stall disturbs no message. Under
 * load the worker samples itself every SAMPLE_MS: RSS, heap, event-loop delay, active resources, live
 * timers and listener counts.
 *
 * Pass (exit code 0) when all of:
 * - RSS grows less than 20 MB from the warm-up checkpoint to any later one;
 * - no counter grows: active resources by type, live timers (ref'd and unref'd, see
 *   soak/timer-probe.ts), and listeners on the Worker, the Redlock, the ioredis clients, the
 *   sqs-consumer pollers and the Worker's shutdown signal (its AbortSignal.any dependants too); see
 *   counterTrends for the rule;
 * - live Timeout, Lock, AbortController, AbortSignal and Promise objects (v8.queryObjects) are not
 *   rising over the idle checkpoints from warm-up to the end (see rising());
 * - after worker.stop(), redlock.quit() and sqs.destroy(), no timer or resource is left beyond what
 *   the process held before the worker existed, and the process exits by itself;
 * - every message was processed, with no other outcome (no lock lost, no SQS error, no duplicate).
 * Exit code 1: a check failed; 2: the soak itself could not run.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { GetQueueAttributesCommand, SendMessageBatchCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { type RedisNodes, startRedisNodes } from '../test/helpers/redis-nodes.ts';
import { type SqsEnv, startSqs } from '../test/helpers/sqs.ts';
import type { Checkpoint, Counters, Line, Ready, Sample, Summary } from './worker.ts';

// ---------------------------------------------------------------------------
// Options

const RSS_LIMIT_MB = 20;
/** How often the worker samples itself. */
const SAMPLE_MS = 500;

interface Options {
  readonly messages: number;
  readonly warmup: number;
  readonly checkpoints: number;
  readonly concurrency: number;
  readonly backlog: number;
  readonly ttlMs: number;
  readonly workMs: number;
  readonly slowEvery: number;
  readonly slowMs: number;
  readonly hangNodeSec: number;
  readonly heapSnapshots: string | undefined;
  readonly timerStacks: boolean;
  readonly samples: string | undefined;
  readonly json: boolean;
}

function parseArgs(argv: readonly string[]): Options {
  const values = new Map<string, string>();
  const flags = new Set<string>();
  const known = {
    values: [
      'messages',
      'warmup',
      'checkpoints',
      'concurrency',
      'backlog',
      'ttl-ms',
      'work-ms',
      'slow-every',
      'slow-ms',
      'hang-node-sec',
    ],
    paths: ['heap-snapshots', 'samples'],
    flags: ['timer-stacks', 'json'],
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const match = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    const name = match?.[1];
    if (!match || !name) throw new Error(`soak: unexpected argument ${arg}`);
    if (known.flags.includes(name)) flags.add(name);
    else if (known.values.includes(name) || known.paths.includes(name)) {
      const value = match[2] ?? argv[++i];
      if (value === undefined) throw new Error(`soak: --${name} needs a value`);
      values.set(name, value);
    } else throw new Error(`soak: unknown option --${name}`);
  }
  const int = (name: string, fallback: number, min: number): number => {
    const raw = values.get(name);
    if (raw === undefined) return fallback;
    const n = Number(raw.replaceAll('_', ''));
    if (!Number.isInteger(n) || n < min) throw new Error(`soak: --${name} must be an integer >= ${min}`);
    return n;
  };
  const messages = int('messages', 100_000, 10);
  const warmup = int('warmup', Math.min(10_000, Math.floor(messages / 10)), 1);
  if (warmup >= messages) throw new Error('soak: --warmup must be below --messages');
  return {
    messages,
    warmup,
    checkpoints: int('checkpoints', 9, 1),
    concurrency: int('concurrency', 4, 1),
    backlog: int('backlog', 4_000, 10),
    ttlMs: int('ttl-ms', 6_000, 1_600),
    workMs: int('work-ms', 0, 0),
    slowEvery: int('slow-every', 2_500, 0),
    slowMs: int('slow-ms', 2_500, 0),
    hangNodeSec: int('hang-node-sec', 0, 0),
    heapSnapshots: values.get('heap-snapshots'),
    timerStacks: flags.has('timer-stacks'),
    samples: values.get('samples'),
    json: flags.has('json'),
  };
}

// ---------------------------------------------------------------------------
// Feeding the queue

/**
 * Message `i`; every `slowEvery`th one asks the handler to work `slowMs` (half a period off the round
 * numbers, so a slow message does not end a segment and stretch its busy time).
 */
function bodyOf(i: number, options: Options): string {
  const slow = options.slowEvery > 0 && (i + Math.floor(options.slowEvery / 2)) % options.slowEvery === 0;
  return JSON.stringify({
    ...(slow ? { workMs: options.slowMs } : {}),
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

/** Messages in the queue, visible or in flight. */
async function queued(sqs: SQSClient, queueUrl: string): Promise<number> {
  const out = await sqs.send(
    new GetQueueAttributesCommand({
      QueueUrl: queueUrl,
      AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
    }),
  );
  return (
    Number(out.Attributes?.ApproximateNumberOfMessages ?? 0) +
    Number(out.Attributes?.ApproximateNumberOfMessagesNotVisible ?? 0)
  );
}

/**
 * Sends messages `from` to `to` (exclusive), keeping about `backlog` of them in the queue; stops early
 * when `stopped()`.
 */
async function feed(
  options: Options,
  sqs: SQSClient,
  queueUrl: string,
  from: number,
  to: number,
  backlog: number,
  stopped: () => boolean,
): Promise<void> {
  const SENDERS = 4;
  let sent = from;
  while (sent < to && !stopped()) {
    const room = Math.min(backlog - (await queued(sqs, queueUrl)), to - sent);
    if (room < Math.min(backlog / 4, to - sent)) {
      await sleep(50);
      continue;
    }
    let next = sent;
    const end = sent + room;
    const sender = async (): Promise<void> => {
      while (next < end && !stopped()) {
        const first = next;
        const count = Math.min(10, end - first);
        next += count;
        const out = await sqs.send(
          new SendMessageBatchCommand({
            QueueUrl: queueUrl,
            Entries: Array.from({ length: count }, (_, j) => ({
              Id: `m${j}`,
              MessageBody: bodyOf(first + j, options),
            })),
          }),
        );
        if (out.Failed?.length) throw new Error(`soak: send failed: ${JSON.stringify(out.Failed[0])}`);
      }
    };
    await Promise.all(Array.from({ length: SENDERS }, sender));
    sent = end;
  }
}

/** Processed counts at which the worker takes a checkpoint: the end of warm-up, ..., all messages. */
function marksOf(options: Options): number[] {
  const { messages, warmup, checkpoints } = options;
  const step = (messages - warmup) / checkpoints;
  const marks = [
    warmup,
    ...Array.from({ length: checkpoints }, (_, i) => Math.round(warmup + (i + 1) * step)),
  ];
  marks[marks.length - 1] = messages;
  return [...new Set(marks)];
}

/** Fault injection: the first node stops answering (SIGSTOP, its connections stay open) for `seconds`. */
function hangNode(redis: RedisNodes, seconds: number, atMessage: number): void {
  const node = redis.nodes[0];
  if (!node) return;
  process.stderr.write(
    `[soak] hanging Redis node ${node.port} for ${seconds} s from message ${fmt(atMessage)}\n`,
  );
  node.pause();
  setTimeout(() => {
    if (node.isPaused) node.resume();
    process.stderr.write(`[soak] Redis node ${node.port} answers again\n`);
  }, seconds * 1_000).unref();
}

// ---------------------------------------------------------------------------
// The worker process

interface WorkerRun {
  readonly child: ChildProcess;
  readonly ready: Promise<Ready>;
  readonly samples: Sample[];
  readonly checkpoints: Checkpoint[];
  summary: Summary | undefined;
  /** Resolves with the exit code (or signal) once the process has ended. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exitedAt: number | undefined;
}

function startWorker(
  options: Options,
  redis: RedisNodes,
  sqsEnv: SqsEnv,
  queueUrl: string,
  raw: WriteStream | undefined,
  onLine: (line: Line) => void,
): WorkerRun {
  const script = fileURLToPath(new URL('./worker.ts', import.meta.url));
  const child = spawn(process.execPath, ['--expose-gc', '--disable-warning=ExperimentalWarning', script], {
    env: {
      ...process.env,
      SOAK_REDIS_URLS: redis.nodes.map((n) => n.url).join(','),
      SOAK_QUEUE_URL: queueUrl,
      SOAK_ENDPOINT: sqsEnv.endpoint,
      SOAK_MESSAGES: String(options.messages),
      SOAK_MARKS: marksOf(options).join(','),
      SOAK_CONCURRENCY: String(options.concurrency),
      SOAK_TTL_MS: String(options.ttlMs),
      SOAK_WORK_MS: String(options.workMs),
      SOAK_SNAPSHOT_DIR: options.heapSnapshots ?? '',
      SOAK_TIMER_STACKS: options.timerStacks ? '1' : '',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  // Never outlive this process.
  const kill = (): void => {
    child.kill('SIGKILL');
  };
  process.on('exit', kill);
  let resolveReady: (ready: Ready) => void = () => undefined;
  const run: WorkerRun = {
    child,
    ready: new Promise((resolve) => {
      resolveReady = resolve;
    }),
    samples: [],
    checkpoints: [],
    summary: undefined,
    exited: new Promise((resolve) => {
      // 'close', not 'exit': every line of its stdout has been read by then.
      child.once('close', (code, signal) => {
        run.exitedAt = performance.now();
        process.off('exit', kill);
        resolve({ code, signal });
      });
    }),
    exitedAt: undefined,
  };
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  lines.on('line', (text) => {
    raw?.write(`${text}\n`);
    let line: Line;
    try {
      line = JSON.parse(text) as Line;
    } catch {
      process.stderr.write(`[worker] ${text}\n`);
      return;
    }
    if (line.type === 'ready') resolveReady(line);
    else if (line.type === 'sample') run.samples.push(line);
    else if (line.type === 'checkpoint') run.checkpoints.push(line);
    else if (line.type === 'summary') run.summary = line;
    onLine(line);
  });
  return run;
}

// ---------------------------------------------------------------------------
// Analysis

const OBJECT_NAMES = ['Timeout', 'Lock', 'AbortController', 'AbortSignal', 'Promise'] as const;

function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** Least-squares slope of y over x. */
function slope(xs: readonly number[], ys: readonly number[]): number {
  const n = xs.length;
  if (n < 2) return Number.NaN;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += ((xs[i] as number) - mx) * ((ys[i] as number) - my);
    den += ((xs[i] as number) - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

/**
 * A series (of idle checkpoints) rises when even the lowest value of its last third is above the
 * highest of its first third by more than max(5, 10%). A leak of one object per heartbeat tick (about
 * 50 in a default run), batch or message shows; what merely depends on the moment does not (idle, the
 * Timeout objects held by the pollers, sockets and clients vary between 16 and 24 from run to run).
 */
function rising(series: readonly number[]): boolean {
  const third = Math.max(1, Math.floor(series.length / 3));
  const early = Math.max(...series.slice(0, third));
  return Math.min(...series.slice(-third)) > early + Math.max(5, 0.1 * early);
}

interface CounterTrend {
  readonly name: string;
  /** Idle, after gc: at the warm-up checkpoint and at the final one. */
  readonly idleWarmup: number;
  readonly idleFinal: number;
  /** Under load, one sample every SAMPLE_MS after warm-up. */
  readonly first: number;
  readonly last: number;
  readonly min: number;
  readonly max: number;
  readonly firstThirdMedian: number;
  readonly lastThirdMedian: number;
  readonly firstThirdMax: number;
  readonly lastThirdMax: number;
  readonly growing: boolean;
}

/**
 * A counter grows when, under load, the median of the last third of the samples is above the first
 * third's by more than max(1, 10% of the first third's max) and the max rose too; or when its values
 * at the idle checkpoints from warm-up to the end are rising().
 */
function counterTrends(samples: readonly Sample[], idle: readonly Checkpoint[]): CounterTrend[] {
  const warmup = idle[0] as Checkpoint;
  const final = idle[idle.length - 1] as Checkpoint;
  const names = [
    ...new Set([...samples.flatMap((s) => Object.keys(s.counters)), ...Object.keys(final.counters)]),
  ].sort();
  const third = Math.max(1, Math.floor(samples.length / 3));
  return names.map((name) => {
    const series = samples.map((s) => s.counters[name] ?? 0);
    const a = series.slice(0, third);
    const b = series.slice(-third);
    const firstThirdMax = Math.max(...a);
    const lastThirdMax = Math.max(...b);
    const firstThirdMedian = median(a);
    const lastThirdMedian = median(b);
    const idleWarmup = warmup.counters[name] ?? 0;
    const idleFinal = final.counters[name] ?? 0;
    const underLoad =
      lastThirdMedian > firstThirdMedian + Math.max(1, 0.1 * firstThirdMax) && lastThirdMax > firstThirdMax;
    const idleRising = rising(idle.map((c) => c.counters[name] ?? 0));
    return {
      name,
      idleWarmup,
      idleFinal,
      first: series[0] ?? 0,
      last: series[series.length - 1] ?? 0,
      min: Math.min(...series),
      max: Math.max(...series),
      firstThirdMedian,
      lastThirdMedian,
      firstThirdMax,
      lastThirdMax,
      growing: underLoad || idleRising,
    };
  });
}

interface Check {
  readonly name: string;
  readonly pass: boolean;
  readonly detail: string;
}

interface Report {
  readonly options: Options;
  readonly environment: Record<string, string | number>;
  readonly messages: number;
  /** Wall time from the first to the last message, idle checkpoints included. */
  readonly wallSec: number;
  /** Busy time after warm-up (idle checkpoints left out), and the rate over it. */
  readonly busySec: number;
  readonly msgPerSec: number;
  readonly rss: {
    readonly startMb: number;
    readonly warmupMb: number;
    readonly finalMb: number;
    readonly growthMb: number;
    readonly maxGrowthMb: number;
    readonly slopeMbPer10k: number;
    readonly sampledFirstMb: number;
    readonly sampledLastMb: number;
    readonly sampledMaxMb: number;
    readonly sampledMaxHeapTotalMb: number;
    /** Highest sampled RSS of each segment after warm-up (no gc). */
    readonly segmentPeaksMb: readonly number[];
  };
  readonly heap: { readonly warmupMb: number; readonly finalMb: number; readonly growthMb: number };
  readonly checkpoints: readonly {
    label: string;
    processed: number;
    busySec: number;
    rssMb: number;
    heapUsedMb: number;
    externalMb: number;
    objects: Record<string, number>;
    stallMs: number;
  }[];
  readonly eld: Summary['eld'] & { readonly worstSampleP99: number; readonly worstSampleMax: number };
  readonly counters: readonly CounterTrend[];
  readonly baseline: Counters;
  readonly afterStop: Counters;
  readonly afterStopTimerStacks: Summary['afterStopTimerStacks'];
  readonly exitedBySelfMs: number | undefined;
  readonly outcomes: Record<string, number>;
  readonly sqsErrors: readonly string[];
  readonly sqsCalls: Record<string, number>;
  readonly redisCalls: Record<string, number>;
  readonly snapshots: readonly string[];
  readonly checks: readonly Check[];
  readonly pass: boolean;
}

function analyse(
  options: Options,
  run: WorkerRun,
  ready: Ready,
  summary: Summary,
  exitedBySelfMs: number | undefined,
  environment: Record<string, string | number>,
): Report {
  const start = run.checkpoints.find((c) => c.label === 'start');
  const warmup = run.checkpoints.find((c) => c.label === 'warmup');
  const final = run.checkpoints.find((c) => c.label === 'final');
  if (!start || !warmup || !final) throw new Error('soak: the worker did not report every checkpoint');
  const after = run.checkpoints.filter((c) => c.t > warmup.t);
  // Samples under load after warm-up: messages were processed since the previous sample.
  const measured = run.samples.filter(
    (s, i) => s.t > warmup.t && s.t < final.t && s.processed > (run.samples[i - 1]?.processed ?? 0),
  );
  const busySec = after.reduce((sum, c) => sum + c.busySec, 0);
  const processed = summary.outcomes.message_processed ?? 0;
  const maxGrowthMb = Math.max(...after.map((c) => c.memory.rss - warmup.memory.rss));
  const idle = run.checkpoints.filter((c) => c.t >= warmup.t);
  const counters = counterTrends(measured, idle);
  const leftovers = Object.entries(summary.afterStop).filter(
    ([name, n]) =>
      (name.startsWith('resource.') || name === 'timers.live') && n > (ready.baseline[name] ?? 0),
  );
  const unexpected = Object.entries(summary.outcomes).filter(
    ([name, n]) => name !== 'message_processed' && n > 0,
  );
  const growing = counters.filter((c) => c.growing);
  const grownObjects = OBJECT_NAMES.filter((name) => rising(idle.map((c) => c.objects[name] ?? 0)));
  const objectDetail = (names: readonly string[]): string =>
    names.map((n) => `${n} ${idle.map((c) => c.objects[n]).join(' ')}`).join('; ');

  const checks: Check[] = [
    {
      name: `RSS after warm-up grows < ${RSS_LIMIT_MB} MB`,
      pass: maxGrowthMb < RSS_LIMIT_MB,
      detail:
        `${signed(final.memory.rss - warmup.memory.rss)} MB at the end, at most ${signed(maxGrowthMb)} MB ` +
        `over ${after.length} idle checkpoints after gc`,
    },
    {
      name: 'no growing count of resources, timers or listeners',
      pass: growing.length === 0 && measured.length >= 6,
      detail:
        measured.length < 6
          ? `too few samples under load after warm-up (${measured.length}): run more messages`
          : growing.length === 0
            ? `${counters.length} counters flat over ${measured.length} samples under load and ${after.length} idle checkpoints`
            : `growing: ${growing
                .map(
                  (c) =>
                    `${c.name} (load ${c.firstThirdMedian} -> ${c.lastThirdMedian}, idle ${c.idleWarmup} -> ${c.idleFinal})`,
                )
                .join(', ')}`,
    },
    {
      name: 'no growing count of live Timeout / Lock / AbortController / AbortSignal / Promise objects',
      pass: grownObjects.length === 0,
      detail:
        grownObjects.length === 0
          ? `at the ${idle.length} idle checkpoints from warm-up to the end: ${objectDetail(OBJECT_NAMES)}`
          : `rising: ${objectDetail(grownObjects)}`,
    },
    {
      name: 'nothing left after stop; the process exits by itself',
      pass: leftovers.length === 0 && exitedBySelfMs !== undefined,
      detail:
        (leftovers.length === 0
          ? 'no timer or resource beyond the baseline'
          : `left: ${leftovers.map(([n, v]) => `${n} ${v} (baseline ${ready.baseline[n] ?? 0})`).join(', ')}`) +
        (exitedBySelfMs === undefined
          ? '; did NOT exit by itself'
          : `; exited ${fmt(exitedBySelfMs)} ms after its summary`),
    },
    {
      name: 'every message processed, no other outcome',
      pass: processed === options.messages && unexpected.length === 0,
      detail: `processed ${fmt(processed)}${unexpected.length ? `; ${unexpected.map(([n, v]) => `${n} ${v}`).join(', ')}` : ', nothing else'}`,
    },
  ];

  return {
    options,
    environment,
    messages: processed,
    wallSec: summary.lastProcessedAt - summary.firstProcessedAt,
    busySec,
    msgPerSec: (options.messages - options.warmup) / busySec,
    rss: {
      startMb: start.memory.rss,
      warmupMb: warmup.memory.rss,
      finalMb: final.memory.rss,
      growthMb: final.memory.rss - warmup.memory.rss,
      maxGrowthMb,
      slopeMbPer10k:
        slope(
          after.map((c) => c.processed),
          after.map((c) => c.memory.rss),
        ) * 10_000,
      sampledFirstMb: measured[0]?.memory.rss ?? Number.NaN,
      sampledLastMb: measured[measured.length - 1]?.memory.rss ?? Number.NaN,
      sampledMaxMb: Math.max(...measured.map((s) => s.memory.rss)),
      sampledMaxHeapTotalMb: Math.max(...measured.map((s) => s.memory.heapTotal)),
      segmentPeaksMb: after.map((c, i) => {
        const from = (idle[i] as Checkpoint).t;
        return Math.max(...run.samples.filter((s) => s.t > from && s.t < c.t).map((s) => s.memory.rss));
      }),
    },
    heap: {
      warmupMb: warmup.memory.heapUsed,
      finalMb: final.memory.heapUsed,
      growthMb: final.memory.heapUsed - warmup.memory.heapUsed,
    },
    checkpoints: run.checkpoints.map((c) => ({
      label: c.label,
      processed: c.processed,
      busySec: c.busySec,
      rssMb: c.memory.rss,
      heapUsedMb: c.memory.heapUsed,
      externalMb: c.memory.external,
      objects: c.objects,
      stallMs: c.stallMs,
    })),
    eld: {
      ...summary.eld,
      worstSampleP99: Math.max(...measured.map((s) => s.eld.p99)),
      worstSampleMax: Math.max(...measured.map((s) => s.eld.max)),
    },
    counters,
    baseline: ready.baseline,
    afterStop: summary.afterStop,
    afterStopTimerStacks: summary.afterStopTimerStacks,
    exitedBySelfMs,
    outcomes: summary.outcomes,
    sqsErrors: summary.sqsErrors,
    sqsCalls: summary.sqsCalls,
    redisCalls: summary.redisCalls,
    snapshots: run.checkpoints.flatMap((c) => (c.snapshot ? [c.snapshot] : [])),
    checks,
    pass: checks.every((c) => c.pass),
  };
}

// ---------------------------------------------------------------------------
// Output

function fmt(value: number, digits = 0): string {
  if (!Number.isFinite(value)) return '–';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function signed(value: number, digits = 1): string {
  return `${value >= 0 ? '+' : ''}${fmt(value, digits)}`;
}

function calls(counts: Record<string, number>): string {
  return Object.entries(counts)
    .sort((a, b) => b[1] - a[1])
    .map(([name, n]) => `${name} ${fmt(n)}`)
    .join(', ');
}

function text(r: Report): string {
  const o = r.options;
  const counterRows = r.counters.map(
    (c) =>
      `| ${c.name} | ${c.idleWarmup} | ${c.idleFinal} | ${c.first} | ${c.last} | ${c.min}–${c.max} | ` +
      `${c.firstThirdMedian} / ${c.firstThirdMax} | ${c.lastThirdMedian} / ${c.lastThirdMax} | ` +
      `${c.growing ? '**GROWING**' : 'flat'} |`,
  );
  const checkpointRows = r.checkpoints.map(
    (c) =>
      `| ${c.label} | ${fmt(c.processed)} | ${fmt(c.busySec, 1)} | ${fmt(c.rssMb, 1)} | ` +
      `${c.label === 'start' ? '' : signed(c.rssMb - r.rss.warmupMb)} | ${fmt(c.heapUsedMb, 2)} | ` +
      `${fmt(c.externalMb, 1)} | ${OBJECT_NAMES.map((n) => c.objects[n]).join(' | ')} | ${fmt(c.stallMs)} |`,
  );
  const afterStop = Object.entries(r.afterStop)
    .map(([name, n]) => `${name} ${n} (baseline ${r.baseline[name] ?? 0})`)
    .join(', ');
  const heartbeatMs = Math.min(o.ttlMs, 30_000) / 3;
  return [
    `# Soak: ${fmt(r.messages)} messages through one Worker`,
    '',
    ...Object.entries(r.environment).map(([k, v]) => `- ${k}: ${v}`),
    `- Settings: ${o.concurrency} pollers × batch 10, 3-node Redlock, lock TTL ${fmt(o.ttlMs)} ms (heartbeat ` +
      `every ${fmt(heartbeatMs)} ms), visibility 30 s, handler work: ${o.workMs > 0 ? `${o.workMs} ms` : 'one setImmediate'}` +
      `${o.slowEvery > 0 ? ` (every ${fmt(o.slowEvery)}th message: ${fmt(o.slowMs)} ms)` : ''}, ` +
      `backlog ${fmt(o.backlog)}, warm-up ${fmt(o.warmup)} messages, then ${o.checkpoints} segments each ending in an idle checkpoint`,
    ...(o.hangNodeSec > 0
      ? [
          `- **Fault injected**: Redis node 1 of 3 hung (SIGSTOP, connections open) for ${o.hangNodeSec} s from ` +
            `the start of segment 3 after warm-up (message ${fmt(marksOf(o)[2] ?? 0)})`,
        ]
      : []),
    '',
    '## Result',
    '',
    `- Messages: ${fmt(r.messages)}; after warm-up ${fmt(o.messages - o.warmup)} in ${fmt(r.busySec, 1)} s busy = ` +
      `**${fmt(r.msgPerSec)} msg/s** (wall time first to last message ${fmt(r.wallSec, 1)} s, idle checkpoints included)`,
    `- RSS (idle, after gc): ${fmt(r.rss.startMb, 1)} MB before start, ${fmt(r.rss.warmupMb, 1)} MB at the end of ` +
      `warm-up, ${fmt(r.rss.finalMb, 1)} MB at the end: **${signed(r.rss.growthMb)} MB** after warm-up (max over ` +
      `checkpoints ${signed(r.rss.maxGrowthMb)} MB; trend ${signed(r.rss.slopeMbPer10k, 2)} MB per 10k messages)`,
    `- RSS (under load, sampled every ${SAMPLE_MS} ms, no gc): ${fmt(r.rss.sampledFirstMb, 1)} MB first, ${fmt(r.rss.sampledLastMb, 1)} MB ` +
      `last, max ${fmt(r.rss.sampledMaxMb, 1)} MB (V8 heap total up to ${fmt(r.rss.sampledMaxHeapTotalMb, 1)} MB: ` +
      'garbage between collections; a memory-reducing gc gives it back)',
    `- RSS peak under load per segment after warm-up: ${r.rss.segmentPeaksMb.map((mb) => fmt(mb, 0)).join(', ')} MB`,
    `- Heap used (idle, after gc): ${fmt(r.heap.warmupMb, 2)} -> ${fmt(r.heap.finalMb, 2)} MB (**${signed(r.heap.growthMb, 2)} MB**)`,
    `- Event-loop delay under load after warm-up: p50 ${fmt(r.eld.p50, 2)} ms, **p99 ${fmt(r.eld.p99, 2)} ms, ` +
      `max ${fmt(r.eld.max, 1)} ms** (worst ${SAMPLE_MS} ms sample: p99 ${fmt(r.eld.worstSampleP99, 1)} ms; delay = lateness of a ` +
      '10 ms timer; checkpoint stalls excluded)',
    `- Outcomes: ${Object.entries(r.outcomes)
      .map(([n, v]) => `${n} ${v}`)
      .join(', ')}`,
    ...(r.sqsErrors.length ? [`- SQS errors: ${r.sqsErrors.join('; ')}`] : []),
    `- SQS calls: ${calls(r.sqsCalls)}`,
    `- Redis commands (3 nodes): ${calls(r.redisCalls)}`,
    `- After stop: ${afterStop}`,
    ...r.afterStopTimerStacks.map(
      (s) => `  - ${s.count} live timer(s) made at:\n${s.stack.replace(/^/gm, '      ')}`,
    ),
    ...(r.snapshots.length
      ? [
          `- Heap snapshots: ${r.snapshots.join(', ')} (writing them inflates RSS: the RSS check means little in this run)`,
        ]
      : []),
    '',
    '## Checks',
    '',
    ...r.checks.map((c) => `- ${c.pass ? 'PASS' : '**FAIL**'} ${c.name}: ${c.detail}`),
    '',
    `**${r.pass ? 'PASS' : 'FAIL'}**`,
    '',
    '## Checkpoints (idle, after global.gc(); objects: v8.queryObjects counts)',
    '',
    `| checkpoint | processed | busy s | RSS MB | Δ RSS | heap MB | external MB | ${OBJECT_NAMES.join(' | ')} | stall ms |`,
    `|---|--:|--:|--:|--:|--:|--:|${OBJECT_NAMES.map(() => '--:').join('|')}|--:|`,
    ...checkpointRows,
    '',
    `## Counters: idle (warm-up, final checkpoint) and under load (one sample every ${SAMPLE_MS} ms after warm-up)`,
    '',
    '| counter | idle warm-up | idle final | first | last | range | 1st third median / max | last third median / max | trend |',
    '|---|--:|--:|--:|--:|--:|--:|--:|---|',
    ...counterRows,
  ].join('\n');
}

function progressLine(started: number, sample: Sample, total: number): string {
  return (
    `[soak] ${fmt((performance.now() - started) / 1000, 0).padStart(4)} s  ` +
    `${fmt(sample.processed).padStart(7)}/${fmt(total)}  ` +
    `rss ${fmt(sample.memory.rss, 1)} MB  heap ${fmt(sample.memory.heapUsed, 1)} MB  ` +
    `eld p99 ${fmt(sample.eld.p99, 1)} ms  timers ${sample.counters['timers.live']}`
  );
}

// ---------------------------------------------------------------------------

async function main(): Promise<number> {
  const options = parseArgs(process.argv.slice(2));
  const snapshotDir = options.heapSnapshots && path.resolve(options.heapSnapshots);
  if (snapshotDir) await mkdir(snapshotDir, { recursive: true });
  const raw = options.samples ? createWriteStream(options.samples) : undefined;
  const started = performance.now();
  const redis = await startRedisNodes(3);
  let sqsEnv: SqsEnv | undefined;
  let run: WorkerRun | undefined;
  try {
    sqsEnv = await startSqs();
    const { queueUrl } = sqsEnv.createQueue('soak', { visibilityTimeoutSec: 30 });
    let lastProgress = 0;
    let lastProcessed = -1;
    let lastChange = performance.now();
    let summaryAt: number | undefined;
    let killedAfterSummary = false;
    const current = startWorker(
      { ...options, heapSnapshots: snapshotDir },
      redis,
      sqsEnv,
      queueUrl,
      raw,
      (line) => {
        if (line.type === 'sample') {
          if (line.processed !== lastProcessed) {
            lastProcessed = line.processed;
            lastChange = performance.now();
          }
          if (performance.now() - lastProgress >= 5_000) {
            lastProgress = performance.now();
            process.stderr.write(`${progressLine(started, line, options.messages)}\n`);
          }
        } else if (line.type === 'checkpoint') {
          lastChange = performance.now();
          process.stderr.write(
            `[soak] checkpoint ${line.label} at ${fmt(line.processed)}: rss ${fmt(line.memory.rss, 1)} MB, ` +
              `heap ${fmt(line.memory.heapUsed, 2)} MB (idle, after gc)\n`,
          );
        } else if (line.type === 'summary') {
          summaryAt = performance.now();
          // Everything is stopped: the process must end by itself now.
          setTimeout(() => {
            if (current.exitedAt !== undefined) return;
            killedAfterSummary = true;
            process.stderr.write('[soak] the worker process did not exit within 5 s of stopping: killed\n');
            current.child.kill('SIGKILL');
          }, 5_000).unref();
        }
      },
    );
    run = current;
    let exited = false;
    void current.exited.then(() => {
      exited = true;
    });
    const ready = await Promise.race([current.ready, current.exited.then(() => undefined)]);
    if (!ready) throw new Error('soak: the worker process ended before it was ready');

    let stalled = false;
    const watchdog = setInterval(() => {
      if (performance.now() - lastChange > 60_000 && summaryAt === undefined) {
        stalled = true;
        process.stderr.write('[soak] no progress for 60 s: stopping the worker\n');
        current.child.kill('SIGKILL');
      }
    }, 1_000);
    let summary: Summary | undefined;
    try {
      // One segment per checkpoint: send exactly up to its mark, then wait for the worker's (idle) checkpoint.
      let sent = 0;
      for (const [index, mark] of marksOf(options).entries()) {
        if (options.hangNodeSec > 0 && index === 3) hangNode(redis, options.hangNodeSec, sent);
        await feed(options, sqsEnv.sqs, queueUrl, sent, mark, options.backlog, () => exited);
        sent = mark;
        while (!exited && !current.checkpoints.some((c) => c.label !== 'start' && c.processed >= mark)) {
          await sleep(50);
        }
      }
      const { code, signal } = await current.exited;
      summary = current.summary;
      if (!summary) {
        throw new Error(
          `soak: the worker process ended without a summary (code ${code}, signal ${signal}${stalled ? ', stalled' : ''})`,
        );
      }
    } finally {
      clearInterval(watchdog);
    }
    const exitedBySelfMs =
      killedAfterSummary || summaryAt === undefined || current.exitedAt === undefined
        ? undefined
        : current.exitedAt - summaryAt;
    const environment = {
      Date: new Date().toISOString(),
      Node: `${process.version} (V8 ${process.versions.v8})`,
      Platform: `${process.platform} ${process.arch}, ${os.availableParallelism()} CPUs (${os.cpus()[0]?.model.trim()})`,
      Setup:
        '3 redis-server processes and fauxqs in the parent process; the Worker alone in a child process (soak/worker.ts)',
      'Run time': `${fmt((performance.now() - started) / 1000, 1)} s`,
    };
    const report = analyse(options, current, ready, summary, exitedBySelfMs, environment);
    process.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : `${text(report)}\n`);
    return report.pass ? 0 : 1;
  } catch (error) {
    run?.child.kill('SIGKILL');
    throw error;
  } finally {
    await sqsEnv?.stop();
    await redis.stop();
    raw?.end();
  }
}

try {
  process.exitCode = await main();
} catch (error) {
  process.exitCode = 2;
  const message = (error as Error)?.message ?? String(error);
  // The soak's own errors say all there is to say; anything else gets its stack.
  process.stderr.write(
    `${message.startsWith('soak:') ? message : String((error as Error)?.stack ?? error)}\n`,
  );
}
// Everything was closed above; should a handle still be open, do not hang on it.
setTimeout(() => process.exit(process.exitCode ?? 0), 2_000).unref();
