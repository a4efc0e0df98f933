/**
 * Review of schema handlers and the testing kit: inputs that could make hydration costly or its
 * reason unsendable, and a case where testHandler and a real Worker (fauxqs, redis-server nodes)
 * could disagree on the same message.
 */

import * as v from 'valibot';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { BaseHandler, defineHandler, type HandlerContext, POISON_ATTRIBUTES } from '../../src/index.ts';
import { sqsMessage, testHandler } from '../../src/testing/index.ts';
import { eventually, sleep } from '../helpers/lock.ts';
import { capturingLogger } from '../helpers/logs.ts';
import { drainQueue, sendMessages } from '../helpers/sqs.ts';
import { useWorkerFixture } from '../helpers/worker.ts';

/** What SQS accepts in a string (body or attribute value): #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: SQS's own character set, tab and newlines among it
const SQS_TEXT = /^[\x09\x0A\x0D\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]*$/u;

describe('review: schema handlers and testHandler', () => {
  const { redis, env, workers } = useWorkerFixture();
  afterEach(async () => {
    for (const node of redis.nodes) node.resume();
    await workers.stopAll();
  });

  it('a body with a huge array of bad items: the reason keeps the count, logs and poison-error stay small', async () => {
    const handler = defineHandler({ schema: z.array(z.string()), handle: async () => {} });
    const { queueUrl, queueName, dlqUrl } = env.createQueue('review-huge-issues', { maxReceiveCount: 3 });
    const { logger, entries } = capturingLogger();
    const { events } = await workers.start(handler, queueUrl, { logger });
    // 120,000 numbers where strings are expected: 240 KB, 120,000 issues.
    const body = JSON.stringify(Array.from({ length: 120_000 }, () => 0));
    await sendMessages(env.sqs, queueUrl, [{ body }]);
    await eventually(async () => env.counts(queueName).total === 0, 30_000);
    const [dead] = await eventually(async () => {
      const got = await drainQueue(env.sqs, dlqUrl as string);
      return got.length === 1 && got;
    }, 15_000);
    expect(events.poison_message).toHaveLength(1);
    expect(dead?.MessageAttributes?.[POISON_ATTRIBUTES.reason]?.StringValue).toMatch(
      /^body does not match the schema \(120000 issues\): \[0\]: /,
    );
    // No log line of megabytes for one message (each entry as the JSON a log shipper would get).
    const largest = Math.max(...entries.map((e) => JSON.stringify(e).length));
    expect(largest).toBeLessThan(64 * 1024);
  });

  it('the poison reason is text SQS accepts as an attribute, whatever keys the body has', async () => {
    const handler = defineHandler({ schema: z.strictObject({ id: z.string() }), handle: async () => {} });
    // Valid JSON escapes whose characters SQS refuses in an attribute value.
    const body = '{"id":"a","bad\\uffffkey":1,"ctl\\u0001":2,"\\ud800":3}';
    const result = await testHandler(handler, sqsMessage({ body }));
    expect(result.kind).toBe('poison');
    const reason = result.kind === 'poison' ? result.reason : '';
    expect(reason).toMatch(/^body does not match the schema \(1 issue\): /);
    expect(reason).toMatch(SQS_TEXT);
  });

  it('every attribute the dead-letter send adds is text SQS accepts, whatever the error says', async () => {
    // An error message (from a parser, a vendor, a body's own bytes) may hold what SQS refuses in an
    // attribute; the real SQS would refuse the whole send, and the message would never reach the DLQ.
    class Picky extends BaseHandler<never> {
      hydrate(): never {
        throw new Error('bad byte \u0001 here, \uffff there, and a lone \ud800');
      }
      async handle(): Promise<void> {}
    }
    const { queueUrl, queueName, dlqUrl } = env.createQueue('review-sqs-text', { maxReceiveCount: 3 });
    await workers.start(new Picky(), queueUrl);
    await sendMessages(env.sqs, queueUrl, [{ body: '{}' }]);
    await eventually(async () => env.counts(queueName).total === 0, 15_000);
    const [dead] = await eventually(async () => {
      const got = await drainQueue(env.sqs, dlqUrl as string);
      return got.length === 1 && got;
    }, 15_000);
    const values = Object.values(dead?.MessageAttributes ?? {}).map((a) => a.StringValue ?? '');
    expect(values.length).toBeGreaterThanOrEqual(2);
    for (const value of values) expect(value).toMatch(SQS_TEXT);
    expect(dead?.MessageAttributes?.[POISON_ATTRIBUTES.reason]?.StringValue).toContain(
      'bad byte \\u0001 here',
    );
  });

  it("a body's values quoted by a schema's issue messages stay out of the logs unless logMessageBodies", async () => {
    // valibot's messages quote the value they refused: `Invalid email: Received "secret-token-abc"`.
    const handler = defineHandler({
      schema: v.object({ email: v.pipe(v.string(), v.email()) }),
      handle: async () => {},
    });
    const body = JSON.stringify({ email: 'secret-token-abc' });
    for (const logMessageBodies of [false, true]) {
      const { queueUrl, queueName, dlqUrl } = env.createQueue(`review-log-values-${logMessageBodies}`, {
        maxReceiveCount: 3,
      });
      const { logger, entries } = capturingLogger();
      await workers.start(handler, queueUrl, { logger, logMessageBodies });
      await sendMessages(env.sqs, queueUrl, [{ body }]);
      await eventually(async () => env.counts(queueName).total === 0, 15_000);
      const [dead] = await eventually(async () => {
        const got = await drainQueue(env.sqs, dlqUrl as string);
        return got.length === 1 && got;
      }, 15_000);
      // The DLQ keeps the whole reason (the body is there anyway).
      expect(dead?.MessageAttributes?.[POISON_ATTRIBUTES.reason]?.StringValue).toContain('secret-token-abc');
      const logged = entries.map((e) => JSON.stringify(e)).join('\n');
      expect(logged).toContain('poison message moved to the dead-letter queue');
      if (logMessageBodies) expect(logged).toContain('secret-token-abc');
      else {
        expect(logged).not.toContain('secret-token-abc');
        expect(logged).toContain('body does not match the schema (1 issue)');
        expect(logged).toContain('"issuePaths":["email"]');
      }
      await workers.stopAll();
    }
  });

  it('defineHandler takes a handle that resolves to a value (typed: tsc checks this file), and ignores it', async () => {
    const Charge = z.object({ orderId: z.string(), cents: z.string().transform((s) => Number(s)) });
    const charge = async (c: { orderId: string; cents: number }): Promise<{ receipt: string }> => ({
      receipt: `${c.orderId}:${c.cents}`,
    });
    const handler = defineHandler({
      schema: Charge,
      lockKey: (c) => `order:${c.orderId}`,
      handle: async (c) => charge(c),
    });
    const result = await testHandler(handler, sqsMessage({ body: { orderId: 'o-1', cents: '1250' } }));
    expect(result).toMatchObject({
      kind: 'processed',
      input: { orderId: 'o-1', cents: 1250 },
      lockKey: 'order:o-1',
    });
  });

  it('testHandler lists every entry logged, the last one just before handle returns', async () => {
    const handler = defineHandler({
      schema: z.object({ id: z.string() }),
      handle: async (input, ctx) => {
        for (let i = 0; i < 500; i++) ctx.logger.debug('step', { i });
        ctx.logger.info('done', { id: input.id });
      },
    });
    const result = await testHandler(handler, sqsMessage({ body: { id: 'x' } }));
    expect(result.logs).toHaveLength(501);
    expect(result.logs.at(-1)).toMatchObject({
      level: 'info',
      message: 'done',
      id: 'x',
      lockKey: expect.any(String),
    });
  });

  it('a handler that succeeds after its lock expired, unclaimed: testHandler and the Worker agree', async () => {
    let freeze = true;
    const handle = async (_input: { id: string }, ctx: HandlerContext): Promise<void> => {
      if (ctx.receiveCount > 1) return;
      // In the Worker: every node frozen until validity runs out (the lock is lost as expired), then
      // back. In testHandler: loseLock('expired') does the same. Either way it succeeds afterwards.
      const frozen = freeze;
      freeze = false;
      if (frozen) for (const node of redis.nodes) node.pause();
      await eventually(async () => ctx.signal.aborted, 10_000);
      if (frozen) for (const node of redis.nodes) node.resume();
      await sleep(200);
    };
    const handler = defineHandler({ schema: z.object({ id: z.string() }), handle });
    const { queueUrl, queueName } = env.createQueue('review-expired-late', { maxReceiveCount: 3 });
    const { events } = await workers.start(handler, queueUrl, { lock: { ttlMs: 1_000 } });
    await sendMessages(env.sqs, queueUrl, [{ body: '{"id":"late"}' }]);
    await eventually(async () => events.message_processed.length + events.lock_lost.length > 0, 20_000);
    const worker = events.message_processed.length === 1 ? 'processed' : 'lock_lost';

    const kit = await testHandler(handler, sqsMessage({ body: '{"id":"late"}' }), {
      onContext: (_ctx, loseLock) => void setTimeout(() => loseLock('expired'), 20),
      fencingToken: 3,
    });
    expect({ worker, kit: kit.kind }).toEqual({ worker, kit: worker });
    expect(env.counts(queueName).total).toBe(worker === 'processed' ? 0 : 1);
  });
});
