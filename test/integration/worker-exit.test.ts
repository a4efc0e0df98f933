import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sleep } from '../helpers/lock.ts';
import { NodeProcess, ROOT } from '../helpers/processes.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';
import { sendMessages, useSqs } from '../helpers/sqs.ts';

/**
 * A worker process that stops (stop() then redlock.quit()) once told, and must then exit by itself:
 * nothing of the library may keep the event loop alive after its work is done.
 */
const CHILD = `
import { createRequire } from 'node:module';
const require = createRequire(${JSON.stringify(`${ROOT}package.json`)});
const { SQSClient } = require('@aws-sdk/client-sqs');
const { Redis } = require('ioredis');
const { Worker, Redlock, BaseHandler, createLogger } = await import(${JSON.stringify(`${ROOT}src/index.ts`)});
const emit = (line) => process.stdout.write(JSON.stringify(line) + '\\n');
const scenario = process.env.SCENARIO;
class Handler extends BaseHandler {
  hydrate(m) { return JSON.parse(m.Body); }
  async handle(job, ctx) {
    emit({ event: 'started' });
    // 'stubborn': ignores its signal for 2 s; otherwise honours it.
    await new Promise((resolve) => {
      const t = setTimeout(resolve, scenario === 'stubborn' ? 2000 : 30000);
      if (scenario !== 'stubborn') ctx.signal.addEventListener('abort', () => { clearTimeout(t); resolve(); });
    });
    emit({ event: 'handler_done' });
    if (ctx.signal.aborted && scenario !== 'stubborn') throw ctx.signal.reason;
  }
}
const clients = process.env.REDIS_URLS.split(',').map((u) => {
  const c = new Redis(u, { maxRetriesPerRequest: 1, retryStrategy: () => 50 });
  c.on('error', () => {});
  return c;
});
const redlock = new Redlock(clients, { ttlMs: 3000, commandTimeoutMs: 100, logger: createLogger({ silent: true }) });
const sqs = new SQSClient({ endpoint: process.env.ENDPOINT, region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
const worker = new Worker({
  queueUrl: process.env.QUEUE_URL, sqs, redlock, handler: new Handler(),
  logger: createLogger({ silent: true }), concurrency: 3, waitTimeSeconds: 2,
  quorumProbeIntervalMs: 100, visibilityTimeoutSec: 6,
});
worker.on('polling_paused', () => emit({ event: 'paused' }));
await worker.start();
emit({ event: 'ready' });
process.once('SIGUSR2', async () => {
  await worker.stop({ timeoutMs: 200 });
  await redlock.quit();
  sqs.destroy();
  emit({ event: 'stopped', batchesInFlight: worker.batchesInFlight });
});
`;

describe('Worker process: it exits by itself after stop() and quit()', () => {
  const redis = useRedisNodes(3);
  const env = useSqs();

  async function run(scenario: 'idle' | 'stubborn' | 'paused'): Promise<{ exitedAfterStopMs: number }> {
    const script = join(tmpdir(), `review-exit-${process.pid}.mjs`);
    writeFileSync(script, CHILD);
    const { queueUrl } = env.createQueue(`review-exit-${scenario}`);
    const child = new NodeProcess(
      `exit-${scenario}`,
      [script],
      {
        ...process.env,
        SCENARIO: scenario,
        ENDPOINT: env.endpoint,
        QUEUE_URL: queueUrl,
        REDIS_URLS: redis.nodes.map((n) => n.url).join(','),
      },
      { waitForMs: 10_000 },
    );
    await child.waitFor((l) => l.event === 'ready');
    if (scenario !== 'idle') {
      if (scenario === 'paused') {
        redis.nodes[0]?.pause();
        redis.nodes[1]?.pause();
      }
      await sendMessages(env.sqs, queueUrl, [{ body: JSON.stringify({ id: scenario }) }]);
      await child.waitFor((l) => l.event === (scenario === 'paused' ? 'paused' : 'started'));
    }
    await sleep(300); // idle pollers are in their long polls
    return { exitedAfterStopMs: await stopAndTimeExit(child) };
  }

  async function stopAndTimeExit(child: NodeProcess): Promise<number> {
    // The trigger: SIGUSR2 (a 'once' listener: it keeps nothing alive afterwards).
    child.child.kill('SIGUSR2');
    await child.waitFor((l) => l.event === 'stopped');
    const stoppedAt = performance.now();
    const exit = await Promise.race([child.exited, sleep(8_000).then(() => undefined)]);
    const after = performance.now() - stoppedAt;
    if (!exit) child.child.kill('SIGKILL');
    return exit ? after : Number.POSITIVE_INFINITY;
  }

  for (const scenario of ['idle', 'stubborn', 'paused'] as const) {
    it(`${scenario}: exits within a few seconds of stop() + quit()`, async () => {
      try {
        const { exitedAfterStopMs } = await run(scenario);
        expect(exitedAfterStopMs).toBeLessThan(4_000);
      } finally {
        redis.nodes[0]?.resume();
        redis.nodes[1]?.resume();
      }
    }, 30_000);
  }
});
