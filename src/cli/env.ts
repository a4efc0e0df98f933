/**
 * The environment every command reads: the variables (the CLI_VARIABLES table, in the order of
 * `--help`), their defaults, and one parser that checks them, naming the variable and the value.
 */
import { isIP } from 'node:net';
import { ConfigError } from '../errors.ts';
import { REDLOCK_DEFAULTS } from '../lock/options.ts';
import { maxCompletionWindowMs, WORKER_DEFAULTS } from '../runtime/options.ts';
import { checkHandoffSecret, HANDOFF_SECRET_MIN_LENGTH } from '../validate.ts';

export const COMMAND = 'sqs-redlock-worker';

/** winston's npm levels, and `silent` (no logs at all). */
export const LOG_LEVELS = ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The command's configuration, parsed from the environment by {@link parseConfig}. */
export interface CliConfig {
  /** `SQS_QUEUE_URL` */
  readonly queueUrl: string;
  /** `REDIS_URLS`: one URL per independent node. */
  readonly redisUrls: readonly string[];
  /** `AWS_REGION`; when unset, the region of an AWS queue URL, else left to the SDK. */
  readonly region: string | undefined;
  /** `AWS_ENDPOINT_URL_SQS`; when unset, left to the SDK (which reads it too, and `AWS_ENDPOINT_URL`). */
  readonly sqsEndpoint: string | undefined;
  /** `LOCK_TTL_MS` */
  readonly lockTtlMs: number;
  /** `BATCH_SIZE` */
  readonly batchSize: number;
  /** `CONCURRENCY` */
  readonly concurrency: number;
  /** `VISIBILITY_TIMEOUT_SEC` */
  readonly visibilityTimeoutSec: number;
  /** `EXTEND_VISIBILITY` */
  readonly extendVisibility: boolean;
  /** `COMPLETION_WINDOW_MS` */
  readonly completionWindowMs: number;
  /** `SHUTDOWN_TIMEOUT_MS` */
  readonly shutdownTimeoutMs: number;
  /** `DLQ_URL`: a URL, `false` (`none`), or undefined (discovered from the RedrivePolicy). */
  readonly deadLetterQueueUrl: string | false | undefined;
  /** `HANDOFF_SECRET`: the Publishers' secret; undefined: handoffs are ignored. Never logged. */
  readonly handoffSecret: string | undefined;
  /** `LOG_LEVEL` */
  readonly logLevel: LogLevel;
  /** `METRICS_PORT`; undefined: no health and metrics server. */
  readonly metricsPort: number | undefined;
  /** `METRICS_HOST`: the address the server binds; undefined: every interface. */
  readonly metricsHost: string | undefined;
}

/**
 * What the shutdown may take past SHUTDOWN_TIMEOUT_MS (the drain): the aborted handlers' grace, the
 * handler's close(), closing the Redis and SQS clients and the server. Past it the process exits 1.
 */
export const SHUTDOWN_SLACK_MS = 2_000;

/** Defaults of the optional variables. */
export const CLI_DEFAULTS = {
  LOCK_TTL_MS: REDLOCK_DEFAULTS.ttlMs,
  BATCH_SIZE: WORKER_DEFAULTS.batchSize,
  CONCURRENCY: WORKER_DEFAULTS.concurrency,
  VISIBILITY_TIMEOUT_SEC: WORKER_DEFAULTS.visibilityTimeoutSec,
  EXTEND_VISIBILITY: WORKER_DEFAULTS.extendVisibility,
  COMPLETION_WINDOW_MS: WORKER_DEFAULTS.completionWindowMs,
  // ECS sends SIGKILL 30 s after SIGTERM by default (stopTimeout): the drain gets 25 s, the rest of
  // the shutdown SHUTDOWN_SLACK_MS, the bin's safety exit 2 s more: 29 s at worst.
  SHUTDOWN_TIMEOUT_MS: 25_000,
  LOG_LEVEL: 'info',
} as const satisfies Record<string, number | boolean | LogLevel>;

/** Every variable the command reads, with its default and meaning, in the order of `--help`. */
export const CLI_VARIABLES: readonly { name: string; default: string; description: string }[] = [
  {
    name: 'SQS_QUEUE_URL',
    default: '(required)',
    description: 'URL of the queue to consume. A URL ending in .fifo is a FIFO queue.',
  },
  {
    name: 'REDIS_URLS',
    default: '(required)',
    description:
      'Comma-separated redis:// or rediss:// URLs, one per independent Redis node of the lock quorum (use 3 or 5).',
  },
  {
    name: 'AWS_REGION',
    default: '(region of an AWS queue URL, else the SDK default)',
    description: 'AWS region of the queue.',
  },
  {
    name: 'AWS_ENDPOINT_URL_SQS',
    default: '(AWS)',
    description: "SQS endpoint override, the SDK's standard variable: LocalStack, fauxqs, a VPC endpoint.",
  },
  {
    name: 'LOCK_TTL_MS',
    default: String(CLI_DEFAULTS.LOCK_TTL_MS),
    description:
      'Lock TTL on each Redis node, in ms (2000 to 3600000). Locks are extended while handlers run; it bounds how long a crashed worker blocks a message.',
  },
  {
    name: 'BATCH_SIZE',
    default: String(CLI_DEFAULTS.BATCH_SIZE),
    description: 'Messages per ReceiveMessage call (1 to 10); one lock round trip per Redis node per batch.',
  },
  {
    name: 'CONCURRENCY',
    default: String(CLI_DEFAULTS.CONCURRENCY),
    description: 'Batches processed at once, one poller each (1 to 100).',
  },
  {
    name: 'VISIBILITY_TIMEOUT_SEC',
    default: String(CLI_DEFAULTS.VISIBILITY_TIMEOUT_SEC),
    description:
      'Visibility timeout requested on each receive, in seconds (1 to 43200). With EXTEND_VISIBILITY, the heartbeat keeps extending it while the handler runs.',
  },
  {
    name: 'EXTEND_VISIBILITY',
    default: String(CLI_DEFAULTS.EXTEND_VISIBILITY),
    description:
      "'true' or 'false': extend the visibility of in-flight messages on every heartbeat. 'false' lets SQS redeliver a message while it is handled; the lock still keeps the second delivery from running.",
  },
  {
    name: 'COMPLETION_WINDOW_MS',
    default: String(CLI_DEFAULTS.COMPLETION_WINDOW_MS),
    description:
      "How long a finished message waits for others of its batch, in ms, so they share one lock completion and one delete (0 to a third of LOCK_TTL_MS). The batch's last message never waits.",
  },
  {
    name: 'SHUTDOWN_TIMEOUT_MS',
    default: String(CLI_DEFAULTS.SHUTDOWN_TIMEOUT_MS),
    description:
      "On SIGTERM or SIGINT, how long in-flight handlers may finish before they are aborted, in ms. Keep it a few seconds below the platform's kill delay (ECS stopTimeout: 30 s by default).",
  },
  {
    name: 'DLQ_URL',
    default: '(from the RedrivePolicy)',
    description: "Dead-letter queue URL for poison messages; 'none' leaves them to the queue's own redrive.",
  },
  {
    name: 'HANDOFF_SECRET',
    default: '(none: handoffs are ignored)',
    description: `The secret the Publishers sign lock handoffs with (at least ${HANDOFF_SECRET_MIN_LENGTH} characters, used as is, never logged). A handoff whose signature does not verify is ignored: the message runs under the handler's lockKey, with a warning.`,
  },
  {
    name: 'LOG_LEVEL',
    default: CLI_DEFAULTS.LOG_LEVEL,
    description: `Log level of the JSON logs on stdout: ${LOG_LEVELS.join(', ')}.`,
  },
  {
    name: 'METRICS_PORT',
    default: '(no server)',
    description:
      'Port of the HTTP server for operators (0: any free port): /metrics (Prometheus), /healthz (alive: the container health check), /readyz (ready: polling, receives answer, a Redis quorum accepts writes). /metrics and /readyz name the Redis nodes (host:port).',
  },
  {
    name: 'METRICS_HOST',
    default: '(every interface)',
    description:
      "Address the HTTP server binds, like 127.0.0.1 or the task's private IP: keep /metrics and /readyz where only operators reach them.",
  },
];

/** An environment: `process.env`, or a test's. */
export type Env = Readonly<Record<string, string | undefined>>;

/** The SQS side of the configuration: all that the `dlq` commands read. */
export interface SqsConfig {
  /** `SQS_QUEUE_URL`; undefined only where it was optional. */
  readonly queueUrl: string | undefined;
  readonly region: string | undefined;
  readonly sqsEndpoint: string | undefined;
  readonly deadLetterQueueUrl: string | false | undefined;
}

/** The value of `name`, trimmed; blank counts as unset. */
function reader(env: Env): (name: string) => string | undefined {
  return (name) => {
    const raw = env[name];
    return raw === undefined || raw.trim() === '' ? undefined : raw.trim();
  };
}

/** SQS_QUEUE_URL, checked when set. */
function readQueueUrl(env: Env): string | undefined {
  const queueUrl = reader(env)('SQS_QUEUE_URL');
  if (queueUrl === undefined) return undefined;
  return httpUrl('SQS_QUEUE_URL', queueUrl, 'must be an SQS queue URL (http:// or https://)');
}

function requireQueueUrl(env: Env): string {
  const queueUrl = readQueueUrl(env);
  if (queueUrl !== undefined) return queueUrl;
  throw new ConfigError('SQS_QUEUE_URL', env.SQS_QUEUE_URL, 'must be set to the URL of the queue to consume');
}

/** AWS_REGION, AWS_ENDPOINT_URL_SQS and DLQ_URL, in that order. */
function readSqsRest(env: Env, queueUrl: string | undefined): Omit<SqsConfig, 'queueUrl'> {
  const read = reader(env);
  const regionRaw = read('AWS_REGION');
  if (regionRaw !== undefined && !/^[a-z0-9]+(-[a-z0-9]+)*$/.test(regionRaw)) {
    throw new ConfigError('AWS_REGION', regionRaw, 'must be an AWS region name, like us-east-1');
  }
  const dlq = read('DLQ_URL');
  const region = regionRaw ?? regionOfQueueUrl(queueUrl ?? dlq ?? '');

  const sqsEndpoint = read('AWS_ENDPOINT_URL_SQS');
  if (sqsEndpoint !== undefined)
    httpUrl('AWS_ENDPOINT_URL_SQS', sqsEndpoint, 'must be an http:// or https:// URL');

  let deadLetterQueueUrl: string | false | undefined;
  if (dlq === undefined) deadLetterQueueUrl = undefined;
  else if (/^(none|false|off)$/i.test(dlq)) deadLetterQueueUrl = false;
  else deadLetterQueueUrl = httpUrl('DLQ_URL', dlq, "must be a queue URL (http:// or https://) or 'none'");
  return { region, sqsEndpoint, deadLetterQueueUrl };
}

/**
 * Reads and validates the SQS variables only (SQS_QUEUE_URL, AWS_REGION, AWS_ENDPOINT_URL_SQS,
 * DLQ_URL), as {@link parseConfig} does; SQS_QUEUE_URL may be left unset when `queueRequired` is false.
 */
export function parseSqsConfig(env: Env, options: { queueRequired: boolean }): SqsConfig {
  const queueUrl = options.queueRequired ? requireQueueUrl(env) : readQueueUrl(env);
  return { queueUrl, ...readSqsRest(env, queueUrl) };
}

/**
 * Reads and validates the configuration from `env`. Blank values count as unset. Throws a
 * {@link ConfigError} whose `option` is the variable's name and whose message quotes the value.
 */
export function parseConfig(env: Env): CliConfig {
  const read = reader(env);
  const queueUrl = requireQueueUrl(env);
  const redisUrls = parseRedisUrls(read('REDIS_URLS'), env.REDIS_URLS);
  const { region, sqsEndpoint, deadLetterQueueUrl } = readSqsRest(env, queueUrl);

  // Used as is, not trimmed: it must equal the Publishers' byte for byte.
  const rawSecret = env.HANDOFF_SECRET;
  const handoffSecret =
    rawSecret === undefined || rawSecret.trim() === ''
      ? undefined
      : checkHandoffSecret('HANDOFF_SECRET', rawSecret);

  const logLevel = (read('LOG_LEVEL') ?? CLI_DEFAULTS.LOG_LEVEL).toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError('LOG_LEVEL', env.LOG_LEVEL, `must be one of ${LOG_LEVELS.join(', ')}`);
  }

  const extend = read('EXTEND_VISIBILITY')?.toLowerCase();
  if (extend !== undefined && extend !== 'true' && extend !== 'false') {
    throw new ConfigError('EXTEND_VISIBILITY', env.EXTEND_VISIBILITY, "must be 'true' or 'false'");
  }

  const metricsPort = read('METRICS_PORT');
  const metricsHost = read('METRICS_HOST');
  if (metricsHost !== undefined) {
    if (
      isIP(metricsHost) === 0 &&
      !/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(metricsHost)
    ) {
      throw new ConfigError(
        'METRICS_HOST',
        env.METRICS_HOST,
        'must be an IP address or a host name, like 127.0.0.1',
      );
    }
    if (metricsPort === undefined) {
      throw new ConfigError(
        'METRICS_HOST',
        env.METRICS_HOST,
        'is set but METRICS_PORT is not: no server would listen',
      );
    }
  }
  const lockTtlMs = envInteger(env, 'LOCK_TTL_MS', CLI_DEFAULTS.LOCK_TTL_MS, 2_000, 3_600_000);
  const completionWindowMs = envInteger(
    env,
    'COMPLETION_WINDOW_MS',
    CLI_DEFAULTS.COMPLETION_WINDOW_MS,
    0,
    1_200_000,
  );
  if (completionWindowMs > maxCompletionWindowMs(lockTtlMs)) {
    throw new ConfigError(
      'COMPLETION_WINDOW_MS',
      env.COMPLETION_WINDOW_MS,
      `must be at most a third of LOCK_TTL_MS (${lockTtlMs})`,
    );
  }
  return {
    queueUrl,
    redisUrls,
    region,
    sqsEndpoint,
    lockTtlMs,
    batchSize: envInteger(env, 'BATCH_SIZE', CLI_DEFAULTS.BATCH_SIZE, 1, 10),
    concurrency: envInteger(env, 'CONCURRENCY', CLI_DEFAULTS.CONCURRENCY, 1, 100),
    visibilityTimeoutSec: envInteger(
      env,
      'VISIBILITY_TIMEOUT_SEC',
      CLI_DEFAULTS.VISIBILITY_TIMEOUT_SEC,
      1,
      43_200,
    ),
    extendVisibility: extend === undefined ? CLI_DEFAULTS.EXTEND_VISIBILITY : extend === 'true',
    completionWindowMs,
    shutdownTimeoutMs: envInteger(env, 'SHUTDOWN_TIMEOUT_MS', CLI_DEFAULTS.SHUTDOWN_TIMEOUT_MS, 0, 3_600_000),
    deadLetterQueueUrl,
    handoffSecret,
    logLevel: logLevel as LogLevel,
    metricsPort: metricsPort === undefined ? undefined : envInteger(env, 'METRICS_PORT', 0, 0, 65_535),
    metricsHost,
  };
}

function envInteger(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const text = raw.trim();
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new ConfigError(name, raw, `must be an integer between ${min} and ${max}`);
  }
  return value;
}

/** `value` if it is an http:// or https:// URL; a ConfigError naming `name` otherwise. */
export function httpUrl(name: string, value: string, rule: string): string {
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || /\s/.test(value)) {
    throw new ConfigError(name, value, rule);
  }
  return value;
}

function parseRedisUrls(value: string | undefined, raw: string | undefined): string[] {
  const rule = 'must list redis:// or rediss:// URLs, comma-separated, one per independent Redis node';
  if (value === undefined) throw new ConfigError('REDIS_URLS', raw, `${rule}; it is required`);
  const urls = value.split(',').map((u) => u.trim());
  urls.forEach((entry, i) => {
    let url: URL | undefined;
    try {
      url = new URL(entry);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'redis:' && url.protocol !== 'rediss:') || !url.hostname) {
      throw new ConfigError('REDIS_URLS', redactUrl(entry), `${rule}; entry ${i + 1} is not one`);
    }
  });
  const seen = new Set<string>();
  for (const url of urls) {
    const key = nodeLabel(url);
    if (seen.has(key)) {
      throw new ConfigError(
        'REDIS_URLS',
        redactUrl(raw ?? ''),
        `must not list the same node twice (${key}): each URL is an independent node`,
      );
    }
    seen.add(key);
  }
  return urls;
}

/** `https://sqs.eu-west-1.amazonaws.com/123/q` → `eu-west-1`. */
function regionOfQueueUrl(queueUrl: string): string | undefined {
  return /^https?:\/\/sqs[.-]([a-z0-9-]+)\.amazonaws\.com(\.cn)?\//.exec(queueUrl)?.[1];
}

/**
 * Hides passwords (`redis://user:secret@host` → `redis://user:***@host`) in logs and errors. The
 * userinfo runs to the last `@` before the next comma or space, so an unencoded `/` or `@` in a
 * password (which makes the URL invalid) hides it whole too; without a `:`, it all counts as secret.
 */
export function redactUrl(text: string): string {
  return text.replace(/\/\/([^,\s]*)@/g, (_, userinfo: string) => {
    const colon = userinfo.indexOf(':');
    return `//${colon < 0 ? '' : userinfo.slice(0, colon + 1)}***@`;
  });
}

/** `host:port` of a Redis URL, without credentials. */
export function nodeLabel(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || '6379'}`;
}
