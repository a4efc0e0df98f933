/**
 * The scheduler side of the Publisher handoff: dispatches each customer's nightly report to the queue,
 * at most one pending message per task. Run it from cron (or EventBridge Scheduler, a Kubernetes CronJob)
 * as often as you like: a task already waiting in the queue or being worked on answers `pending`, one
 * that ran answers `done`, and nothing is sent for either.
 *
 *   npm run build
 *   SQS_QUEUE_URL=… REDIS_URLS=… HANDOFF_SECRET=… node examples/scheduler/scheduler.ts
 *
 * Environment:
 *   SQS_QUEUE_URL  the queue the workers consume (required)
 *   REDIS_URLS     comma-separated redis:// URLs of the lock quorum: the same nodes as the workers' (required)
 *   HANDOFF_SECRET the secret the handoffs are signed with, at least 32 characters: the same as the
 *                  workers' HANDOFF_SECRET, or they ignore the handoffs (required)
 *   CUSTOMERS      comma-separated customer ids (default acme,globex,initech)
 *   REPORT_DATE    the day to report, YYYY-MM-DD (default yesterday, UTC)
 *   EVERY_SEC      run again every EVERY_SEC seconds until Ctrl-C (default: run once)
 *   AWS_REGION, AWS_ENDPOINT_URL_SQS and credentials as the AWS SDK reads them; LOG_LEVEL for the logs
 */
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { SQSClient } from '@aws-sdk/client-sqs';
import { Redis } from 'ioredis';
import { type DispatchResult, Publisher, Redlock } from 'sqs-redlock-worker';
import { type ReportTask, reportTaskKey } from './handler.ts';

export interface ScheduledReport {
  readonly task: ReportTask;
  readonly taskKey: string;
  readonly result: DispatchResult;
}

/**
 * Dispatches the nightly report of every customer for `date`. Each dispatch takes the task's lock,
 * sends the message carrying it and hands it over to the worker that will receive the message.
 */
export async function dispatchNightlyReports(
  publisher: Publisher,
  customerIds: readonly string[],
  date: string,
): Promise<ScheduledReport[]> {
  return Promise.all(
    customerIds.map(async (customerId) => {
      const task: ReportTask = { customerId, date };
      const taskKey = reportTaskKey(task);
      const result = await publisher.dispatch({ taskKey, body: JSON.stringify(task) });
      return { task, taskKey, result };
    }),
  );
}

/** One line per dispatch: `dispatched`, `pending` or `done`. */
export function describeDispatch({ taskKey, result }: ScheduledReport): string {
  if (result.dispatched) {
    return `${taskKey}: dispatched (message ${result.messageId}, fencing token ${result.fencingToken})`;
  }
  if (result.reason === 'pending') {
    return `${taskKey}: pending (already queued or running; free again in ${Math.ceil(result.retryAfterMs / 1000)} s at most)`;
  }
  return `${taskKey}: done (already ran)`;
}

function yesterday(): string {
  return new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
}

async function main(): Promise<void> {
  const queueUrl = process.env.SQS_QUEUE_URL?.trim();
  const redisUrls = (process.env.REDIS_URLS ?? '')
    .split(',')
    .map((url) => url.trim())
    .filter((url) => url.length > 0);
  const handoffSecret = process.env.HANDOFF_SECRET;
  if (!queueUrl || redisUrls.length === 0 || !handoffSecret) {
    throw new Error(
      'SQS_QUEUE_URL, REDIS_URLS and HANDOFF_SECRET are required (see examples/scheduler/README.md)',
    );
  }
  const customers = (process.env.CUSTOMERS ?? 'acme,globex,initech').split(',').filter((c) => c.length > 0);
  const everySec = Number(process.env.EVERY_SEC ?? 0);

  const endpoint = process.env.AWS_ENDPOINT_URL_SQS?.trim();
  const sqs = new SQSClient(endpoint ? { endpoint } : {});
  const redlock = new Redlock(redisUrls.map((url) => new Redis(url, { maxRetriesPerRequest: 1 })));
  const publisher = new Publisher({ sqs, queueUrl, redlock, handoffSecret });
  const stop = new AbortController();
  process.once('SIGINT', () => stop.abort());
  process.once('SIGTERM', () => stop.abort());
  try {
    do {
      const date = process.env.REPORT_DATE ?? yesterday();
      for (const scheduled of await dispatchNightlyReports(publisher, customers, date)) {
        console.log(describeDispatch(scheduled));
      }
      if (everySec > 0) await sleep(everySec * 1000, undefined, { signal: stop.signal }).catch(() => {});
    } while (everySec > 0 && !stop.signal.aborted);
  } finally {
    sqs.destroy();
    await redlock.quit();
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
