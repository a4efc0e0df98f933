import { CLI_VARIABLES } from '../../src/cli/env.ts';
import type { RedisNodes } from './redis-nodes.ts';
import type { SqsEnv } from './sqs.ts';

/** Variables besides the CLI's own that would change what a child CLI process talks to. */
const AWS_OVERRIDES = [
  'AWS_ENDPOINT_URL',
  'AWS_PROFILE',
  'AWS_DEFAULT_REGION',
  'AWS_CONFIG_FILE',
  'AWS_SHARED_CREDENTIALS_FILE',
  'AWS_SESSION_TOKEN',
];

/**
 * This process's environment without any variable the CLI reads (nor `also`, nor names starting with
 * `dropPrefix`), so that a child process's own settings rule.
 */
export function inheritedEnv(
  options: { also?: readonly string[]; dropPrefix?: string } = {},
): Record<string, string> {
  const ours = new Set([...CLI_VARIABLES.map((v) => v.name), ...AWS_OVERRIDES, ...(options.also ?? [])]);
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined || ours.has(key)) continue;
    if (options.dropPrefix && key.startsWith(options.dropPrefix)) continue;
    env[key] = value;
  }
  return env;
}

/** What a CLI process needs to reach the harness: the queue, the Redis nodes, fauxqs and its test credentials. */
export function cliEnv(redis: RedisNodes, sqs: SqsEnv, queueUrl: string): Record<string, string> {
  return {
    SQS_QUEUE_URL: queueUrl,
    REDIS_URLS: redis.nodes.map((n) => n.url).join(','),
    AWS_REGION: 'us-east-1',
    AWS_ENDPOINT_URL_SQS: sqs.endpoint,
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
  };
}
