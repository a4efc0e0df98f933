/**
 * The handler of the demo (demo/demo.ts), run by each worker process through the CLI:
 * `node src/cli.ts run demo/handler.ts`. The CLI instantiates it with no arguments, so it reads its
 * settings from the environment:
 *   LEDGER_URL     redis:// URL of the node keeping the Ledger (its own node, not a quorum node)
 *   LEDGER_PREFIX  key prefix of the Ledger (default 'demo')
 *
 * A message body is `{"id": "job-00042", "workMs": 12}`. Anything else is poison: a body that is not
 * JSON makes hydrate throw, a body without a string id makes it return null; either way the handler
 * never runs and the worker dead-letters the message.
 *
 * The side effect is recorded in the Ledger under the message's fencing token, as a careful downstream
 * would: the demo counts from it how many jobs were applied, applied twice, or run twice at once.
 */
import type { Message } from '@aws-sdk/client-sqs';
import { Redis } from 'ioredis';
import { BaseHandler, type HandlerContext } from '../src/index.ts';
import { Ledger } from '../test/helpers/ledger.ts';
import { sleepUnlessAborted } from '../test/helpers/lock.ts';

/** The body of a valid demo message. */
export interface DemoJob {
  id: string;
  /** How long the work takes, in ms. */
  workMs: number;
}

export default class DemoHandler extends BaseHandler<DemoJob> {
  readonly #redis: Redis;
  readonly #ledger: Ledger;

  constructor() {
    super();
    const url = process.env.LEDGER_URL;
    if (!url) throw new Error('demo handler: LEDGER_URL must be set to the redis:// URL of the ledger node');
    this.#redis = new Redis(url, { maxRetriesPerRequest: 3 });
    // Errors surface through the rejected commands (and fail the handler: the message is retried).
    this.#redis.on('error', () => {});
    this.#ledger = new Ledger(this.#redis, process.env.LEDGER_PREFIX || 'demo');
  }

  hydrate(message: Message): DemoJob | null {
    // Throws on a body that is not JSON: poison.
    const body = JSON.parse(message.Body ?? '') as Partial<DemoJob> | null;
    if (body === null || typeof body !== 'object' || typeof body.id !== 'string' || body.id === '')
      return null;
    const workMs = typeof body.workMs === 'number' && body.workMs >= 0 ? body.workMs : 0;
    return { id: body.id, workMs };
  }

  async handle(job: DemoJob, ctx: HandlerContext): Promise<void> {
    await this.#ledger.begin(job.id);
    try {
      await sleepUnlessAborted(job.workMs, ctx.signal);
      // Lock lost, visibility lost or shutdown: stop before the side effect, the message is retried.
      if (ctx.signal.aborted) throw ctx.signal.reason;
      const accepted = await this.#ledger.apply(job.id, ctx.fencingToken);
      if (!accepted) {
        ctx.logger.warn('demo handler: stale fencing token, write rejected by the ledger', { id: job.id });
      }
    } finally {
      await this.#ledger.end(job.id);
    }
  }

  async close(): Promise<void> {
    await this.#redis.quit().catch(() => this.#redis.disconnect());
  }
}
