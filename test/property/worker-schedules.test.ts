/**
 * Property: under any schedule of SQS faults, Redis faults and worker restarts (see worker-schedule.ts),
 * Workers with SQS in the loop lose no message, accept no effect twice unless they said they might,
 * never run a message twice at once, dead-letter only poison, and keep each FIFO group's order.
 *
 * A short run is part of `npm test`; `npm run fuzz -- --suite worker --runs N` runs N schedules (see
 * fuzz/run.ts). A failing schedule shrinks and prints its seed and path: replay it with
 * `npm run fuzz -- --suite worker --seed=S --path=P`. Environment: see run-property.ts.
 */

import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type FaultProxy, startFaultProxies } from '../helpers/fault-proxy.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';
import { useSqs } from '../helpers/sqs.ts';
import {
  describeTally,
  propertySettings,
  propertyTimeoutMs,
  runProperty,
  type Tally,
} from './run-property.ts';
import {
  checkWorkerRun,
  describeRun,
  NODES,
  runWorkerPlan,
  tallyRun,
  type WorkerEnvironment,
  type WorkerPlan,
  workerPlanArbitrary,
} from './worker-schedule.ts';

const SETTINGS = propertySettings(4);
/** A schedule takes about 2 to 6 s; shrinking reruns it many times. */
const PER_RUN_MS = 10_000;

describe('Workers with SQS in the loop under random fault schedules', () => {
  // Nodes keep their data across a kill (AOF, fsync always): a node that comes back empty may grant
  // a lock another holder still has, as with every Redlock (README, Guarantees).
  const redis = useRedisNodes(NODES, { appendonly: true });
  const ledgerNode = useRedisNodes(1);
  const sqs = useSqs();
  let proxies: FaultProxy[] = [];
  let ledgerClient: Redis;
  let runs = 0;

  beforeAll(async () => {
    proxies = await startFaultProxies(redis.nodes.map((n) => n.port));
    ledgerClient = ledgerNode.clients()[0] as Redis;
  });
  afterEach(async () => {
    for (const proxy of proxies) proxy.heal();
    for (const node of redis.nodes) {
      if (node.isPaused) node.resume();
      if (!node.isRunning) await node.restart();
    }
  });
  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.close()));
  });

  /** Runs one plan and throws, with the whole trail, if what it left breaks a rule. */
  async function check(plan: WorkerPlan): Promise<Tally> {
    const env: WorkerEnvironment = { redis, proxies, sqs, ledgerClient };
    const run = await runWorkerPlan(env, plan, `wrun${runs++}`);
    const violations = checkWorkerRun(run);
    const tally = tallyRun(run);
    if (SETTINGS.verbose) process.stderr.write(`${describeTally(tally)}, violations ${violations.length}\n`);
    if (violations.length > 0) {
      throw new Error(
        `${violations.length} violation(s):\n${violations.map((v) => `  [${v.rule}] ${v.detail}`).join('\n')}\n` +
          `run:\n${describeRun(run)}`,
      );
    }
    return tally;
  }

  it('a fixed schedule: every fault kind once, and the checker sees the outcome', async () => {
    const plan: WorkerPlan = {
      fifo: true,
      visibilityTimeoutSec: 1,
      extendVisibility: true,
      lockTtlMs: 1_000,
      workers: [
        { viaProxies: true, concurrency: 2, batchSize: 10 },
        { viaProxies: false, concurrency: 1, batchSize: 3 },
      ],
      messages: [
        { kind: 'plain', workMs: 0, group: 0, wave: 0 },
        { kind: 'fail-first', workMs: 0, group: 0, wave: 0 },
        { kind: 'slow', workMs: 400, group: 1, wave: 0 },
        { kind: 'poison', workMs: 0, group: 1, wave: 0 },
        { kind: 'plain', workMs: 0, group: 1, wave: 0 },
        { kind: 'plain', workMs: 0, group: 2, wave: 3 },
      ],
      steps: [
        {
          kind: 'sqs',
          worker: 0,
          command: 'DeleteMessageBatch',
          mode: 'hang',
          delayMs: 0,
          durationMs: 600,
          gapMs: 50,
        },
        {
          kind: 'sqs',
          worker: 1,
          command: 'SendMessage',
          mode: 'fail',
          delayMs: 0,
          durationMs: 600,
          gapMs: 50,
        },
        { kind: 'proxy', node: 0, fault: 'blackhole', delayMs: 0, durationMs: 500, gapMs: 100 },
        { kind: 'node', nodes: [2], fault: 'kill', durationMs: 400, gapMs: 100 },
        { kind: 'restart', worker: 1, timeoutMs: 100, downMs: 200, gapMs: 100 },
      ],
    };
    const run = await runWorkerPlan({ redis, proxies, sqs, ledgerClient }, plan, `wrun${runs++}`);
    expect(checkWorkerRun(run), describeRun(run)).toEqual([]);
    expect(run.report).toMatchObject({ sent: 5, applied: 5, lost: 0, concurrentRuns: 0 });
    expect(run.deadLettered).toHaveLength(1);
    expect(run.injected.size).toBeGreaterThan(0);
    // The checker is not blind: the same run with one effect forgotten, or FIFO order swapped, fails.
    const forgotten = { ...run, applications: run.applications.slice(1) };
    expect(checkWorkerRun(forgotten).map((v) => v.rule)).toContain('lost');
    const [first, second, ...rest] = run.applications.filter(
      (a) => a.id.endsWith('-m0') || a.id.endsWith('-m1'),
    );
    if (first && second) {
      const swapped = { ...run, applications: [second, first, ...rest] };
      expect(checkWorkerRun(swapped).map((v) => v.rule)).toContain('fifo-order');
    }
  });

  it(
    `keeps its promises over ${SETTINGS.runs} random schedules of SQS faults, Redis faults and restarts`,
    () => runProperty('worker', workerPlanArbitrary, check, SETTINGS, PER_RUN_MS),
    propertyTimeoutMs(SETTINGS, PER_RUN_MS),
  );
});
