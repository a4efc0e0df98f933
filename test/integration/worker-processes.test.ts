/**
 * Workers as real OS processes (test/fixtures/worker-process.ts) against fauxqs running in this
 * process, real redis-server quorum nodes, and a Ledger on its own redis node that every process
 * writes to: what one process cannot see about another, the ledger records.
 */
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';
import { beforeAll, describe, expect, it } from 'vitest';
import { jobs } from '../helpers/handlers.ts';
import { Ledger } from '../helpers/ledger.ts';
import { eventually, sleep } from '../helpers/lock.ts';
import { NodeProcess, useProcesses } from '../helpers/processes.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';
import { sendMessages, useSqs } from '../helpers/sqs.ts';

const FIXTURE = fileURLToPath(new URL('../fixtures/worker-process.ts', import.meta.url));

/** One JSON line the fixture printed on stdout. */
type Line = { event?: string } & Record<string, unknown>;

/** A worker process (test/fixtures/worker-process.ts), its JSON lines parsed. */
class WorkerProcess extends NodeProcess<Line> {
  constructor(name: string, env: Record<string, string>) {
    super(name, [FIXTURE], { ...process.env, ...env }, { waitForMs: 20_000 });
  }

  summary(): Line | undefined {
    return this.lines.find((l) => l.event === 'summary');
  }
}

describe('Worker processes', () => {
  const redis = useRedisNodes(3);
  const ledgerNode = useRedisNodes(1);
  const env = useSqs();
  let ledgerClient: Redis;
  const spawned = useProcesses<WorkerProcess>();

  beforeAll(() => {
    ledgerClient = ledgerNode.clients()[0] as Redis;
  });

  function startProcess(name: string, queueUrl: string, prefix: string, extra: Record<string, string> = {}) {
    const p = new WorkerProcess(name, {
      REDIS_URLS: redis.nodes.map((n) => n.url).join(','),
      LEDGER_URL: ledgerNode.nodes[0]?.url ?? '',
      LEDGER_PREFIX: prefix,
      SQS_QUEUE_URL: queueUrl,
      AWS_ENDPOINT_URL_SQS: env.endpoint,
      ...extra,
    });
    spawned.push(p);
    return p;
  }

  it('two worker processes on one queue, 1,000 messages: none lost, none run concurrently twice', async () => {
    const prefix = 'procs';
    const { queueUrl, queueName } = env.createQueue('procs', { visibilityTimeoutSec: 5 });
    const ledger = new Ledger(ledgerClient, prefix);
    const settings = {
      LOCK_TTL_MS: '3000',
      VISIBILITY_TIMEOUT_SEC: '5',
      BATCH_SIZE: '10',
      CONCURRENCY: '2',
    };
    const workers = [
      startProcess('A', queueUrl, prefix, settings),
      startProcess('B', queueUrl, prefix, settings),
    ];
    // Both polling before anything is sent, so neither gets a head start on the backlog.
    await Promise.all(workers.map((w) => w.waitFor((l) => l.event === 'ready')));

    const sent = jobs(1_000, 'p', { workMs: 10 });
    const ids = sent.map((j) => j.id);
    await sendMessages(env.sqs, queueUrl, sent);

    await eventually(
      async () => env.counts(queueName).total === 0 && (await ledger.report(ids)).applied === 1_000,
      45_000,
    );
    const exits = await Promise.all(workers.map((w) => w.terminate()));
    expect(exits).toEqual([
      { code: 0, signal: null },
      { code: 0, signal: null },
    ]);

    const report = await ledger.report(ids);
    expect(report).toMatchObject({
      sent: 1_000,
      applied: 1_000,
      lost: 0,
      appliedTwice: 0,
      concurrentRuns: 0,
      runsStarted: 1_000,
      staleRejected: 0,
    });
    const summaries = workers.map((w) => w.summary());
    const processed = summaries.map((s) => Number(s?.processed));
    // Both did a share of the work, and between them every message exactly once.
    expect(processed[0]).toBeGreaterThan(0);
    expect(processed[1]).toBeGreaterThan(0);
    expect((processed[0] ?? 0) + (processed[1] ?? 0)).toBe(1_000);
    for (const s of summaries) {
      expect(s?.counts).toMatchObject({ lock_lost: 0, handler_error: 0, poison_message: 0 });
      // Neither while running nor at shutdown (stop() aborts idle long polls on purpose: not an error).
      expect(s?.sqsErrors).toEqual([]);
    }
  });

  it('a worker process killed with SIGKILL mid-handle: another worker processes the message once the visibility and the lock expire', async () => {
    const prefix = 'killed';
    const { queueUrl, queueName } = env.createQueue('killed', { visibilityTimeoutSec: 3 });
    const ledger = new Ledger(ledgerClient, prefix);
    // Lock TTL 2 s, visibility 3 s: heartbeat every ~666 ms while alive; both lapse within 3 s of a crash.
    const settings = { LOCK_TTL_MS: '2000', VISIBILITY_TIMEOUT_SEC: '3', BATCH_SIZE: '1', CONCURRENCY: '1' };
    const a = startProcess('A', queueUrl, prefix, settings);
    await a.waitFor((l) => l.event === 'ready');
    const [job] = jobs(1, 'k', { workMs: 60_000 });
    const id = (job as { id: string }).id;
    await sendMessages(env.sqs, queueUrl, [job as { body: string }]);
    const runA = await a.waitFor((l) => l.event === 'started' && l.id === id);
    await eventually(async () => Number(await ledgerClient.hget(`${prefix}:starts`, id)) === 1);
    const startedA = performance.now();

    // B polls the same queue, and works fast: its run of the same job must not take 60 s.
    const b = startProcess('B', queueUrl, prefix, { ...settings, WORK_MS_OVERRIDE: '10' });
    await b.waitFor((l) => l.event === 'ready');
    // Let A's run outlast the initial lock TTL and visibility: A's heartbeat keeps both, so B (polling
    // all along) must not have started it.
    await sleep(Math.max(0, 3_500 - (performance.now() - startedA)));
    expect(b.lines.some((l) => l.event === 'started')).toBe(false);
    expect(Number(await ledgerClient.hget(`${prefix}:starts`, id))).toBe(1);

    a.child.kill('SIGKILL');
    expect(await a.exited).toEqual({ code: null, signal: 'SIGKILL' });
    // A's Ledger.end never ran, so its run would stay "running" forever and B's begin would count an
    // overlap with a dead process. Record the end A could not: done only after A is confirmed dead, it
    // can never hide a real overlap (a B run begun while A lived has already been counted), and a
    // B run beginning before this line is impossible: A's lock and visibility outlive it by seconds.
    await ledgerClient.hincrby(`${prefix}:running`, id, -1);

    const runB = await b.waitFor((l) => l.event === 'started' && l.id === id, 15_000);
    await eventually(async () => env.counts(queueName).total === 0, 15_000);
    const exitB = await b.terminate();
    expect(exitB).toEqual({ code: 0, signal: null });

    // Exactly one effect, written under B's token, which fences off A's: strictly greater.
    const tokenA = Number(runA.fencingToken);
    const tokenB = Number(runB.fencingToken);
    expect(tokenA).toBeGreaterThan(0);
    expect(tokenB).toBeGreaterThan(tokenA);
    expect(Number(await ledgerClient.hget(`${prefix}:tokens`, id))).toBe(tokenB);
    expect(runB.receiveCount).toBeGreaterThanOrEqual(2);
    expect(await ledger.report([id])).toMatchObject({
      applied: 1,
      lost: 0,
      appliedTwice: 0,
      concurrentRuns: 0,
      runsStarted: 2,
      staleRejected: 0,
    });
    expect(b.summary()).toMatchObject({ processed: 1 });
    expect(b.lines.filter((l) => l.event === 'started')).toHaveLength(1);
  });
});
