/**
 * The demo: `npm run demo`. Everything runs on this machine, nothing to configure:
 *
 * - fauxqs, an SQS emulator, embedded in this process: a queue and its dead-letter queue;
 * - three `redis-server` nodes on free ports, the lock quorum, and a fourth one for the ledger the
 *   handler writes its side effects to;
 * - three worker processes through the real CLI (`node src/cli.ts run demo/handler.ts`), four pollers
 *   each, with a 2 s visibility timeout that is NOT extended: a batch still running after 2 s (it
 *   waits for its slowest job) is delivered again while it runs, so duplicate deliveries are forced,
 *   and so is lock contention;
 * - a producer of 2,000 jobs (about 3 % of them slow, 2.5 to 3 s) and 20 poison messages
 *   (malformed JSON, or no id), sent in batches of 10 at 150 messages a second while the workers run;
 * - when half of the jobs are processed, one Redis node is killed (SIGKILL): two of three is still a
 *   quorum, and nothing may be lost or run twice.
 *
 * A live progress bar shows the run (one line a second when stdout is not a terminal), then a summary
 * table: sent, processed, duplicates suppressed, contended, poison dead-lettered, lost, processed
 * twice, msg/s. The exit code is 0 only when no job was lost and none was processed twice (and the run
 * finished in time, and every worker shut down cleanly).
 *
 * "processed twice" and "lost" come from the ledger (a Redis node of its own, test/helpers/ledger.ts),
 * not from the workers' own counts: what the handler's side effects really show.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SendMessageBatchCommand } from '@aws-sdk/client-sqs';
import cliProgress from 'cli-progress';
import type { Redis } from 'ioredis';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

// ---- the scenario ----

/** Valid jobs the producer sends. */
const JOBS = 2_000;
/** Poison messages mixed in. */
const POISON = 20;
/** Worker processes, and pollers (CONCURRENCY) in each. */
const WORKERS = 3;
const POLLERS_PER_WORKER = 4;
/** The producer's pace, in messages per second (batches of 10). */
const PRODUCE_RATE = 150;
/** Short, and not extended: a job still running after this is delivered again. */
const VISIBILITY_TIMEOUT_SEC = 2;
const LOCK_TTL_MS = 5_000;
/**
 * The queue's RedrivePolicy: the workers find the dead-letter queue from it and move poison there on
 * the first receive. High enough that the forced redeliveries never push a valid job to the DLQ.
 */
const MAX_RECEIVE_COUNT = 10;
/** The whole run (after setup) must finish within this. */
const TIMEOUT_MS = 120_000;
const LEDGER_PREFIX = 'demo';

const INSTALL_HINT = `redis-server not found on the PATH. The demo runs three local Redis nodes; install Redis first:
  Debian/Ubuntu:  sudo apt-get install -y redis-server
  Fedora/RHEL:    sudo dnf install -y redis
  macOS:          brew install redis
then run \`npm run demo\` again.`;

// ---- output ----

const out = (text = ''): void => void process.stdout.write(`${text}\n`);
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Set by the first Ctrl-C (or SIGTERM): the run stops, everything is cleaned up. */
let interrupted: NodeJS.Signals | undefined;

// ---- messages ----

interface Outgoing {
  body: string;
  /** The job id of a valid message; undefined for poison. */
  id?: string;
}

const POISON_BODIES = [
  'this is not JSON',
  '{"id": "job-truncated", "workMs": 1',
  '{"workMs": 5}',
  '{"id": 42, "workMs": 5}',
  'null',
];

/**
 * The 2,000 jobs, with a poison message every 100 of them. Deterministic: every 33rd job is slow
 * (2.5 to 3 s, longer than the visibility timeout), the others take 2 to 19 ms.
 */
function buildMessages(): Outgoing[] {
  const messages: Outgoing[] = [];
  const poisonEvery = Math.floor(JOBS / POISON);
  let poison = 0;
  for (let i = 0; i < JOBS; i++) {
    const id = `job-${String(i).padStart(4, '0')}`;
    const workMs = i % 33 === 7 ? 2_500 + ((i * 7_919) % 500) : 2 + ((i * 31) % 18);
    messages.push({ id, body: JSON.stringify({ id, workMs }) });
    if (i % poisonEvery === Math.floor(poisonEvery / 2) && poison < POISON) {
      messages.push({ body: POISON_BODIES[poison % POISON_BODIES.length] as string });
      poison++;
    }
  }
  return messages;
}

// ---- helpers ----

/** Free TCP ports on 127.0.0.1, all held open until every one is found so none repeats. */
async function freePorts(count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    while (ports.length < count) {
      const server = net.createServer();
      servers.push(server);
      const port = await new Promise<number>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => {
          const address = server.address();
          resolve(typeof address === 'object' && address ? address.port : 0);
        });
      });
      if (port !== 6379 && port !== 0) ports.push(port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  }
}

/** `sqs_redlock_messages_total` of one worker, by outcome; undefined if it does not answer. */
async function scrapeOutcomes(port: number): Promise<Record<string, number> | undefined> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(1_500) });
    if (!response.ok) return undefined;
    const counts: Record<string, number> = {};
    for (const match of (await response.text()).matchAll(
      /^sqs_redlock_messages_total\{outcome="([a-z_]+)"\} ([0-9.e+]+)$/gm,
    )) {
      counts[match[1] as string] = Number(match[2]);
    }
    return counts;
  } catch {
    return undefined;
  }
}

function sum(records: readonly (Record<string, number> | undefined)[]): Record<string, number> {
  const total: Record<string, number> = {};
  for (const record of records) {
    for (const [key, value] of Object.entries(record ?? {})) total[key] = (total[key] ?? 0) + value;
  }
  return total;
}

// ---- workers ----

class WorkerProcess {
  readonly index: number;
  readonly metricsPort: number;
  readonly logFile: string;
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** Its last successful scrape (a dead worker keeps what it had counted). */
  outcomes: Record<string, number> | undefined;

  constructor(index: number, metricsPort: number, logFile: string, env: Record<string, string>) {
    this.index = index;
    this.metricsPort = metricsPort;
    this.logFile = logFile;
    const fd = openSync(logFile, 'a');
    // process.execPath: the Node running the demo (24, which runs .ts), not whatever `node` is on PATH.
    this.child = spawn(process.execPath, ['src/cli.ts', 'run', 'demo/handler.ts'], {
      cwd: ROOT,
      env: { ...env, METRICS_PORT: String(metricsPort) },
      stdio: ['ignore', fd, fd],
    });
    closeSync(fd);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
      this.child.once('error', (error) => {
        this.exit = { code: null, signal: null };
        process.stderr.write(`worker ${index + 1}: could not start: ${error.message}\n`);
        resolve(this.exit);
      });
    });
  }

  get alive(): boolean {
    return this.exit === undefined;
  }

  /** Waits until /readyz answers 200: polling, with a Redis quorum. */
  async ready(timeoutMs: number): Promise<void> {
    const until = performance.now() + timeoutMs;
    while (performance.now() < until) {
      if (!this.alive) throw new Error(`worker ${this.index + 1} exited during startup\n${this.logTail()}`);
      if (interrupted) throw new Error(`interrupted by ${interrupted}`);
      try {
        const response = await fetch(`http://127.0.0.1:${this.metricsPort}/readyz`, {
          signal: AbortSignal.timeout(1_000),
        });
        if (response.status === 200) return;
      } catch {
        // Not listening yet.
      }
      await sleep(100);
    }
    throw new Error(`worker ${this.index + 1} not ready within ${timeoutMs} ms\n${this.logTail()}`);
  }

  async scrape(): Promise<void> {
    const outcomes = await scrapeOutcomes(this.metricsPort);
    if (outcomes) this.outcomes = outcomes;
  }

  /** SIGTERM, then waits; SIGKILL if it does not exit within `timeoutMs`. */
  async stop(timeoutMs: number): Promise<void> {
    if (!this.alive) return;
    this.child.kill('SIGTERM');
    const exited = await Promise.race([this.exited, sleep(timeoutMs).then(() => undefined)]);
    if (!exited) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }

  logTail(lines = 20): string {
    try {
      const text = readFileSync(this.logFile, 'utf8').trimEnd();
      return text ? text.split('\n').slice(-lines).join('\n') : '(empty log)';
    } catch {
      return '(no log)';
    }
  }
}

/** The inherited environment without anything the CLI reads, so the demo's settings rule. */
function baseEnv(cliVariables: readonly string[]): Record<string, string> {
  const ours = new Set([
    ...cliVariables,
    'AWS_ENDPOINT_URL',
    'AWS_PROFILE',
    'AWS_DEFAULT_REGION',
    'AWS_SESSION_TOKEN',
    'AWS_CONFIG_FILE',
    'AWS_SHARED_CREDENTIALS_FILE',
  ]);
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && !ours.has(key)) env[key] = value;
  }
  return env;
}

// ---- progress ----

interface ProgressState {
  processed: number;
  sent: number;
  elapsedMs: number;
  /** When every job was processed, if it was: the rate is frozen there. */
  allProcessedMs: number | undefined;
  outcomes: Record<string, number>;
}

interface Progress {
  update(state: ProgressState): void;
  /** A line above the bar (or in the log when not a terminal). */
  event(text: string): void;
  stop(): void;
}

function rate(state: ProgressState): number {
  const ms = state.allProcessedMs ?? state.elapsedMs;
  return ms > 0 ? state.processed / (ms / 1000) : 0;
}

function progress(): Progress {
  if (!process.stdout.isTTY) {
    // One line a second, and the last state at the end.
    let last = 0;
    let unprinted: ProgressState | undefined;
    const print = (state: ProgressState): void => {
      const o = state.outcomes;
      out(
        `[${secs(state.elapsedMs).padStart(7)}] processed ${fmt(state.processed).padStart(5)}/${fmt(JOBS)}` +
          ` | sent ${fmt(state.sent)} | ${fmt(rate(state))} msg/s | duplicates ${fmt(o.duplicate ?? 0)}` +
          ` | contended ${fmt(o.contended ?? 0)} | poison ${fmt(o.poison ?? 0)}`,
      );
    };
    return {
      update(state) {
        unprinted = state;
        if (state.elapsedMs - last < 1_000) return;
        last = state.elapsedMs;
        unprinted = undefined;
        print(state);
      },
      event: (text) => out(`  * ${text}`),
      stop() {
        if (unprinted) print(unprinted);
      },
    };
  }
  const bars = new cliProgress.MultiBar(
    {
      stream: process.stdout,
      format:
        ' {bar} {done}/{all} jobs | sent {sent} | {rate} msg/s | dup {duplicate} | contended {contended} | poison {poison} | {elapsed}',
      barsize: 20,
      hideCursor: true,
      clearOnComplete: false,
      stopOnComplete: false,
      autopadding: true,
    },
    cliProgress.Presets.shades_classic,
  );
  const payload = (state: ProgressState) => ({
    done: fmt(state.processed).padStart(fmt(JOBS).length),
    all: fmt(JOBS),
    sent: fmt(state.sent),
    rate: fmt(rate(state)).padStart(4),
    duplicate: fmt(state.outcomes.duplicate ?? 0),
    contended: fmt(state.outcomes.contended ?? 0),
    poison: fmt(state.outcomes.poison ?? 0),
    elapsed: secs(state.elapsedMs),
  });
  const bar = bars.create(
    JOBS,
    0,
    payload({ processed: 0, sent: 0, elapsedMs: 0, allProcessedMs: undefined, outcomes: {} }),
  );
  return {
    update: (state) => bar.update(Math.min(state.processed, JOBS), payload(state)),
    event: (text) => bars.log(`  * ${text}\n`),
    stop: () => bars.stop(),
  };
}

// ---- summary ----

function table(rows: readonly [string, string, string][]): string {
  const widths = [0, 1, 2].map((c) => Math.max(...rows.map((r) => r[c]?.length ?? 0)));
  const line = (l: string, m: string, r: string): string =>
    `  ${l}${widths.map((w) => '─'.repeat(w + 2)).join(m)}${r}`;
  const row = (r: readonly string[], header = false): string =>
    `  │ ${(r[0] ?? '').padEnd(widths[0] ?? 0)} │ ${header ? (r[1] ?? '').padEnd(widths[1] ?? 0) : (r[1] ?? '').padStart(widths[1] ?? 0)} │ ${(r[2] ?? '').padEnd(widths[2] ?? 0)} │`;
  const [head, ...body] = rows;
  return [
    line('┌', '┬', '┐'),
    row(head ?? ['', '', ''], true),
    line('├', '┼', '┤'),
    ...body.map((r) => row(r)),
    line('└', '┴', '┘'),
  ].join('\n');
}

// ---- main ----

async function main(): Promise<number> {
  const check = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (check.error || check.status !== 0) {
    process.stderr.write(`${INSTALL_HINT}\n`);
    return 1;
  }
  const redisVersion = /v=(\S+)/.exec(check.stdout)?.[1] ?? 'unknown version';

  // Imported once redis-server is known to be there (they load the AWS SDK, ioredis, fauxqs).
  const [{ startRedisNodes }, { startSqs }, { Ledger }, { CLI_VARIABLES }, { POISON_ATTRIBUTES }] =
    await Promise.all([
      import('../test/helpers/redis-nodes.ts'),
      import('../test/helpers/sqs.ts'),
      import('../test/helpers/ledger.ts'),
      import('../src/cli/env.ts'),
      import('../src/index.ts'),
    ]);

  const setupStarted = performance.now();
  out(
    `sqs-redlock-worker demo: ${fmt(JOBS)} jobs + ${POISON} poison messages, ${WORKERS} workers x ${POLLERS_PER_WORKER} pollers,`,
  );
  out(`a 3-node Redis quorum (redis-server ${redisVersion}), one node killed halfway.`);
  out();
  out('  starting fauxqs (SQS emulator), 4 redis-server nodes and 3 workers ...');

  const logDir = mkdtempSync(path.join(os.tmpdir(), 'sqs-redlock-demo-'));
  const workers: WorkerProcess[] = [];
  const killWorkersSync = (): void => {
    for (const w of workers) if (w.alive) w.child.kill('SIGKILL');
  };
  process.on('exit', killWorkersSync);

  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) process.exit(130); // a second Ctrl-C: give up at once (the exit hooks kill the rest)
    interrupted = signal;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const sqsEnv = await startSqs();
  const quorum = await startRedisNodes(3).catch(async (error: unknown) => {
    await sqsEnv.stop();
    throw error;
  });
  const ledgerNode = await startRedisNodes(1).catch(async (error: unknown) => {
    await Promise.all([quorum.stop(), sqsEnv.stop()]);
    throw error;
  });
  let ledgerClient: Redis | undefined;

  try {
    const { queueUrl, queueName, dlqName } = sqsEnv.createQueue('demo-jobs', {
      visibilityTimeoutSec: VISIBILITY_TIMEOUT_SEC,
      maxReceiveCount: MAX_RECEIVE_COUNT,
    });
    const ledgerUrl = ledgerNode.nodes[0]?.url as string;
    ledgerClient = ledgerNode.nodes[0]?.client() as Redis;
    const ledger = new Ledger(ledgerClient, LEDGER_PREFIX);

    const env = {
      ...baseEnv(CLI_VARIABLES.map((v) => v.name)),
      SQS_QUEUE_URL: queueUrl,
      AWS_ENDPOINT_URL_SQS: sqsEnv.endpoint,
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'demo',
      AWS_SECRET_ACCESS_KEY: 'demo',
      REDIS_URLS: quorum.nodes.map((n) => n.url).join(','),
      LOCK_TTL_MS: String(LOCK_TTL_MS),
      BATCH_SIZE: '10',
      CONCURRENCY: String(POLLERS_PER_WORKER),
      VISIBILITY_TIMEOUT_SEC: String(VISIBILITY_TIMEOUT_SEC),
      EXTEND_VISIBILITY: 'false',
      SHUTDOWN_TIMEOUT_MS: '5000',
      LOG_LEVEL: 'warn',
      LEDGER_URL: ledgerUrl,
      LEDGER_PREFIX,
    };
    const ports = await freePorts(WORKERS);
    for (let i = 0; i < WORKERS; i++) {
      workers.push(new WorkerProcess(i, ports[i] as number, path.join(logDir, `worker-${i + 1}.log`), env));
    }
    await Promise.all(workers.map((w) => w.ready(30_000)));
    const setupMs = performance.now() - setupStarted;
    out(
      `  ready in ${secs(setupMs)}: queue ${queueName} (+ ${dlqName}); worker logs (kept if the run fails):`,
    );
    out(`  ${logDir}`);
    out();

    // ---- run ----
    const messages = buildMessages();
    /** The ids of the jobs sent so far (all of them, unless the run was cut short). */
    const ids: string[] = [];
    const view = progress();
    const started = performance.now();
    let sent = 0;
    let produced = false;
    let produceError: unknown;
    const producer = (async () => {
      for (let i = 0; i < messages.length && !interrupted; i += 10) {
        const wait = started + (i / PRODUCE_RATE) * 1_000 - performance.now();
        if (wait > 0) await sleep(wait);
        const chunk = messages.slice(i, i + 10);
        const result = await sqsEnv.sqs.send(
          new SendMessageBatchCommand({
            QueueUrl: queueUrl,
            Entries: chunk.map((m, j) => ({ Id: `m${j}`, MessageBody: m.body })),
          }),
        );
        if (result.Failed?.length)
          throw new Error(`SendMessageBatch failed: ${JSON.stringify(result.Failed)}`);
        sent += chunk.length;
        for (const m of chunk) if (m.id) ids.push(m.id);
      }
      produced = true;
    })().catch((error: unknown) => {
      produceError = error;
    });

    let killed: { label: string; at: number; atMs: number } | undefined;
    let allProcessedMs: number | undefined;
    let timedOut = false;
    const crashed = new Set<WorkerProcess>();
    let lastScrape = 0;
    let outcomes: Record<string, number> = {};
    for (;;) {
      const elapsedMs = performance.now() - started;
      const processed = await ledgerClient.hlen(`${LEDGER_PREFIX}:effects`);
      if (!killed && processed >= JOBS / 2) {
        const victim = quorum.nodes[2];
        if (victim) {
          await victim.kill();
          killed = { label: `127.0.0.1:${victim.port}`, at: processed, atMs: elapsedMs };
          view.event(
            `${secs(elapsedMs)}: killed Redis node 3 of 3 (${killed.label}, SIGKILL) at ${fmt(processed)} processed`,
          );
        }
      }
      if (processed >= JOBS && allProcessedMs === undefined) allProcessedMs = elapsedMs;
      for (const w of workers) {
        if (!w.alive && !crashed.has(w)) {
          crashed.add(w);
          view.event(
            `worker ${w.index + 1} exited unexpectedly (${JSON.stringify(w.exit)}); log: ${w.logFile}`,
          );
        }
      }
      if (elapsedMs - lastScrape >= 1_000) {
        lastScrape = elapsedMs;
        await Promise.all(workers.filter((w) => w.alive).map((w) => w.scrape()));
        outcomes = sum(workers.map((w) => w.outcomes));
      }
      view.update({ processed, sent, elapsedMs, allProcessedMs, outcomes });
      if (produceError || interrupted) break;
      if (produced && processed >= JOBS && sqsEnv.counts(queueName).total === 0) break;
      if (elapsedMs > TIMEOUT_MS) {
        timedOut = true;
        break;
      }
      await sleep(200);
    }
    const finishedMs = performance.now() - started;
    await producer;
    // The last batch's events are emitted right after its deletes: let them land, then count.
    await sleep(500);
    await Promise.all(workers.filter((w) => w.alive).map((w) => w.scrape()));
    outcomes = sum(workers.map((w) => w.outcomes));
    view.update({
      processed: await ledgerClient.hlen(`${LEDGER_PREFIX}:effects`),
      sent,
      elapsedMs: finishedMs,
      allProcessedMs,
      outcomes,
    });
    view.stop();
    if (produceError) process.stderr.write(`producer failed: ${String(produceError)}\n`);

    // ---- what happened ----
    const report = await ledger.report(ids);
    const effects = await ledgerClient.hgetall(`${LEDGER_PREFIX}:effects`);
    const twiceIds = ids.filter((id) => Number(effects[id] ?? 0) > 1);
    const lostIds = ids.filter((id) => Number(effects[id] ?? 0) === 0);
    const idSet = new Set(ids);
    const dlq = sqsEnv.server.inspectQueue(dlqName as string);
    const dlqMessages = dlq
      ? [...dlq.messages.ready, ...dlq.messages.delayed, ...dlq.messages.inflight.map((e) => e.message)]
      : [];
    const isJob = (body: string): boolean => {
      try {
        const id = (JSON.parse(body) as { id?: unknown } | null)?.id;
        return typeof id === 'string' && idSet.has(id);
      } catch {
        return false;
      }
    };
    const validInDlq = dlqMessages.filter((m) => isJob(m.body)).length;
    const poisonCopies = dlqMessages.filter((m) => !isJob(m.body));
    // Distinct poison messages: the worker names the original in an attribute of each copy.
    const poisonInDlq = new Set(
      poisonCopies.map(
        (m) => m.messageAttributes[POISON_ATTRIBUTES.sourceMessageId]?.StringValue ?? m.messageId,
      ),
    ).size;
    const left = sqsEnv.counts(queueName);
    const processedMs = allProcessedMs ?? finishedMs;
    const msgPerSec = report.applied / (processedMs / 1000);

    // ---- shut down ----
    await Promise.all(workers.map((w) => w.stop(15_000)));
    const unclean = workers.filter((w) => w.exit?.code !== 0);

    // ---- summary ----
    const o = outcomes;
    const rows: [string, string, string][] = [
      ['', 'count', ''],
      [
        'sent',
        fmt(sent),
        `${fmt(ids.length)} jobs + ${fmt(sent - ids.length)} poison messages${
          sent < messages.length ? ` (of ${fmt(messages.length)} planned)` : ''
        }`,
      ],
      [
        'processed',
        fmt(o.processed ?? 0),
        `handler ran and succeeded under the lock (ledger: ${fmt(report.applied)} of ${fmt(ids.length)} jobs applied)`,
      ],
      [
        'duplicates suppressed',
        fmt(o.duplicate ?? 0),
        'delivered again after completion: acked, handler not run',
      ],
      [
        'contended',
        fmt(o.contended ?? 0),
        'delivered again while the first delivery still ran (lock held): put back, not run',
      ],
      [
        'poison dead-lettered',
        fmt(poisonInDlq),
        `malformed JSON or no id: moved to the DLQ, handler not run${
          poisonCopies.length > poisonInDlq ? ` (${fmt(poisonCopies.length)} copies in the DLQ)` : ''
        }`,
      ],
    ];
    const extra: [string, string][] = [
      ['quorum_unavailable', 'no Redis quorum: put back'],
      ['failed', 'handler threw: retried with backoff'],
      ['lock_lost', 'lock lost while running: retried'],
      ['released', 'released at shutdown'],
    ];
    for (const [outcome, meaning] of extra) {
      if ((o[outcome] ?? 0) > 0) rows.push([outcome.replace('_', ' '), fmt(o[outcome] ?? 0), meaning]);
    }
    if (validInDlq > 0)
      rows.push(['jobs in the DLQ', fmt(validInDlq), `moved by SQS after ${MAX_RECEIVE_COUNT} receives`]);
    if (report.staleRejected > 0)
      rows.push([
        'stale writes rejected',
        fmt(report.staleRejected),
        'older fencing token, refused by the ledger',
      ]);
    rows.push(
      ['lost', fmt(report.lost), 'jobs sent but never applied'],
      ['processed twice', fmt(report.appliedTwice), 'jobs whose side effect was applied more than once'],
      [
        'ran concurrently',
        fmt(report.concurrentRuns),
        'handler runs that overlapped another run of the same job',
      ],
      ['msg/s', fmt(msgPerSec), `${fmt(report.applied)} jobs processed in ${secs(processedMs)}`],
    );

    out();
    out(table(rows));
    out();
    out(
      killed
        ? `  Redis node ${killed.label} was killed at ${fmt(killed.at)} processed (${secs(killed.atMs)}); the other two kept the quorum.`
        : '  No Redis node was killed (the run ended before half of the jobs were processed).',
    );
    out(
      allProcessedMs === undefined
        ? `  Setup ${secs(setupMs)}; stopped after ${secs(finishedMs)} with ${fmt(JOBS - report.applied)} jobs not processed.`
        : `  Setup ${secs(setupMs)}; all jobs processed in ${secs(allProcessedMs)}, queue drained in ${secs(finishedMs)}.`,
    );

    const problems: string[] = [];
    if (interrupted) problems.push(`interrupted by ${interrupted}`);
    if (timedOut)
      problems.push(
        `timed out after ${secs(TIMEOUT_MS)}: ${fmt(left.total)} messages still in the queue (${left.ready} ready, ${left.inflight} in flight, ${left.delayed} delayed)`,
      );
    if (produceError) problems.push(`the producer failed: ${String(produceError)}`);
    if (report.lost > 0) {
      const what = interrupted || timedOut ? 'jobs sent but not processed' : 'jobs lost';
      problems.push(`${fmt(report.lost)} ${what}, e.g. ${lostIds.slice(0, 10).join(', ')}`);
    }
    if (report.appliedTwice > 0)
      problems.push(`${fmt(report.appliedTwice)} jobs processed twice: ${twiceIds.slice(0, 10).join(', ')}`);
    for (const w of unclean) {
      problems.push(
        `worker ${w.index + 1} exited with ${w.exit?.code ?? w.exit?.signal}${crashed.has(w) ? ' during the run' : ' at shutdown'} (log: ${w.logFile})`,
      );
    }
    if (poisonCopies.length > poisonInDlq) {
      out(
        `  ${fmt(poisonCopies.length - poisonInDlq)} poison message(s) reached the DLQ twice: delivered again (2 s visibility, not extended)`,
      );
      out('  while the batch they came in still waited for a slow job, before that batch deleted them.');
    }
    out();
    if (problems.length === 0) {
      out('  OK: nothing lost, nothing processed twice.');
      rmSync(logDir, { recursive: true, force: true });
      return 0;
    }
    out('  FAILED:');
    for (const problem of problems) out(`    - ${problem}`);
    out(`  Workers' logs kept in ${logDir}`);
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await Promise.all(workers.map((w) => w.stop(5_000)));
    ledgerClient?.disconnect();
    await Promise.all([quorum.stop(), ledgerNode.stop(), sqsEnv.stop()]);
  }
}

const code = await main().catch((error: unknown) => {
  process.stderr.write(
    `demo failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  return 1;
});
process.exitCode = code;
// Everything is stopped by now; a stray handle must not keep the demo hanging.
setTimeout(() => process.exit(code), 2_000).unref();
