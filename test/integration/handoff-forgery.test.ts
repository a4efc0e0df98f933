/**
 * A lock handoff cannot be forged: only a Publisher holding the consumers' `handoffSecret` can make a
 * worker run a message under a key of its choosing. Real redis-server nodes and fauxqs; the forger is a
 * plain SQS producer that sets the handoff attributes itself.
 */
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import winston from 'winston';
import { ConfigError, type HandlerContext, type Redlock } from '../../src/index.ts';
import { type DispatchResult, LOCK_HANDOFF_ATTRIBUTES, Publisher } from '../../src/runtime/publisher.ts';
import { cliEnv, inheritedEnv } from '../helpers/cli.ts';
import { type Job, LedgerHandler } from '../helpers/handlers.ts';
import { eventually, redlockOver, silentLogger } from '../helpers/lock.ts';
import { NodeProcess, useProcesses } from '../helpers/processes.ts';
import { sendMessages } from '../helpers/sqs.ts';
import { useWorkerFixture } from '../helpers/worker.ts';

/** A LedgerHandler (locked by MessageId) that also records the key and token each run had. */
class KeyRecordingHandler extends LedgerHandler {
  readonly runs: { id: string; messageId: string; lockKey: string; fencingToken: number }[] = [];

  override async handle(job: Job, ctx: HandlerContext): Promise<void> {
    this.runs.push({
      id: job.id,
      messageId: ctx.messageId,
      lockKey: ctx.lockKey,
      fencingToken: ctx.fencingToken,
    });
    await super.handle(job, ctx);
  }
}

/** A winston logger that keeps every entry at warn and above, for assertions on warnings. */
function recordingLogger(): { logger: winston.Logger; warnings: Record<string, unknown>[] } {
  const warnings: Record<string, unknown>[] = [];
  const stream = new Writable({
    objectMode: true,
    write(info: Record<string, unknown>, _encoding, done) {
      warnings.push({ ...info });
      done();
    },
  });
  const logger = winston.createLogger({
    level: 'warn',
    transports: [new winston.transports.Stream({ stream })],
  });
  return { logger, warnings };
}

const IGNORED = 'lock handoff ignored: processed as an ordinary message, under its own lockKey';

describe('lock handoff forgery', () => {
  const { redis, env, workers, newLedger } = useWorkerFixture();
  const spawned = useProcesses<NodeProcess>();
  const handoffSecret = 'forgery-test-handoff-secret-0123456789ab';
  /** The scheduler's Redlock (its own connections, as in its own process). */
  let redlock: Redlock;

  beforeAll(() => {
    redlock = redlockOver(redis).redlock;
  });
  afterEach(() => workers.stopAll());
  afterAll(() => redlock.quit());

  const task = (id: string): string => JSON.stringify({ id });
  const attr = (value: string, DataType = 'String') => ({ DataType, StringValue: value });
  function sent(result: DispatchResult): Extract<DispatchResult, { dispatched: true }> {
    if (!result.dispatched) throw new Error(`expected a dispatch, got ${JSON.stringify(result)}`);
    return result;
  }

  it('runs a forged handoff under its own lockKey, not the key it names; the real task of that key still runs', async () => {
    const { queueUrl, queueName } = env.createQueue('forged');
    const handler = new KeyRecordingHandler(newLedger('forged'));
    const { logger, warnings } = recordingLogger();
    const { events } = await workers.start(handler, queueUrl, { handoffSecret, logger });

    // A plain producer names the keys of real tasks, with a made-up owner value and token, and a
    // made-up signature or none at all.
    const forgedValue = 'forged-owner-value';
    const forged = (key: string) => ({
      [LOCK_HANDOFF_ATTRIBUTES.key]: attr(key),
      [LOCK_HANDOFF_ATTRIBUTES.value]: attr(forgedValue),
      [LOCK_HANDOFF_ATTRIBUTES.fencingToken]: attr('7', 'Number'),
    });
    const forgedIds = await sendMessages(env.sqs, queueUrl, [
      { body: task('f1'), attributes: forged('order-1') },
      {
        body: task('f2'),
        attributes: {
          ...forged('order-2'),
          [LOCK_HANDOFF_ATTRIBUTES.signature]: attr('bm90LWEtc2lnbmF0dXJl'),
        },
      },
    ]);
    await eventually(async () => events.message_processed.length === 2 && env.counts(queueName).total === 0);
    // The keys they named were not touched: the real tasks are dispatched (not 'done') and run.
    const publisher = new Publisher({ sqs: env.sqs, queueUrl, redlock, handoffSecret, logger: silentLogger });
    const results = [
      await publisher.dispatch({ taskKey: 'order-1', body: task('r1') }),
      await publisher.dispatch({ taskKey: 'order-2', body: task('r2') }),
    ];
    const byId = (a: { id: string }, b: { id: string }) => a.id.localeCompare(b.id);
    expect
      .soft(
        handler.runs
          .filter((r) => r.id.startsWith('f'))
          .sort(byId)
          .map(({ id, lockKey }) => ({ id, lockKey })),
      )
      .toEqual([
        { id: 'f1', lockKey: forgedIds[0] },
        { id: 'f2', lockKey: forgedIds[1] },
      ]);
    expect(results.map((r) => (r.dispatched ? 'dispatched' : r.reason))).toEqual([
      'dispatched',
      'dispatched',
    ]);
    const ignored = warnings.filter((w) => w.message === IGNORED);
    expect(ignored.map((w) => w.messageId).sort()).toEqual([...forgedIds].sort());
    expect(ignored.map((w) => w.reason).sort()).toEqual([
      'srw-lock-signature does not verify (forged, tampered, or signed with another secret)',
      'the message carries no srw-lock-signature',
    ]);
    expect(JSON.stringify(warnings)).not.toContain(forgedValue);
    expect(JSON.stringify(warnings)).not.toContain(handoffSecret);

    const real = results.map(sent);
    await eventually(async () => events.message_processed.length === 4 && env.counts(queueName).total === 0);
    expect(handler.runs.filter((r) => r.id.startsWith('r')).sort(byId)).toEqual([
      { id: 'r1', messageId: real[0]?.messageId, lockKey: 'order-1', fencingToken: real[0]?.fencingToken },
      { id: 'r2', messageId: real[1]?.messageId, lockKey: 'order-2', fencingToken: real[1]?.fencingToken },
    ]);
    expect(await handler.ledger.report(['f1', 'f2', 'r1', 'r2'])).toMatchObject({
      applied: 4,
      appliedTwice: 0,
      concurrentRuns: 0,
    });
  });

  it('adopts a genuine handoff when the consumer has the secret: the fencing token is the one dispatch returned', async () => {
    const { queueUrl, queueName } = env.createQueue('genuine');
    const handler = new KeyRecordingHandler(newLedger('genuine'));
    const { logger, warnings } = recordingLogger();
    const publisher = new Publisher({ sqs: env.sqs, queueUrl, redlock, handoffSecret, logger: silentLogger });
    const dispatched = sent(await publisher.dispatch({ taskKey: 'genuine:1', body: task('g1') }));
    const { events } = await workers.start(handler, queueUrl, { handoffSecret, logger });
    await eventually(async () => events.message_processed.length === 1 && env.counts(queueName).total === 0);
    expect(handler.runs).toEqual([
      {
        id: 'g1',
        messageId: dispatched.messageId,
        lockKey: 'genuine:1',
        fencingToken: dispatched.fencingToken,
      },
    ]);
    expect(warnings.filter((w) => w.message === IGNORED)).toEqual([]);
    expect(await publisher.dispatch({ taskKey: 'genuine:1', body: task('g1') })).toEqual({
      dispatched: false,
      reason: 'done',
    });
  });

  it('runs a genuine handoff as an ordinary message, with a warning, on a consumer with another secret or none', async () => {
    const consumers = [
      { name: 'other-secret', secret: 'another-consumer-secret-0123456789abcdef', reason: /does not verify/ },
      { name: 'no-secret', secret: undefined, reason: /^no handoffSecret is configured on this consumer$/ },
    ];
    for (const consumer of consumers) {
      const { queueUrl, queueName } = env.createQueue(consumer.name);
      const handler = new KeyRecordingHandler(newLedger(consumer.name));
      const { logger, warnings } = recordingLogger();
      const publisher = new Publisher({
        sqs: env.sqs,
        queueUrl,
        redlock,
        handoffSecret,
        logger: silentLogger,
      });
      const taskKey = `${consumer.name}:1`;
      const dispatched = sent(await publisher.dispatch({ taskKey, body: task(consumer.name), ttlMs: 2_000 }));
      const { events } = await workers.start(handler, queueUrl, { handoffSecret: consumer.secret, logger });
      await eventually(
        async () => events.message_processed.length === 1 && env.counts(queueName).total === 0,
      );
      expect(handler.runs.map(({ messageId, lockKey }) => ({ messageId, lockKey }))).toEqual([
        { messageId: dispatched.messageId, lockKey: dispatched.messageId },
      ]);
      const ignored = warnings.filter((w) => w.message === IGNORED);
      expect(ignored).toEqual([
        expect.objectContaining({
          messageId: dispatched.messageId,
          reason: expect.stringMatching(consumer.reason),
        }),
      ]);
      expect(JSON.stringify(warnings)).not.toContain(handoffSecret);
    }
  });

  it('the CLI adopts handoffs signed with HANDOFF_SECRET, ignores forged ones, and never logs the secret', async () => {
    const { queueUrl } = env.createQueue('cli');
    const cli = new NodeProcess<Record<string, unknown>>(
      'CLI',
      ['src/cli.ts', 'run', 'test/fixtures/cli-handler.ts'],
      {
        ...inheritedEnv(),
        ...cliEnv(redis, env, queueUrl),
        LOCK_TTL_MS: '3000',
        SHUTDOWN_TIMEOUT_MS: '2000',
        LOG_LEVEL: 'info',
        HANDOFF_SECRET: handoffSecret,
      },
      { waitForMs: 15_000 },
    );
    spawned.push(cli);
    const started = await cli.waitFor((l) => l.message === 'worker started');
    expect(started.handoffSecret).toBe('<redacted>');

    const publisher = new Publisher({ sqs: env.sqs, queueUrl, redlock, handoffSecret, logger: silentLogger });
    const genuine = sent(await publisher.dispatch({ taskKey: 'cli-task:1', body: task('cli-genuine') }));
    const [forgedId] = await sendMessages(env.sqs, queueUrl, [
      {
        body: task('cli-forged'),
        attributes: {
          [LOCK_HANDOFF_ATTRIBUTES.key]: attr('cli-task:2'),
          [LOCK_HANDOFF_ATTRIBUTES.value]: attr('forged-owner-value'),
          [LOCK_HANDOFF_ATTRIBUTES.fencingToken]: attr('7', 'Number'),
          [LOCK_HANDOFF_ATTRIBUTES.signature]: attr('bm90LWEtc2lnbmF0dXJl'),
        },
      },
    ]);
    const done = (id: string) => cli.waitFor((l) => l.message === 'cli-handler: done' && l.id === id);
    expect(await done('cli-genuine')).toMatchObject({
      messageId: genuine.messageId,
      lockKey: 'cli-task:1',
      fencingToken: genuine.fencingToken,
    });
    expect(await done('cli-forged')).toMatchObject({ messageId: forgedId, lockKey: forgedId });
    expect(cli.lines.find((l) => l.message === IGNORED)).toMatchObject({ messageId: forgedId });
    expect(await cli.terminate()).toEqual({ code: 0, signal: null });
    expect(cli.stdout + cli.stderr).not.toContain(handoffSecret);
  });

  it('refuses a Publisher without a secret of at least 32 characters, never echoing it', () => {
    const { queueUrl } = env.createQueue('config');
    for (const handoffSecret of [undefined, '', 'only-twenty-one-chars']) {
      let error: unknown;
      try {
        new Publisher({ sqs: env.sqs, queueUrl, redlock, handoffSecret: handoffSecret as string });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).option).toBe('handoffSecret');
      if (handoffSecret) expect((error as ConfigError).message).not.toContain(handoffSecret);
    }
  });
});
