import type { Message } from '@aws-sdk/client-sqs';
import { BaseHandler, type HandlerContext } from '../../src/index.ts';
import type { Ledger } from './ledger.ts';
import { sleepUnlessAborted } from './lock.ts';

/** The body every test message carries. */
export interface Job {
  id: string;
  /** How long the handler works, in ms. */
  workMs?: number;
  /** Throw on these receive counts (or always, with true). */
  fail?: boolean | number[];
  /** For FIFO and keyed tests. */
  key?: string;
}

/**
 * A handler that records its side effect in a Ledger under the fencing token, as a careful downstream
 * would, and exposes what it saw for assertions.
 */
export class LedgerHandler extends BaseHandler<Job> {
  readonly ledger: Ledger;
  readonly seen: { id: string; receiveCount: number; fencingToken: number; aborted: boolean }[] = [];
  readonly order: string[] = [];
  readonly #keyBy: 'messageId' | 'key';

  constructor(ledger: Ledger, options: { keyBy?: 'messageId' | 'key' } = {}) {
    super();
    this.ledger = ledger;
    this.#keyBy = options.keyBy ?? 'messageId';
  }

  hydrate(message: Message): Job | null {
    const job = JSON.parse(message.Body ?? '') as Partial<Job>;
    if (typeof job.id !== 'string' || job.id.length === 0) return null;
    return job as Job;
  }

  override lockKey(job: Job, message: Message): string {
    return this.#keyBy === 'key' && job.key ? job.key : (message.MessageId ?? job.id);
  }

  async handle(job: Job, ctx: HandlerContext): Promise<void> {
    this.order.push(job.id);
    await this.ledger.begin(job.id);
    try {
      if (job.workMs) await sleepUnlessAborted(job.workMs, ctx.signal);
      const failNow = job.fail === true || (Array.isArray(job.fail) && job.fail.includes(ctx.receiveCount));
      this.seen.push({
        id: job.id,
        receiveCount: ctx.receiveCount,
        fencingToken: ctx.fencingToken,
        aborted: ctx.signal.aborted,
      });
      if (failNow) throw new Error(`job ${job.id} failed on receive ${ctx.receiveCount}`);
      if (ctx.signal.aborted) throw ctx.signal.reason;
      await this.ledger.apply(job.id, ctx.fencingToken);
    } finally {
      await this.ledger.end(job.id);
    }
  }
}

export function jobs(
  count: number,
  prefix: string,
  extra: Partial<Job> = {},
): { body: string; id: string }[] {
  return Array.from({ length: count }, (_, i) => {
    const id = `${prefix}-${i}`;
    return { id, body: JSON.stringify({ id, ...extra }) };
  });
}
