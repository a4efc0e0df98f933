import { Redis } from 'ioredis';
import { BaseHandler, type HandlerContext, type Message } from 'sqs-redlock-worker';
import { OrdersStore } from './store.ts';

export interface Charge {
  orderId: string;
  cents: number;
}

/**
 * Charges an order. Locked by order id (not MessageId), so two different messages about the same order
 * never run at the same time; deduplicated by the charge of that order, so a producer's duplicate send
 * is acked without charging again; the store rejects a stale fencing token.
 */
export class ChargeOrderHandler extends BaseHandler<Charge> {
  readonly #store: Pick<OrdersStore, 'charge'>;

  /** Only `charge` is used: a unit test can pass a store of its own. */
  constructor(store: Pick<OrdersStore, 'charge'>) {
    super();
    this.#store = store;
  }

  hydrate(message: Message): Charge | null {
    const body: unknown = JSON.parse(message.Body ?? ''); // malformed JSON throws: poison, dead-lettered
    if (typeof body !== 'object' || body === null) return null;
    const { orderId, cents } = body as Partial<Charge>;
    if (typeof orderId !== 'string' || !Number.isInteger(cents) || (cents as number) <= 0) return null;
    return { orderId, cents: cents as number };
  }

  /** Mutual exclusion: one message about an order runs at a time (a refund waits for the charge). */
  override lockKey(charge: Charge): string {
    return `order:${charge.orderId}`;
  }

  /** Deduplication: an order is charged once, however many messages ask for it. */
  override idempotencyKey(charge: Charge): string {
    return `charge:${charge.orderId}`;
  }

  async handle(charge: Charge, ctx: HandlerContext): Promise<void> {
    ctx.signal.throwIfAborted();
    const accepted = await this.#store.charge(charge.orderId, charge.cents, ctx.fencingToken);
    if (!accepted) ctx.logger.warn('stale fencing token: a newer holder already charged this order');
    ctx.logger.info('order charged', { orderId: charge.orderId, cents: charge.cents });
  }
}

/**
 * The CLI entry: `sqs-redlock-worker run examples/orders/handler.ts` loads this default export.
 * lazyConnect: importing the module (the Lambda example, tests) opens no connection before the first charge.
 */
export default new ChargeOrderHandler(
  new OrdersStore(new Redis(process.env.STORE_URL ?? 'redis://localhost:6379', { lazyConnect: true })),
);
