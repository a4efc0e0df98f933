/**
 * "The quorum answers" means "the quorum accepts writes": nodes that answer PING but refuse writes
 * (NOREPLICAS through min-replicas-to-write, READONLY as a replica, OOM with noeviction) count as down,
 * for the Worker's pause and for /readyz; and /readyz fails when receives fail or hang.
 */
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { type MetricsServer, startMetricsServer } from '../../src/observability/http.ts';
import { jobs, LedgerHandler } from '../helpers/handlers.ts';
import { eventually, redlockOver, sleep } from '../helpers/lock.ts';
import { sendMessages } from '../helpers/sqs.ts';
import { faultySqsClient, startBlackHole } from '../helpers/sqs-faults.ts';
import { useWorkerFixture } from '../helpers/worker.ts';

describe('Write quorum', () => {
  const { redis, env, workers, newLedger } = useWorkerFixture();
  const servers: MetricsServer[] = [];
  const cleanups: (() => Promise<void> | void)[] = [];

  const admins = new Map<number, ReturnType<NonNullable<(typeof redis.nodes)[number]>['client']>>();
  /** An admin connection to node i (its commands are not the engine's). */
  const admin = (i: number) => {
    const node = redis.nodes[i];
    if (!node) throw new Error(`no node ${i}`);
    let client = admins.get(i);
    if (!client) {
      client = node.client();
      admins.set(i, client);
    }
    return client;
  };
  /** Makes node i refuse writes with NOREPLICAS (it has no replica), while it still answers PING. */
  const refuseWrites = async (...which: number[]) => {
    for (const i of which) await admin(i).config('SET', 'min-replicas-to-write', '1');
  };
  const acceptWrites = async () => {
    for (let i = 0; i < redis.nodes.length; i++) {
      const client = admin(i);
      await client.config('SET', 'min-replicas-to-write', '0');
      await client.config('SET', 'maxmemory', '0');
      await client.call('REPLICAOF', 'NO', 'ONE');
    }
  };

  afterEach(async () => {
    await acceptWrites();
    for (const cleanup of cleanups.splice(0)) await cleanup();
    await Promise.all(servers.splice(0).map((s) => s.close()));
    await workers.stopAll();
  });

  async function serve(worker: Parameters<typeof startMetricsServer>[0]['worker'], redlock: never) {
    const server = await startMetricsServer({
      port: 0,
      host: '127.0.0.1',
      registry: new Registry(),
      worker,
      redlock,
    });
    servers.push(server);
    return async () => {
      const res = await fetch(`http://127.0.0.1:${server.port}/readyz`);
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
  }

  it('Redlock.quorumStatus counts a node that answers PING but refuses writes (NOREPLICAS, READONLY, OOM) as down', async () => {
    const { redlock } = redlockOver(redis);
    cleanups.push(() => redlock.quit());
    expect(await redlock.quorumStatus()).toMatchObject({ available: true, down: [] });

    await refuseWrites(0);
    await admin(1).call('REPLICAOF', '127.0.0.1', String(redis.nodes[2]?.port));
    await admin(2).config('SET', 'maxmemory-policy', 'noeviction');
    await admin(2).config('SET', 'maxmemory', '1');
    for (let i = 0; i < 3; i++) expect(await admin(i).ping()).toBe('PONG');

    const status = await redlock.quorumStatus();
    const labels = redlock.nodes.map((n) => n.label);
    expect(status.available).toBe(false);
    expect(status.up).toEqual([]);
    expect(status.down).toEqual(labels);
    expect(status.errors?.[labels[0] as string]).toMatch(/NOREPLICAS/);
    expect(status.errors?.[labels[1] as string]).toMatch(/READONLY/);
    expect(status.errors?.[labels[2] as string]).toMatch(/OOM/);

    await acceptWrites();
    expect(await redlock.quorumStatus()).toMatchObject({ available: true, up: labels, down: [] });
  });

  it('two of three nodes refuse writes: polling stays paused, no receive is burnt, nothing reaches the DLQ; healed, every message runs once', async () => {
    const { queueUrl, queueName, dlqName } = env.createQueue('write-refused', { maxReceiveCount: 2 });
    const ledger = newLedger('write-refused');
    const { events } = await workers.start(new LedgerHandler(ledger), queueUrl, {
      quorumBackoffSec: 1,
      quorumProbeIntervalMs: 100,
    });
    await refuseWrites(0, 1);
    const sent = jobs(5, 'wr');
    await sendMessages(env.sqs, queueUrl, sent);

    await eventually(async () => events.polling_paused.length > 0, 10_000);
    // A PING probe resumes within 100 ms, and each resumed receive brings a message closer to the DLQ.
    await sleep(3_000);
    expect(events.polling_resumed).toHaveLength(0);
    expect(env.counts(dlqName as string).total).toBe(0);
    expect((await ledger.report(sent.map((j) => j.id))).applied).toBe(0);

    await acceptWrites();
    await eventually(async () => events.polling_resumed.length > 0, 10_000);
    await eventually(async () => env.counts(queueName).total === 0, 20_000);
    expect(env.counts(dlqName as string).total).toBe(0);
    expect(await ledger.report(sent.map((j) => j.id))).toMatchObject({
      applied: 5,
      lost: 0,
      appliedTwice: 0,
      concurrentRuns: 0,
    });
  });

  it('/readyz reports the write quorum from one cached probe round: 20 requests cost no PING and at most 2 probes per node', async () => {
    const { queueUrl } = env.createQueue('readyz-writes');
    const { worker, redlock } = await workers.start(new LedgerHandler(newLedger('readyz-writes')), queueUrl);
    const readyz = await serve(worker, redlock as never);
    await Promise.all(redis.nodes.map((n) => n.resetStats()));

    const answers = await Promise.all(Array.from({ length: 20 }, () => readyz()));
    expect(answers.map((a) => a.status)).toEqual(new Array(20).fill(200));
    for (const node of redis.nodes) {
      const stats = await node.commandStats();
      expect(stats.ping ?? 0).toBe(0);
      const probes = (stats.evalsha ?? 0) + (stats.eval ?? 0);
      expect(probes).toBeGreaterThanOrEqual(1);
      expect(probes).toBeLessThanOrEqual(2);
    }

    await refuseWrites(0, 1);
    const refused = await eventually(async () => {
      const answer = await readyz();
      return answer.status === 503 && answer;
    }, 5_000);
    const labels = redlock.nodes.map((n) => n.label);
    expect(refused.body).toMatchObject({
      ready: false,
      reason: 'no Redis quorum',
      state: 'running',
      redis: { up: [labels[2]], down: [labels[0], labels[1]] },
    });
    const errors = (refused.body.redis as { errors: Record<string, string> }).errors;
    expect(errors[labels[0] as string]).toMatch(/NOREPLICAS/);

    await acceptWrites();
    await eventually(async () => (await readyz()).status === 200, 5_000);
  });

  it('/readyz fails while ReceiveMessage fails (AccessDenied), though the quorum is up', async () => {
    const { queueUrl } = env.createQueue('readyz-denied');
    let deny = false;
    const sqs = faultySqsClient(env, 1, {});
    sqs.middlewareStack.add(
      (next, context) => async (args) => {
        if (deny && context.commandName === 'ReceiveMessageCommand') {
          throw Object.assign(new Error('User is not authorized to perform: sqs:receivemessage'), {
            name: 'AccessDenied',
            Code: 'AccessDenied',
            $fault: 'client',
            $metadata: { httpStatusCode: 403 },
          });
        }
        return next(args);
      },
      { step: 'initialize', name: 'testAccessDenied' },
    );
    cleanups.push(() => sqs.destroy());
    const { worker, redlock } = await workers.start(new LedgerHandler(newLedger('readyz-denied')), queueUrl, {
      sqs,
    });
    const readyz = await serve(worker, redlock as never);
    expect((await readyz()).status).toBe(200);

    deny = true;
    const denied = await eventually(async () => {
      const answer = await readyz();
      return answer.status === 503 && answer;
    }, 5_000);
    expect(denied.body).toMatchObject({ ready: false, state: 'running' });
    expect((denied.body.polling as { failingReceives: number }).failingReceives).toBeGreaterThan(0);
    expect(String(denied.body.reason)).toMatch(/ReceiveMessage fails: .*not authorized/);
  });

  it('/readyz fails while a poller is stuck in a ReceiveMessage that never answers, and recovers after it', async () => {
    const { queueUrl } = env.createQueue('readyz-stuck');
    const blackHole = await startBlackHole();
    cleanups.push(() => blackHole.close());
    let hang = false;
    const sqs = faultySqsClient(env, blackHole.port, {
      hang: (command) => hang && command === 'ReceiveMessageCommand',
    });
    cleanups.push(() => sqs.destroy());
    const { worker, redlock } = await workers.start(new LedgerHandler(newLedger('readyz-stuck')), queueUrl, {
      sqs,
      waitTimeSeconds: 1,
    });
    const readyz = await serve(worker, redlock as never);
    expect((await readyz()).status).toBe(200);

    hang = true;
    // Stuck once open for waitTimeSeconds (1 s) plus the 3 s margin.
    const stuck = await eventually(async () => {
      const answer = await readyz();
      return answer.status === 503 && answer;
    }, 8_000);
    expect(stuck.body).toMatchObject({ ready: false, state: 'running' });
    expect((stuck.body.polling as { stuckPollers: number }).stuckPollers).toBeGreaterThan(0);

    // The black hole drops the connection: the receive fails, the next one answers.
    hang = false;
    await blackHole.close();
    await eventually(async () => (await readyz()).status === 200, 5_000);
  });
});
