/**
 * `sqs-redlock-worker check [handler-module]`: the operator's preflight. Reads the configuration of
 * `run`, then asks SQS and every Redis node what the worker will need of them, each call bounded by
 * `--timeout`, and prints one finding per check. It consumes nothing: a probe receive asks for
 * visibility 0, and the delete and visibility permissions are shown with an invalid receipt handle.
 */
import {
  ChangeMessageVisibilityCommand,
  DeleteMessageCommand,
  type Message,
  ReceiveMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { Redis } from 'ioredis';
import { quorumOf } from '../lock/quorum.ts';
import { Redlock } from '../lock/redlock.ts';
import { createLogger } from '../observability/logger.ts';
import { discoverDeadLetterQueueUrl } from '../runtime/sqs-actions.ts';
import { type CliConfig, COMMAND, type Env, nodeLabel, parseConfig } from './env.ts';
import { loadHandler } from './handler-module.ts';
import { type CliIo, table } from './io.ts';
import { checkRegion, describeError, isAccessDenied, newSqsClient, queueAttributes, within } from './sqs.ts';

export type FindingStatus = 'ok' | 'warn' | 'fail';

/** One row of the report. */
export interface Finding {
  readonly status: FindingStatus;
  /** What was checked: `SQS receive`, `redis 10.0.0.1:6379 persistence`, ... */
  readonly check: string;
  readonly detail: string;
}

export interface CheckOptions {
  /** Deadline of every SQS and Redis call, in ms. */
  readonly timeoutMs: number;
  /** Print the findings as JSON instead of a table. */
  readonly json: boolean;
  /** Also load this handler module, as `run` would. */
  readonly handlerModule?: string | undefined;
}

/** A receipt handle no message has: SQS refuses it, but only after it checked the permission. */
export const PROBE_RECEIPT_HANDLE = 'sqs-redlock-worker-check-not-a-receipt-handle';

/** Clock offsets between the nodes above this are reported (as a sign of a node without NTP). */
export const CLOCK_SKEW_WARN_MS = 1_000;

/** Runs every check; resolves 0 when nothing failed (warnings allowed), 1 otherwise. */
export async function checkCommand(env: Env, io: CliIo, options: CheckOptions): Promise<number> {
  const findings: Finding[] = [];
  const add = (status: FindingStatus, check: string, detail: string): void => {
    findings.push({ status, check, detail });
  };
  await runChecks(env, io, options, add);
  const count = (status: FindingStatus): number => findings.filter((f) => f.status === status).length;
  const failed = count('fail');
  if (options.json) {
    io.stdout(`${JSON.stringify({ ok: failed === 0, findings })}\n`);
  } else {
    io.stdout(table([['STATUS', 'CHECK', 'DETAIL'], ...findings.map((f) => [f.status, f.check, f.detail])]));
    const totals = `${count('ok')} ok, ${count('warn')} warn, ${failed} fail`;
    io.stdout(
      failed === 0
        ? `\n${COMMAND} check: the worker can run (${totals}).\n`
        : `\n${COMMAND} check: ${failed} ${failed === 1 ? 'check' : 'checks'} failed (${totals}).\n`,
    );
  }
  return failed === 0 ? 0 : 1;
}

type Add = (status: FindingStatus, check: string, detail: string) => void;

async function runChecks(env: Env, io: CliIo, options: CheckOptions, add: Add): Promise<void> {
  let config: CliConfig;
  try {
    config = parseConfig(env);
  } catch (error) {
    add('fail', 'configuration', describeError(error));
    return;
  }
  const n = config.redisUrls.length;
  add(
    'ok',
    'configuration',
    `queue ${config.queueUrl}, ${n} Redis ${n === 1 ? 'node' : 'nodes'}, lock TTL ${config.lockTtlMs} ms`,
  );
  if (options.handlerModule !== undefined) {
    try {
      const handler = await loadHandler(options.handlerModule, io.cwd);
      add('ok', 'handler module', `${options.handlerModule}: ${handler.constructor?.name ?? 'a handler'}`);
    } catch (error) {
      add('fail', 'handler module', describeError(error));
    }
  }
  const sqs = newSqsClient(config);
  try {
    await checkSqs(sqs, config, options.timeoutMs, add);
  } finally {
    sqs.destroy();
  }
  await checkRedis(config, options.timeoutMs, add);
}

// ---- SQS ----

async function checkSqs(sqs: SQSClient, config: CliConfig, timeoutMs: number, add: Add): Promise<void> {
  try {
    add('ok', 'AWS region', await checkRegion(sqs));
  } catch (error) {
    add('fail', 'AWS region', describeError(error));
    return;
  }
  const queueUrl = config.queueUrl;
  let attributes: Awaited<ReturnType<typeof queueAttributes>>;
  try {
    attributes = await queueAttributes(sqs, queueUrl, ['All'], timeoutMs);
  } catch (error) {
    add('fail', 'SQS queue', `GetQueueAttributes: ${describeError(error)}`);
    return;
  }
  add(
    'ok',
    'SQS queue',
    `reachable: ${attributes.ApproximateNumberOfMessages ?? '?'} waiting, ` +
      `${attributes.ApproximateNumberOfMessagesNotVisible ?? '?'} in flight, ` +
      `${attributes.ApproximateNumberOfMessagesDelayed ?? '?'} delayed`,
  );

  // Receive: the one call that can meet a message. Visibility 0 leaves it visible to the workers, but
  // its receive count goes up: with maxReceiveCount 1 that receive is its only one, and the worker's
  // would find it moved to the dead-letter queue, unrun. Not probed there.
  let received: Message | undefined;
  const maxReceiveCount = Number(parseRedrivePolicy(attributes.RedrivePolicy)?.maxReceiveCount);
  if (maxReceiveCount <= 1) {
    add(
      'warn',
      'SQS receive',
      `not shown: with maxReceiveCount ${maxReceiveCount}, a probe receive would send the message it meets to the dead-letter queue unrun`,
    );
  } else {
    try {
      const out = await sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: queueUrl,
          MaxNumberOfMessages: 1,
          VisibilityTimeout: 0,
          WaitTimeSeconds: 0,
        }),
        within(timeoutMs),
      );
      received = out.Messages?.[0];
      add(
        'ok',
        'SQS receive',
        received
          ? 'allowed: one message received with VisibilityTimeout 0 (visible again at once; its receive count went up by one)'
          : 'allowed (no message was waiting)',
      );
    } catch (error) {
      add('fail', 'SQS receive', `ReceiveMessage: ${describeError(error)}`);
    }
  }
  // With the message's own handle when one came (and visibility 0 again, to be sure); without, with
  // one SQS refuses after the permission check. DeleteMessage never gets a real handle.
  await permission(add, 'SQS change visibility', received !== undefined, () =>
    sqs.send(
      new ChangeMessageVisibilityCommand({
        QueueUrl: queueUrl,
        ReceiptHandle: received?.ReceiptHandle ?? PROBE_RECEIPT_HANDLE,
        VisibilityTimeout: 0,
      }),
      within(timeoutMs),
    ),
  );
  await permission(add, 'SQS delete', false, () =>
    sqs.send(
      new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: PROBE_RECEIPT_HANDLE }),
      within(timeoutMs),
    ),
  );

  await checkDeadLetter(sqs, config, attributes, timeoutMs, add);
}

/**
 * Classifies a permission probe: AccessDenied fails; a refused receipt handle shows the permission
 * (SQS authorizes the call before it looks at the handle); no answer fails; anything else warns.
 */
async function permission(
  add: Add,
  check: string,
  realHandle: boolean,
  call: () => Promise<unknown>,
): Promise<void> {
  try {
    await call();
    add('ok', check, 'allowed');
  } catch (error) {
    const name = error instanceof Error ? error.name : '';
    if (isAccessDenied(error)) add('fail', check, describeError(error));
    else if (/ReceiptHandleIsInvalid|MessageNotInflight|InvalidParameterValue/.test(name)) {
      add(
        'ok',
        check,
        realHandle
          ? `allowed (${name}: the message was taken meanwhile)`
          : `allowed (shown with an invalid receipt handle, refused with ${name}: no message touched)`,
      );
    } else if (name === 'AbortError' || name === 'TimeoutError') add('fail', check, describeError(error));
    else add('warn', check, `not shown: ${describeError(error)}`);
  }
}

async function checkDeadLetter(
  sqs: SQSClient,
  config: CliConfig,
  attributes: Awaited<ReturnType<typeof queueAttributes>>,
  timeoutMs: number,
  add: Add,
): Promise<void> {
  const policy = parseRedrivePolicy(attributes.RedrivePolicy);
  const configured = config.deadLetterQueueUrl;
  if (policy) {
    add(
      'ok',
      'RedrivePolicy',
      `maxReceiveCount ${policy.maxReceiveCount}, dead-letter queue ${policy.target}`,
    );
  } else if (configured === undefined) {
    add(
      'fail',
      'RedrivePolicy',
      'none: a message that keeps failing is retried forever, and poison has no dead-letter queue ' +
        '(set a RedrivePolicy, or DLQ_URL)',
    );
  } else {
    add(
      'warn',
      'RedrivePolicy',
      `none: a message that keeps failing is retried forever${configured === false ? ' (DLQ_URL=none)' : ' (poison goes to DLQ_URL)'}`,
    );
  }

  let dlqUrl: string | undefined;
  if (typeof configured === 'string') dlqUrl = configured;
  else if (configured === undefined && policy) {
    try {
      dlqUrl = await discoverDeadLetterQueueUrl(sqs, config.queueUrl, { timeoutMs });
    } catch (error) {
      add('fail', 'dead-letter queue', `${policy.target}: GetQueueUrl: ${describeError(error)}`);
      return;
    }
  }
  if (dlqUrl === undefined) return;
  try {
    const dlq = await queueAttributes(sqs, dlqUrl, ['ApproximateNumberOfMessages', 'FifoQueue'], timeoutMs);
    const fifo = attributes.FifoQueue === 'true';
    if ((dlq.FifoQueue === 'true') !== fifo) {
      add(
        'fail',
        'dead-letter queue',
        `${dlqUrl}: must be ${fifo ? 'a FIFO' : 'a standard'} queue, as the queue is`,
      );
      return;
    }
    add(
      'ok',
      'dead-letter queue',
      `${dlqUrl}: ${dlq.ApproximateNumberOfMessages ?? '?'} messages; SendMessage permission not checked ` +
        '(it cannot be shown without sending a message)',
    );
  } catch (error) {
    add('fail', 'dead-letter queue', `${dlqUrl}: GetQueueAttributes: ${describeError(error)}`);
  }
}

function parseRedrivePolicy(
  text: string | undefined,
): { target: string; maxReceiveCount: string } | undefined {
  if (!text) return undefined;
  try {
    const policy = JSON.parse(text) as { deadLetterTargetArn?: unknown; maxReceiveCount?: unknown };
    if (typeof policy.deadLetterTargetArn !== 'string') return undefined;
    return { target: policy.deadLetterTargetArn, maxReceiveCount: String(policy.maxReceiveCount) };
  } catch {
    return undefined;
  }
}

// ---- Redis ----

/** What one node answered. */
export interface NodeReport {
  readonly label: string;
  readonly client: Redis;
  /** Why it did not answer PING; absent when it did. */
  readonly error?: string;
  readonly pingMs?: number;
  readonly version?: string;
  /** `appendonly` and `appendfsync`, or why CONFIG GET gave no answer. */
  readonly persistence?: { appendonly: string; appendfsync: string } | { unknown: string };
  /** The node's clock less this host's at the middle of the TIME call, in ms, and that call's round trip. */
  readonly clock?: { offsetMs: number; rttMs: number };
}

async function checkRedis(config: CliConfig, timeoutMs: number, add: Add): Promise<void> {
  const reports = await Promise.all(config.redisUrls.map((url) => probeNode(url, timeoutMs)));
  try {
    for (const r of reports) {
      if (r.error !== undefined) {
        add('fail', `redis ${r.label}`, `no answer: ${r.error}`);
        continue;
      }
      add(
        'ok',
        `redis ${r.label}`,
        `PONG in ${r.pingMs?.toFixed(1)} ms, Redis ${r.version ?? 'version unknown'}`,
      );
      const finding = persistenceFinding(r.persistence);
      add(finding.status, `redis ${r.label} persistence`, finding.detail);
    }
    const skew = clockSkewFinding(reports);
    if (skew) add(skew.status, 'clock skew', skew.detail);
    await checkQuorum(reports, config, timeoutMs, add);
  } finally {
    // Those that failed were disconnected already (a second disconnect would arm a 2 s timer).
    for (const r of reports) if (r.error === undefined) r.client.disconnect();
  }
}

/** PING, INFO server, CONFIG GET and TIME, each within `timeoutMs`; the client is left open. */
async function probeNode(url: string, timeoutMs: number): Promise<NodeReport> {
  const label = nodeLabel(url);
  // No retries and no reconnects: a preflight reports a node as it is now.
  const client = new Redis(url, {
    lazyConnect: true,
    connectionName: `${COMMAND}-check`,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
  });
  client.on('error', () => undefined);
  try {
    // The ready check (INFO) can hang on a paused node: bounded here too.
    await bounded(client.connect(), timeoutMs, 'connect');
    const started = performance.now();
    await bounded(client.ping(), timeoutMs, 'PING');
    const pingMs = performance.now() - started;
    const info = await bounded(client.info('server'), timeoutMs, 'INFO');
    const version = /^redis_version:(.+)$/m.exec(info)?.[1]?.trim();
    let persistence: NodeReport['persistence'];
    try {
      const [, appendonly] = (await bounded(
        client.config('GET', 'appendonly'),
        timeoutMs,
        'CONFIG GET',
      )) as string[];
      const [, appendfsync] = (await bounded(
        client.config('GET', 'appendfsync'),
        timeoutMs,
        'CONFIG GET',
      )) as string[];
      persistence =
        appendonly === undefined || appendfsync === undefined
          ? { unknown: 'CONFIG GET answered nothing' }
          : { appendonly, appendfsync };
    } catch (error) {
      // CONFIG is often renamed or denied by an ACL, or absent on a managed Redis.
      persistence = {
        unknown: `CONFIG GET refused (${error instanceof Error ? error.message : String(error)})`,
      };
    }
    const before = Date.now();
    const [seconds, micros] = await bounded(client.time(), timeoutMs, 'TIME');
    const after = Date.now();
    const nodeMs = Number(seconds) * 1_000 + Number(micros) / 1_000;
    const clock = { offsetMs: nodeMs - (before + after) / 2, rttMs: after - before };
    return {
      label,
      client,
      pingMs,
      ...(version === undefined ? {} : { version }),
      persistence,
      clock,
    };
  } catch (error) {
    // Ended, so that the quorum probe counts it as down at once; and its socket destroyed, not ended:
    // a paused node never answers the FIN, and the socket would keep the process alive.
    client.disconnect();
    (client.stream as Redis['stream'] | undefined)?.destroy();
    return { label, client, error: error instanceof Error ? error.message : String(error) };
  }
}

/** Without AOF, or without `appendfsync always`, a restarted node can forget locks and counters. */
export function persistenceFinding(persistence: NodeReport['persistence']): {
  status: FindingStatus;
  detail: string;
} {
  if (persistence === undefined || 'unknown' in persistence) {
    return { status: 'warn', detail: `unknown: ${persistence?.unknown ?? 'not asked'}` };
  }
  const { appendonly, appendfsync } = persistence;
  if (appendonly !== 'yes') {
    return {
      status: 'warn',
      detail: `appendonly ${appendonly}: a restart loses the node's locks, fencing counters and markers (fencing weakens)`,
    };
  }
  if (appendfsync !== 'always') {
    return {
      status: 'warn',
      detail: `appendonly yes, appendfsync ${appendfsync}: a crash can lose the last writes (fencing weakens)`,
    };
  }
  return { status: 'ok', detail: 'appendonly yes, appendfsync always' };
}

/**
 * The spread of the nodes' clocks (TIME), within the round trips' uncertainty. Redlock needs clocks
 * that run at the same rate, not set alike; a large offset still suggests a node without NTP.
 */
export function clockSkewFinding(
  reports: readonly Pick<NodeReport, 'label' | 'clock'>[],
): { status: FindingStatus; detail: string } | undefined {
  const clocks = reports.flatMap((r) => (r.clock ? [{ label: r.label, ...r.clock }] : []));
  if (clocks.length === 0) return undefined;
  const offsets = clocks.map((c) => c.offsetMs);
  const spread = Math.max(...offsets) - Math.min(...offsets);
  const uncertainty = Math.max(...clocks.map((c) => c.rttMs)) / 2;
  const host = Math.max(...offsets.map(Math.abs));
  const detail =
    `${Math.round(spread)} ms across ${clocks.length} ${clocks.length === 1 ? 'node' : 'nodes'} ` +
    `(±${Math.ceil(uncertainty)} ms); this host differs by up to ${Math.round(host)} ms`;
  return spread - uncertainty > CLOCK_SKEW_WARN_MS
    ? { status: 'warn', detail: `${detail}: are the nodes' clocks synchronized (NTP)?` }
    : { status: 'ok', detail };
}

/** Whether a quorum accepts writes, through the lock's own script path (Redlock.quorumStatus). */
async function checkQuorum(
  reports: readonly NodeReport[],
  config: CliConfig,
  timeoutMs: number,
  add: Add,
): Promise<void> {
  const n = reports.length;
  const quorum = quorumOf(n);
  const redlock = new Redlock(
    reports.map((r) => r.client),
    { ttlMs: config.lockTtlMs, connectTimeoutMs: timeoutMs, logger: createLogger({ silent: true }) },
  );
  // Bounded by the Redlock's command timeout; unreachable nodes' clients have ended and count as down.
  const status = await redlock.quorumStatus();
  const up = status.up.length;
  const summary = `${up} of ${n} ${n === 1 ? 'node accepts' : 'nodes accept'} writes, quorum ${quorum}`;
  const down = status.down.map((label) => `${label} (${status.errors?.[label] ?? 'down'})`).join(', ');
  if (!status.available) add('fail', 'Redis quorum', `${summary}: no lock can be granted; down: ${down}`);
  else if (n === 1)
    add('warn', 'Redis quorum', `${summary}: a single node is not fault tolerant (use 3 or 5)`);
  else if (n % 2 === 0)
    add(
      'warn',
      'Redis quorum',
      `${summary}: ${n} nodes tolerate no more failures than ${n - 1} (use 3 or 5)`,
    );
  else add('ok', 'Redis quorum', down ? `${summary}; down: ${down}` : summary);
}

/** `promise`, or a rejection naming `what` after `ms`. */
function bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}
