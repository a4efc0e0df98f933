/** The SQS side of every command: the client, call deadlines, the dead-letter queue and errors. */
import { GetQueueAttributesCommand, type QueueAttributeName, SQSClient } from '@aws-sdk/client-sqs';
import { ConfigError } from '../errors.ts';
import { discoverDeadLetterQueueUrl } from '../runtime/sqs-actions.ts';
import { COMMAND, type Env, parseSqsConfig, type SqsConfig } from './env.ts';
import { type CliIo, type Interrupt, onInterrupt } from './io.ts';

/** Deadline of one SQS or Redis call of the operator commands, unless `--timeout` says otherwise. */
export const DEFAULT_CALL_TIMEOUT_MS = 5_000;

/** The SQS client: region and endpoint from the parsed config when given, the SDK's chain otherwise. */
export function newSqsClient(config: Pick<SqsConfig, 'region' | 'sqsEndpoint'>): SQSClient {
  return new SQSClient({
    ...(config.region === undefined ? {} : { region: config.region }),
    ...(config.sqsEndpoint === undefined ? {} : { endpoint: config.sqsEndpoint }),
  });
}

/** Fails, naming AWS_REGION, when neither the environment nor the AWS config gives a region. */
export async function checkRegion(sqs: SQSClient): Promise<string> {
  try {
    return await sqs.config.region();
  } catch (error) {
    throw new ConfigError(
      'AWS_REGION',
      undefined,
      'must be set: neither the queue URL nor the AWS config (AWS_PROFILE, ~/.aws/config) names a region',
      { cause: error },
    );
  }
}

/** The options of one SDK call that must end within `timeoutMs`. */
export function within(timeoutMs: number): { abortSignal: AbortSignal } {
  return { abortSignal: AbortSignal.timeout(timeoutMs) };
}

/** `AccessDenied: User ... is not authorized` from an SDK error (or whatever was thrown). */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  // An aborted call's message is the SDK's "Request aborted": say it was ours.
  if (error.name === 'AbortError' || error.name === 'TimeoutError')
    return `no answer in time (${error.name})`;
  return error.message && error.message !== error.name ? `${error.name}: ${error.message}` : error.name;
}

/** An SQS refusal for the caller's permissions (IAM, a queue policy, KMS). */
export function isAccessDenied(error: unknown): boolean {
  return (
    error instanceof Error &&
    /AccessDenied|NotAuthorized|AuthorizationError|KmsAccessDenied/i.test(error.name)
  );
}

/**
 * An endpoint without the action: fauxqs answers InvalidAction, local-aws-sqs and LocalStack
 * UnsupportedOperation, AWS's JSON protocol UnknownOperationException.
 */
export function isMissingAction(error: unknown): boolean {
  return (
    error instanceof Error &&
    /^(InvalidAction|UnsupportedOperation|UnknownOperation(Exception)?|NotImplemented)$/.test(error.name)
  );
}

/** GetQueueAttributes of `names`, within `timeoutMs`. */
export async function queueAttributes(
  sqs: SQSClient,
  queueUrl: string,
  names: readonly QueueAttributeName[],
  timeoutMs: number,
): Promise<Partial<Record<QueueAttributeName, string>>> {
  const { Attributes } = await sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: [...names] }),
    within(timeoutMs),
  );
  return Attributes ?? {};
}

/**
 * The dead-letter queue the `dlq` commands work on: DLQ_URL, else the one the RedrivePolicy of
 * SQS_QUEUE_URL names. A ConfigError naming the variable when there is none.
 */
export async function deadLetterQueueOf(
  sqs: SQSClient,
  config: SqsConfig,
  timeoutMs: number,
): Promise<string> {
  const { deadLetterQueueUrl, queueUrl } = config;
  if (typeof deadLetterQueueUrl === 'string') return deadLetterQueueUrl;
  if (deadLetterQueueUrl === false) {
    throw new ConfigError(
      'DLQ_URL',
      'none',
      'names no dead-letter queue: set it to the queue URL, or unset it',
    );
  }
  if (queueUrl === undefined) {
    throw new ConfigError(
      'SQS_QUEUE_URL',
      undefined,
      'or DLQ_URL must be set: the dead-letter queue is DLQ_URL, or the one in the RedrivePolicy of SQS_QUEUE_URL',
    );
  }
  const found = await discoverDeadLetterQueueUrl(sqs, queueUrl, { timeoutMs });
  if (found === undefined) {
    throw new ConfigError(
      'SQS_QUEUE_URL',
      queueUrl,
      'has no RedrivePolicy naming a dead-letter queue: set DLQ_URL',
    );
  }
  return found;
}

/** What the `dlq` commands work with: the parsed SQS variables, a client, and the dead-letter queue. */
export interface DeadLetterSession {
  readonly config: SqsConfig;
  readonly sqs: SQSClient;
  readonly dlqUrl: string;
  /** The first SIGINT or SIGTERM, checked between calls. */
  readonly interrupt: Interrupt;
}

/**
 * Runs a `dlq` command: parses the SQS variables, makes the client (or takes `sqs`, left open), checks
 * the region, finds the dead-letter queue, and hands them to `work` under SIGINT and SIGTERM
 * listeners. Resolves `work`'s exit code, or 1 after writing what went wrong (a ConfigError names
 * the variable at fault) to stderr.
 */
export async function onDeadLetterQueue(
  command: string,
  env: Env,
  io: CliIo,
  timeoutMs: number,
  sqs: SQSClient | undefined,
  work: (session: DeadLetterSession) => Promise<number>,
): Promise<number> {
  const interrupt = onInterrupt();
  let client = sqs;
  try {
    const config = parseSqsConfig(env, { queueRequired: false });
    client ??= newSqsClient(config);
    await checkRegion(client);
    const dlqUrl = await deadLetterQueueOf(client, config, timeoutMs);
    return await work({ config, sqs: client, dlqUrl, interrupt });
  } catch (error) {
    io.stderr(`${COMMAND} ${command}: ${describeError(error)}\n`);
    return 1;
  } finally {
    if (client !== sqs) client?.destroy();
    interrupt.uninstall();
  }
}
