/**
 * The orders example (../orders) as an SQS-triggered Lambda function: the same handler and store, run by
 * `createLambdaHandler` instead of a long-running Worker. Export `handler` (the Lambda handler setting is
 * `index.handler` once bundled).
 *
 * Everything below runs at module scope, once per container (at its cold start): the Redis connections
 * of the lock quorum and of the store are made there and reused by every invocation of the container.
 *
 * Environment:
 *   REDIS_URLS     comma-separated redis:// URLs, one per independent node of the lock quorum (required)
 *   STORE_URL      redis:// URL of the orders store (required)
 *   SQS_QUEUE_URL  the queue's URL; only needed where it cannot be derived from the records' ARN
 *                  (LocalStack, fauxqs). On AWS leave it out.
 *   AWS_ENDPOINT_URL_SQS  the SQS endpoint (LocalStack, fauxqs). On AWS leave it out.
 *   LOG_LEVEL      winston level of the JSON logs (default info)
 */
import { SQSClient } from '@aws-sdk/client-sqs';
import { Redis, type RedisOptions } from 'ioredis';
import { createLambdaHandler, Redlock } from 'sqs-redlock-worker';
import { ChargeOrderHandler } from '../orders/handler.ts';
import { OrdersStore } from '../orders/store.ts';

/** Fail a command fast while a node is down rather than queue it; keep reconnecting. */
const REDIS_OPTIONS: RedisOptions = {
  maxRetriesPerRequest: 1,
  connectTimeout: 5_000,
  retryStrategy: (times) => Math.min(50 * times, 1_000),
};

function required(name: string): string {
  const value = process.env[name]?.trim();
  if (!value) throw new Error(`${name} is required (see examples/lambda/README.md)`);
  return value;
}

function connect(url: string): Redis {
  const client = new Redis(url, REDIS_OPTIONS);
  // A node that is down fails the commands sent to it (the quorum decides); don't crash on the event.
  client.on('error', () => {});
  return client;
}

const redisUrls = required('REDIS_URLS')
  .split(',')
  .map((url) => url.trim())
  .filter((url) => url.length > 0);

/** The lock quorum: one client per independent Redis node. */
export const redlock = new Redlock(redisUrls.map(connect));
const storeClient = connect(required('STORE_URL'));
/** For visibility backoffs, dead-lettering and the RedrivePolicy; deletes are the event source mapping's. */
const sqsEndpoint = process.env.AWS_ENDPOINT_URL_SQS?.trim();
const sqs = new SQSClient(sqsEndpoint ? { endpoint: sqsEndpoint } : {});

/**
 * The Lambda handler. It answers a partial batch response: the event source mapping must have
 * `FunctionResponseTypes: ["ReportBatchItemFailures"]`, or Lambda deletes the whole batch whatever it says.
 */
export const handler = createLambdaHandler(new ChargeOrderHandler(new OrdersStore(storeClient)), {
  redlock,
  sqs,
  queueUrl: process.env.SQS_QUEUE_URL?.trim() || undefined,
});

/** Closes the connections: for local runs and tests (a Lambda container is frozen, never closed). */
export async function close(): Promise<void> {
  sqs.destroy();
  await redlock.quit();
  await storeClient.quit().catch(() => storeClient.disconnect());
}
