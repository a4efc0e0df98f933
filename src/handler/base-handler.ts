import type { Message } from '@aws-sdk/client-sqs';
import type { StandardSchemaV1 } from '@standard-schema/spec';
import type { Logger } from 'winston';
import { ConfigError } from '../errors.ts';
import { isStandardSchema, parseBody } from './schema.ts';

/** What `handle` gets besides its input. */
export interface HandlerContext {
  /** The raw SQS message. */
  readonly message: Message;
  readonly messageId: string;
  /**
   * The lock key the message runs under (the mutual-exclusion scope): its MessageId unless `lockKey`
   * says otherwise, or, for a message dispatched by a Publisher, the task key whose lock it carries.
   */
  readonly lockKey: string;
  /**
   * The idempotency key whose completion marker this run writes on success (the deduplication scope):
   * its MessageId unless `idempotencyKey` says otherwise; for a Publisher's task, the task key.
   */
  readonly idempotencyKey: string;
  /** `ApproximateReceiveCount`: 1 on the first delivery. */
  readonly receiveCount: number;
  /**
   * Aborts when the lock is lost, at a Worker's shutdown past its deadline, or in Lambda when the
   * invocation's timeout is near (safetyMarginMs). Its `reason` says which: a LockLostError, or a
   * ShutdownError. A lapsed visibility does not abort it: the lock, not the visibility, decides who
   * runs the message. Stop work and throw when it fires.
   */
  readonly signal: AbortSignal;
  /** Strictly greater than any earlier holder's token for this key: pass it to downstream writes. */
  readonly fencingToken: number;
  /** A winston child carrying messageId, lockKey and fencingToken. */
  readonly logger: Logger;
}

/**
 * Subclass this with two hooks (or {@link SchemaHandler}, which hydrates with a schema). The flow around
 * them is fixed: hydrate, lock the batch, handle, complete (marker + release) or release, then delete or
 * back off.
 */
export abstract class BaseHandler<T> {
  /**
   * Turns the raw message into the handler's input. Return null, or throw, for a poison message: the
   * handler never runs on it, and it goes to the dead-letter queue with the reason.
   */
  abstract hydrate(message: Message): T | null | Promise<T | null>;

  /** Does the work. Throwing leaves the message in SQS for a retry with backoff. */
  abstract handle(input: T, context: HandlerContext): Promise<void>;

  /**
   * The mutual-exclusion scope: messages with the same lock key never run at the same time. Default:
   * the MessageId. Key by a business id (an order id) to serialise different messages about the same
   * entity (charge, then ship): each still runs, one at a time. Not called for a message that carries
   * a lock handed over by a Publisher: it runs under that lock's key.
   */
  lockKey?(input: T, message: Message): string;

  /**
   * The deduplication scope: once a message with this key succeeded, a later message with the same key
   * is acked as a duplicate without running (within `completionTtlMs`). Default: the MessageId, so only
   * redeliveries of the same message are duplicates. Return a producer's request id (or an order id)
   * to run a producer's duplicate sends once; give those messages the same lock key too, or two of them
   * can run at the same time before either is marked done. Not called for a Publisher's task (its key is both).
   */
  idempotencyKey?(input: T, message: Message): string;
}

/**
 * A BaseHandler whose `hydrate` is JSON.parse + validate by `schema`, any Standard Schema v1 (zod 4,
 * valibot, arktype); the input type is the schema's output. A body that is not JSON or fails validation
 * is poison: dead-lettered with the issues (path and message) in its reason; `handle` never runs on it.
 * Async schemas work. An override of `hydrate` may call `super.hydrate(message)` to validate first.
 *
 * @example
 * const Charge = z.object({ orderId: z.string(), cents: z.number().int().positive() });
 * class ChargeHandler extends SchemaHandler<typeof Charge> {
 *   readonly schema = Charge;
 *   async handle(charge: z.output<typeof Charge>, ctx: HandlerContext) { … }
 * }
 */
// A class of its own, not an optional `schema` on BaseHandler: a default `hydrate` there would make every
// existing subclass's `hydrate` an override, which `noImplicitOverride` refuses without the keyword.
export abstract class SchemaHandler<S extends StandardSchemaV1> extends BaseHandler<
  StandardSchemaV1.InferOutput<S>
> {
  abstract readonly schema: S;

  hydrate(message: Message): Promise<StandardSchemaV1.InferOutput<S>> {
    assertHydrates(this);
    return parseBody(this.schema, message);
  }
}

const MUST_BE_A_SCHEMA = 'must be a Standard Schema v1 (an object with a "~standard" validate function)';

/**
 * Throws a ConfigError naming the class when `handler` cannot hydrate: no `hydrate` function, or a
 * SchemaHandler's default one without a Standard Schema. Checked when a Worker or Lambda handler is made
 * (a class field such as `schema` is set only after the base constructor returns, so no constructor can).
 */
export function assertHydrates(handler: unknown): void {
  const { hydrate, schema } = (handler ?? {}) as { hydrate?: unknown; schema?: unknown };
  const name = (handler as object | undefined)?.constructor?.name || 'handler';
  if (typeof hydrate !== 'function') {
    throw new ConfigError(`${name}.hydrate`, hydrate, 'must be a function (or extend SchemaHandler)');
  }
  if (hydrate === SchemaHandler.prototype.hydrate && !isStandardSchema(schema)) {
    throw new ConfigError(
      `${name}.schema`,
      schema,
      `${MUST_BE_A_SCHEMA}, or the class must override hydrate`,
    );
  }
}

/** What {@link defineHandler} takes: a schema, `handle`, and the optional key hooks of {@link BaseHandler}. */
export interface HandlerDefinition<S extends StandardSchemaV1> {
  readonly schema: S;
  /** What it resolves to is ignored: `handle: (c, ctx) => payments.charge(c, ctx)` may return a receipt. */
  handle(input: StandardSchemaV1.InferOutput<S>, context: HandlerContext): Promise<unknown>;
  lockKey?(input: StandardSchemaV1.InferOutput<S>, message: Message): string;
  idempotencyKey?(input: StandardSchemaV1.InferOutput<S>, message: Message): string;
}

/**
 * A SchemaHandler from a schema and functions, the input type inferred from the schema:
 * `defineHandler({ schema: Charge, handle: async (charge, ctx) => … })`.
 */
export function defineHandler<S extends StandardSchemaV1>(
  definition: HandlerDefinition<S>,
): SchemaHandler<S> {
  type T = StandardSchemaV1.InferOutput<S>;
  const schema: unknown = definition?.schema;
  if (!isStandardSchema(schema)) {
    throw new ConfigError('defineHandler schema', schema, MUST_BE_A_SCHEMA);
  }
  for (const hook of ['handle', 'lockKey', 'idempotencyKey'] as const) {
    const fn: unknown = definition[hook];
    if (typeof fn !== 'function' && (hook === 'handle' || fn !== undefined)) {
      throw new ConfigError(`defineHandler ${hook}`, fn, 'must be a function');
    }
  }
  const { lockKey, idempotencyKey } = definition;
  class DefinedHandler extends SchemaHandler<S> {
    readonly schema = definition.schema;
    async handle(input: T, context: HandlerContext): Promise<void> {
      await definition.handle(input, context);
    }
  }
  const handler = new DefinedHandler();
  // Only the hooks given: where one is absent, the pipeline uses the MessageId.
  if (lockKey) handler.lockKey = (input, message) => lockKey.call(definition, input, message);
  if (idempotencyKey) {
    handler.idempotencyKey = (input, message) => idempotencyKey.call(definition, input, message);
  }
  return handler;
}
