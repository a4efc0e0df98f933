import type { Message } from '@aws-sdk/client-sqs';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  BaseHandler,
  ConfigError,
  defineHandler,
  type HandlerContext,
  InvalidBodyError,
  LockLostError,
  lockHandoffAttributes,
  SchemaHandler,
} from '../../src/index.ts';
import { sqsMessage, testHandler } from '../../src/testing/index.ts';
import { sleepUnlessAborted } from '../helpers/lock.ts';

interface Job {
  id: string;
  fail?: boolean;
  /** How long handle waits (ms), returning early when the signal aborts. */
  waitMs?: number;
}

/** A hand-written hydrate, the keys from the body, and a handle that records what it got. */
class JobHandler extends BaseHandler<Job> {
  readonly calls: { job: Job; receiveCount: number; aborted: boolean }[] = [];

  hydrate(message: Message): Job | null {
    const job = JSON.parse(message.Body ?? '') as Partial<Job>;
    return typeof job.id === 'string' ? (job as Job) : null;
  }

  override lockKey(job: Job): string {
    return `job:${job.id}`;
  }

  override idempotencyKey(job: Job): string {
    return job.id === 'blank-key' ? '' : `run:${job.id}`;
  }

  async handle(job: Job, ctx: HandlerContext): Promise<void> {
    ctx.logger.info('started', { jobId: job.id });
    if (job.waitMs) await sleepUnlessAborted(job.waitMs, ctx.signal);
    this.calls.push({ job, receiveCount: ctx.receiveCount, aborted: ctx.signal.aborted });
    if (job.fail) throw new Error(`job ${job.id} failed`);
  }
}

describe('sqsMessage', () => {
  it('builds a received message: ids, the body (objects as JSON), system and message attributes', () => {
    const message = sqsMessage({
      body: { id: 'a' },
      attributes: { trace: 'abc', retries: 3, blob: new Uint8Array([1, 2]) },
      receiveCount: 4,
      groupId: 'g-1',
      messageId: 'm-1',
    });
    expect(message).toMatchObject({
      MessageId: 'm-1',
      Body: '{"id":"a"}',
      Attributes: { ApproximateReceiveCount: '4', MessageGroupId: 'g-1' },
      MessageAttributes: {
        trace: { DataType: 'String', StringValue: 'abc' },
        retries: { DataType: 'Number', StringValue: '3' },
        blob: { DataType: 'Binary', BinaryValue: new Uint8Array([1, 2]) },
      },
    });
    expect(message.ReceiptHandle).toEqual(expect.any(String));
    expect(sqsMessage({ body: 'raw text' }).Body).toBe('raw text');
    const [a, b] = [sqsMessage(), sqsMessage()];
    expect(a.MessageId).not.toBe(b.MessageId);
    expect(a.Attributes?.ApproximateReceiveCount).toBe('1');
    expect(a.Body).toBeUndefined();
    expect(a.Attributes?.MessageGroupId).toBeUndefined();
  });

  it('refuses what SQS could not deliver, naming the option and the value', () => {
    expect(() => sqsMessage({ receiveCount: 0 })).toThrow(
      'sqsMessage receiveCount must be an integer >= 1. Received: 0',
    );
    expect(() => sqsMessage({ groupId: '' })).toThrow(ConfigError);
    expect(() => sqsMessage({ attributes: { bad: true as never } })).toThrow(/^sqsMessage attributes\.bad /);
  });
});

describe('testHandler', () => {
  it('processed: the input, the keys and context the pipeline gives, and the logs with their metadata', async () => {
    const handler = new JobHandler();
    const message = sqsMessage({ body: { id: 'a' }, receiveCount: 2, messageId: 'm-a' });
    const result = await testHandler(handler, message, { fencingToken: 42 });

    expect(result).toMatchObject({
      kind: 'processed',
      input: { id: 'a' },
      lockKey: 'job:a',
      idempotencyKey: 'run:a',
      fencingToken: 42,
    });
    expect(result.logs).toEqual([
      { level: 'info', message: 'started', jobId: 'a', messageId: 'm-a', lockKey: 'job:a', fencingToken: 42 },
    ]);
    expect(handler.calls).toEqual([{ job: { id: 'a' }, receiveCount: 2, aborted: false }]);
  });

  it('processed with the MessageId as both keys when the handler has no key hooks', async () => {
    const handler = defineHandler({ schema: z.object({ id: z.string() }), handle: async () => {} });
    const result = await testHandler(handler, sqsMessage({ body: { id: 'x' }, messageId: 'm-x' }));
    expect(result).toMatchObject({ kind: 'processed', lockKey: 'm-x', idempotencyKey: 'm-x' });
  });

  it('failed: the error the handler threw (a synchronous throw too)', async () => {
    const result = await testHandler(new JobHandler(), sqsMessage({ body: { id: 'b', fail: true } }));
    expect(result.kind).toBe('failed');
    expect(result.kind === 'failed' && (result.error as Error).message).toBe('job b failed');

    const sync = new (class extends JobHandler {
      override handle(): Promise<void> {
        throw new TypeError('not even a promise');
      }
    })();
    const thrown = await testHandler(sync, sqsMessage({ body: { id: 'c' } }));
    expect(thrown).toMatchObject({ kind: 'failed', error: expect.any(TypeError) });
  });

  it.each([
    ['hydrate returned null', { nope: 1 }, 'hydrate returned null'],
    ['hydrate threw', 'not json', /^hydrate threw: Unexpected token/],
    ['a key hook gave no key', { id: 'blank-key' }, 'idempotencyKey returned "", not a non-empty string'],
  ])('poison (%s): the pipeline reason, and the handler never runs', async (_, body, reason) => {
    const handler = new JobHandler();
    const result = await testHandler(handler, sqsMessage({ body }));
    expect(result.kind).toBe('poison');
    expect(result.kind === 'poison' && result.reason).toEqual(
      typeof reason === 'string' ? reason : expect.stringMatching(reason),
    );
    expect(handler.calls).toEqual([]);
  });

  it('poison: a message without a ReceiptHandle, as the pipeline refuses it', async () => {
    const { ReceiptHandle: _, ...message } = sqsMessage({ body: { id: 'a' } });
    await expect(testHandler(new JobHandler(), message)).resolves.toMatchObject({
      kind: 'poison',
      reason: 'message has no MessageId or ReceiptHandle',
    });
  });

  it('poison: a body the schema refuses, with its issues; a body that is not JSON', async () => {
    const ran: unknown[] = [];
    const handler = defineHandler({
      schema: z.object({ id: z.string(), items: z.array(z.object({ qty: z.number().positive() })) }),
      handle: async (input) => void ran.push(input),
    });
    const refused = await testHandler(handler, sqsMessage({ body: { id: 7, items: [{ qty: 0 }] } }));
    expect(refused).toMatchObject({
      kind: 'poison',
      reason: expect.stringMatching(
        /^body does not match the schema \(2 issues\): id: .+; items\[0\]\.qty: .+/,
      ),
      error: expect.any(InvalidBodyError),
    });
    expect(
      refused.kind === 'poison' && (refused.error as InvalidBodyError).issues.map((i) => i.path),
    ).toEqual([['id'], ['items', 0, 'qty']]);
    const notJson = await testHandler(handler, sqsMessage({ body: '{"id":' }));
    expect(notJson).toMatchObject({ kind: 'poison', reason: 'body is not JSON (6 bytes)' });
    expect(await testHandler(handler, sqsMessage())).toMatchObject({
      kind: 'poison',
      reason: 'body is empty',
    });
    expect(ran).toEqual([]);
  });

  it('lock_lost before handle: the handler does not run', async () => {
    const handler = new JobHandler();
    const result = await testHandler(handler, sqsMessage({ body: { id: 'd' } }), {
      onContext: (_, loseLock) => loseLock('expired'),
    });
    expect(result).toMatchObject({ kind: 'lock_lost', handlerSucceeded: false, lockKey: 'job:d' });
    expect(result.kind === 'lock_lost' && result.error).toBeInstanceOf(LockLostError);
    expect(result.kind === 'lock_lost' && (result.error as LockLostError).reason).toBe('expired');
    expect(handler.calls).toEqual([]);
  });

  it('lock_lost while handle runs: its signal aborts, and its success does not count', async () => {
    const handler = new JobHandler();
    const started = performance.now();
    let signal: AbortSignal | undefined;
    const result = await testHandler(handler, sqsMessage({ body: { id: 'e', waitMs: 30_000 } }), {
      fencingToken: 9,
      onContext: (ctx, loseLock) => {
        signal = ctx.signal;
        setTimeout(loseLock, 20);
      },
    });
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(result).toMatchObject({ kind: 'lock_lost', handlerSucceeded: true, fencingToken: 9 });
    expect(signal?.reason).toMatchObject({ name: 'LockLostError', reason: 'not_owner', fencingToken: 9 });
    expect(handler.calls).toEqual([{ job: { id: 'e', waitMs: 30_000 }, receiveCount: 1, aborted: true }]);
  });

  it('a Publisher message with a verified handoff runs under its task key', async () => {
    const secret = 's'.repeat(32);
    const handoff = { key: 'nightly:c-1', value: 'owner-1', fencingToken: 5 };
    const message = sqsMessage({ body: { id: 'f' }, attributes: lockHandoffAttributes(handoff, secret) });
    await expect(testHandler(new JobHandler(), message, { handoffSecret: secret })).resolves.toMatchObject({
      kind: 'processed',
      lockKey: 'nightly:c-1',
      idempotencyKey: 'nightly:c-1',
    });
    // Without the secret the handoff does not verify: its own keys, and the pipeline's warning.
    const unverified = await testHandler(new JobHandler(), message);
    expect(unverified).toMatchObject({ kind: 'processed', lockKey: 'job:f' });
    expect(unverified.logs[0]).toMatchObject({
      level: 'warn',
      message: expect.stringMatching(/handoff ignored/),
    });
  });

  it('rejects a handler that cannot hydrate, and options out of range, with a ConfigError', async () => {
    class NoSchema extends SchemaHandler<z.ZodString> {
      declare readonly schema: z.ZodString;
      async handle(): Promise<void> {}
    }
    await expect(testHandler(new NoSchema(), sqsMessage({ body: '"x"' }))).rejects.toThrow(
      /^NoSchema\.schema must be a Standard Schema v1/,
    );
    await expect(testHandler(new JobHandler(), sqsMessage(), { fencingToken: 0 })).rejects.toThrow(
      'testHandler fencingToken must be an integer between 1 and 9007199254740991. Received: 0',
    );
  });
});
