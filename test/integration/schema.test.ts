/**
 * Schema-validated handlers end to end: zod 4 and valibot schemas (sync and async) through a real
 * Worker on fauxqs and redis-server nodes. Valid bodies reach `handle` as the schema's output; a body
 * that is not JSON or fails validation is dead-lettered with its issues in `poison-reason`, unrun.
 */
import type { Message } from '@aws-sdk/client-sqs';
import * as v from 'valibot';
import { afterEach, describe, expect, expectTypeOf, it } from 'vitest';
import { z } from 'zod';
import {
  ConfigError,
  createLambdaHandler,
  defineHandler,
  type HandlerContext,
  POISON_ATTRIBUTES,
  SchemaHandler,
  Worker,
} from '../../src/index.ts';
import { sqsMessage, testHandler } from '../../src/testing/index.ts';
import { eventually, redlockOver, silentLogger, sleep } from '../helpers/lock.ts';
import { drainQueue, sendMessages } from '../helpers/sqs.ts';
import { useWorkerFixture } from '../helpers/worker.ts';

const Charge = z.object({
  orderId: z.string().min(1),
  cents: z.number().int().positive(),
  // A default only the parsed output has: proves handle gets the schema's output, not the raw JSON.
  currency: z.string().default('EUR'),
});

class ChargeHandler extends SchemaHandler<typeof Charge> {
  readonly schema = Charge;
  readonly seen: { input: z.output<typeof Charge>; lockKey: string }[] = [];

  override lockKey(charge: z.output<typeof Charge>): string {
    return `order:${charge.orderId}`;
  }

  async handle(charge: z.output<typeof Charge>, ctx: HandlerContext): Promise<void> {
    this.seen.push({ input: charge, lockKey: ctx.lockKey });
  }
}

/** Cart items, in valibot: the schema the defineHandler cases share. */
const Cart = v.object({
  cartId: v.string(),
  items: v.array(v.object({ sku: v.pipe(v.string(), v.minLength(3)), quantity: v.number() })),
});

describe('schema-validated handlers through the Worker', () => {
  const { redis, env, workers } = useWorkerFixture();
  afterEach(() => workers.stopAll());

  /** Sends the bodies, runs `handler` until `processed` succeeded and the rest reached the DLQ. */
  async function run(
    name: string,
    handler: unknown,
    bodies: string[],
    processed: number,
  ): Promise<{ dead: Message[]; poisonEvents: { reason: string; deadLettered: boolean }[] }> {
    const { queueUrl, queueName, dlqUrl } = env.createQueue(name, { maxReceiveCount: 3 });
    const { events } = await workers.start(handler, queueUrl);
    await sendMessages(
      env.sqs,
      queueUrl,
      bodies.map((body) => ({ body })),
    );
    await eventually(async () => env.counts(queueName).total === 0, 15_000);
    expect(events.message_processed).toHaveLength(processed);
    expect(events.handler_error).toEqual([]);
    const dead = await eventually(async () => {
      const got = await drainQueue(env.sqs, dlqUrl ?? '');
      return got.length === bodies.length - processed && got;
    });
    return { dead, poisonEvents: events.poison_message };
  }

  const reasonOf = (m: Message | undefined): string =>
    m?.MessageAttributes?.[POISON_ATTRIBUTES.reason]?.StringValue ?? '';

  it('zod: a valid body reaches handle as the parsed output; invalid and non-JSON bodies are dead-lettered unrun', async () => {
    const handler = new ChargeHandler();
    const invalid = JSON.stringify({ orderId: '', cents: -5 });
    const { dead, poisonEvents } = await run(
      'schema-zod',
      handler,
      [JSON.stringify({ orderId: 'o-1', cents: 1200 }), invalid, 'not json'],
      1,
    );

    expect(handler.seen).toEqual([
      { input: { orderId: 'o-1', cents: 1200, currency: 'EUR' }, lockKey: 'order:o-1' },
    ]);
    expectTypeOf(handler.seen[0]?.input).toEqualTypeOf<
      { orderId: string; cents: number; currency: string } | undefined
    >();
    const byBody = new Map(dead.map((m) => [m.Body, m]));
    const refused = reasonOf(byBody.get(invalid));
    expect(refused).toMatch(/^body does not match the schema \(2 issues\): orderId: .+; cents: .+$/);
    expect(refused).toContain('orderId: Too small');
    expect(reasonOf(byBody.get('not json'))).toBe('body is not JSON (8 bytes)');
    // The structured issues travel in poison-error: paths as arrays, for tools that read the DLQ.
    const error = JSON.parse(
      byBody.get(invalid)?.MessageAttributes?.[POISON_ATTRIBUTES.error]?.StringValue ?? '{}',
    ) as { name?: string; issues?: { path?: unknown[] }[] };
    expect(error.name).toBe('InvalidBodyError');
    expect(error.issues?.map((i) => i.path)).toEqual([['orderId'], ['cents']]);
    expect(poisonEvents.map((e) => e.deadLettered)).toEqual([true, true]);

    // The testing kit gives the very reason the Worker wrote.
    const kit = await testHandler(new ChargeHandler(), sqsMessage({ body: invalid }));
    expect(kit).toMatchObject({ kind: 'poison', reason: refused });
  });

  it('valibot through defineHandler: typed input, the keys it gives, and nested issue paths in the reason', async () => {
    const seen: { cartId: string; skus: string[]; idempotencyKey: string }[] = [];
    const handler = defineHandler({
      schema: Cart,
      lockKey: (cart) => `cart:${cart.cartId}`,
      idempotencyKey: (cart) => `checkout:${cart.cartId}`,
      async handle(cart, ctx) {
        expectTypeOf(cart).toEqualTypeOf<{ cartId: string; items: { sku: string; quantity: number }[] }>();
        seen.push({
          cartId: cart.cartId,
          skus: cart.items.map((i) => i.sku),
          idempotencyKey: ctx.idempotencyKey,
        });
      },
    });
    const invalid = JSON.stringify({ cartId: 'c-2', items: [{ sku: 'abc', quantity: 1 }, { sku: 'x' }] });
    const { dead } = await run(
      'schema-valibot',
      handler,
      [JSON.stringify({ cartId: 'c-1', items: [{ sku: 'abc', quantity: 2 }] }), invalid],
      1,
    );

    expect(seen).toEqual([{ cartId: 'c-1', skus: ['abc'], idempotencyKey: 'checkout:c-1' }]);
    const reason = reasonOf(dead[0]);
    expect(dead[0]?.Body).toBe(invalid);
    expect(reason).toMatch(/^body does not match the schema \(2 issues\): /);
    expect(reason).toContain('items[1].sku: Invalid length');
    expect(reason).toContain('items[1].quantity: Invalid key');
  });

  it('async schemas (zod refine, valibot checkAsync) are awaited: passed and refused alike', async () => {
    const blocked = async (id: string): Promise<boolean> => {
      await sleep(5);
      return id.startsWith('blocked');
    };
    const zodAsync = Charge.refine(async (c) => !(await blocked(c.orderId)), {
      message: 'order is blocked',
      path: ['orderId'],
    });
    const valibotAsync = v.pipeAsync(
      Cart,
      v.checkAsync(async (cart) => !(await blocked(cart.cartId)), 'cart is blocked'),
    );
    const ran: string[] = [];
    const zodHandler = defineHandler({ schema: zodAsync, handle: async (c) => void ran.push(c.orderId) });
    const valibotHandler = defineHandler({
      schema: valibotAsync,
      handle: async (c) => void ran.push(c.cartId),
    });

    const zod = await run(
      'schema-zod-async',
      zodHandler,
      [JSON.stringify({ orderId: 'ok-1', cents: 1 }), JSON.stringify({ orderId: 'blocked-1', cents: 1 })],
      1,
    );
    expect(reasonOf(zod.dead[0])).toBe('body does not match the schema (1 issue): orderId: order is blocked');
    await workers.stopAll();
    const valibot = await run(
      'schema-valibot-async',
      valibotHandler,
      [JSON.stringify({ cartId: 'ok-2', items: [] }), JSON.stringify({ cartId: 'blocked-2', items: [] })],
      1,
    );
    expect(reasonOf(valibot.dead[0])).toBe('body does not match the schema (1 issue): cart is blocked');
    expect(ran.sort()).toEqual(['ok-1', 'ok-2']);
  });

  it('refuses, when the Worker or the Lambda handler is made, a SchemaHandler without a schema', async () => {
    // What a JavaScript subclass (or a cast) can do; TypeScript requires the abstract schema.
    class Forgetful extends SchemaHandler<typeof Charge> {
      declare readonly schema: typeof Charge;
      async handle(): Promise<void> {}
    }
    const { redlock } = redlockOver(redis);
    const options = { queueUrl: 'http://localhost:1/q', sqs: env.sqs, redlock, logger: silentLogger };
    expect(() => new Worker({ ...options, handler: new Forgetful() })).toThrow(
      /^Forgetful\.schema must be a Standard Schema v1 .*Received: undefined$/,
    );
    expect(() => createLambdaHandler(new Forgetful(), { redlock })).toThrow(ConfigError);
    expect(
      () => new Worker({ ...options, handler: defineHandler({ schema: Charge, handle: async () => {} }) }),
    ).not.toThrow();
    await redlock.quit();
  });
});

describe('defineHandler', () => {
  it('names the part of the definition that is wrong, and the value received', () => {
    expect(() => defineHandler({ schema: { parse() {} } as never, handle: async () => {} })).toThrow(
      'defineHandler schema must be a Standard Schema v1 (an object with a "~standard" validate function). Received: an object (Object)',
    );
    expect(() => defineHandler({ schema: Charge, handle: 'no' as never })).toThrow(
      'defineHandler handle must be a function. Received: "no"',
    );
    expect(() => defineHandler({ schema: Charge, handle: async () => {}, lockKey: 42 as never })).toThrow(
      'defineHandler lockKey must be a function. Received: 42',
    );
  });
});
