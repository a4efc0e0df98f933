import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { BaseHandler, type HandlerContext, type Message } from 'sqs-redlock-worker';
import { ReportStore } from './store.ts';

/** A nightly report of one customer for one day. */
export interface ReportTask {
  customerId: string;
  /** `YYYY-MM-DD` */
  date: string;
}

/**
 * The task's lock key, used by the scheduler as `taskKey` and by the handler as `lockKey`. One key per
 * customer and day: a completed task stays done (its completion marker) and a new day is a new task.
 */
export function reportTaskKey(task: ReportTask): string {
  return `nightly-report:${task.customerId}:${task.date}`;
}

/**
 * Builds a customer's nightly report. A message dispatched by the Publisher carries its task's lock: the
 * worker adopts it (same key, same fencing token) instead of acquiring one, so between the dispatch and
 * the end of `handle` the task is never free for a second run (a handoff that expired in the queue is
 * acquired again under the same key). `lockKey` is only asked for a message that carries no handoff (sent
 * without the Publisher) or one whose signature does not verify (see HANDOFF_SECRET): it and
 * `idempotencyKey` are the same task key, so that message too runs under the task's lock and completion
 * marker.
 */
export class NightlyReportHandler extends BaseHandler<ReportTask> {
  readonly #store: Pick<ReportStore, 'save'>;
  readonly #workMs: number;

  /**
   * The CLI calls it with no arguments: the store is then the Redis at `STORE_URL`, and `WORK_MS` (default
   * 500) how long building a report takes.
   */
  constructor(
    store: Pick<ReportStore, 'save'> = new ReportStore(
      new Redis(process.env.STORE_URL ?? 'redis://localhost:6379'),
    ),
    workMs = Number(process.env.WORK_MS ?? 500),
  ) {
    super();
    this.#store = store;
    this.#workMs = workMs;
  }

  hydrate(message: Message): ReportTask | null {
    const body: unknown = JSON.parse(message.Body ?? ''); // malformed JSON throws: poison, dead-lettered
    if (typeof body !== 'object' || body === null) return null;
    const { customerId, date } = body as Partial<ReportTask>;
    if (typeof customerId !== 'string' || customerId.length === 0) return null;
    if (typeof date !== 'string' || !/^\d{4}-\d{2}-\d{2}$/.test(date)) return null;
    return { customerId, date };
  }

  override lockKey(task: ReportTask): string {
    return reportTaskKey(task);
  }

  /** The task key too: a message sent without the Publisher finds a task that ran done. */
  override idempotencyKey(task: ReportTask): string {
    return reportTaskKey(task);
  }

  async handle(task: ReportTask, ctx: HandlerContext): Promise<void> {
    // Stands for the real work; aborted if the lock is lost or the worker shuts down.
    await sleep(this.#workMs, undefined, { signal: ctx.signal });
    const report = JSON.stringify({ ...task, generatedAt: new Date().toISOString() });
    const saved = await this.#store.save(ctx.lockKey, report, ctx.fencingToken);
    if (!saved) {
      ctx.logger.warn('stale fencing token: a newer run already wrote this report');
      return;
    }
    ctx.logger.info('nightly report written', { ...task });
  }
}

/** The CLI entry: `sqs-redlock-worker run examples/scheduler/handler.ts` instantiates this class. */
export default NightlyReportHandler;
