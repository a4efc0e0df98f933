import type { Redis } from 'ioredis';
import { beforeAll } from 'vitest';
import type {
  Redlock,
  RedlockOptions,
  WorkerEvents,
  WorkerOptions,
  Worker as WorkerType,
} from '../../src/index.ts';
import { Worker } from '../../src/index.ts';
import { MESSAGE_EVENTS } from './events.ts';
import { Ledger } from './ledger.ts';
import { eventually, redlockOver, silentLogger } from './lock.ts';
import { type RedisNodes, useRedisNodes } from './redis-nodes.ts';
import { type SqsEnv, useSqs } from './sqs.ts';

/** Every event a worker emitted, by name, in order. */
export type RecordedEvents = { [K in keyof WorkerEvents]: WorkerEvents[K][0][] };

const RECORDED: (keyof WorkerEvents)[] = [...MESSAGE_EVENTS, 'polling_paused', 'polling_resumed'];

export interface StartedWorker {
  readonly worker: WorkerType<unknown>;
  readonly redlock: Redlock;
  readonly events: RecordedEvents;
}

/**
 * Starts in-process workers against fauxqs and the harness's Redis nodes, each with its own Redlock
 * (own connections), recording their events; `stopAll()` stops them and closes their Redlocks.
 */
export function workerFactory(redis: RedisNodes, env: SqsEnv) {
  const started: StartedWorker[] = [];
  return {
    async start(
      handler: unknown,
      queueUrl: string,
      options: Partial<WorkerOptions<unknown>> & { lock?: RedlockOptions } = {},
    ): Promise<StartedWorker> {
      const { lock, ...rest } = options;
      const { redlock, clients } = redlockOver(redis, { ttlMs: 3_000, ...lock });
      // Connected before the first batch, so fault tests (a node paused next) do not meet the
      // cold-start rule: a client in its first handshake is waited for up to connectTimeoutMs.
      await eventually(async () => clients.every((c) => c.status === 'ready'));
      const worker = new Worker({
        queueUrl,
        sqs: env.sqs,
        redlock,
        handler: handler as never,
        logger: silentLogger,
        waitTimeSeconds: 1,
        ...rest,
      });
      const events = Object.fromEntries(RECORDED.map((name) => [name, []])) as unknown as RecordedEvents;
      for (const name of RECORDED) worker.on(name, (e?: unknown) => (events[name] as unknown[]).push(e));
      const entry = { worker, redlock, events };
      started.push(entry);
      await worker.start();
      return entry;
    },
    async stopAll(): Promise<void> {
      const all = started.splice(0);
      await Promise.all(all.map(({ worker }) => worker.stop({ timeoutMs: 5_000 })));
      await Promise.all(all.map(({ redlock }) => redlock.quit()));
    },
  };
}

/**
 * The fixture of a Worker test file: 3 quorum nodes, a ledger node of its own, fauxqs, and a worker
 * factory (stop its workers in the file's afterEach). `newLedger(prefix)` keeps one test's effects.
 */
export function useWorkerFixture(): {
  redis: RedisNodes;
  env: SqsEnv;
  workers: ReturnType<typeof workerFactory>;
  newLedger(prefix: string): Ledger;
} {
  const redis = useRedisNodes(3);
  const ledgerNode = useRedisNodes(1);
  const env = useSqs();
  const workers = workerFactory(redis, env);
  let ledgerClient: Redis | undefined;
  beforeAll(() => {
    ledgerClient = ledgerNode.clients()[0];
  });
  return {
    redis,
    env,
    workers,
    newLedger(prefix) {
      if (!ledgerClient) throw new Error('newLedger() is for tests, after the fixture started');
      return new Ledger(ledgerClient, prefix);
    },
  };
}
