/**
 * The `sqs-redlock-worker` command: `sqs-redlock-worker run ./dist/handler.js` runs a {@link Worker}
 * over the default export of a handler module, configured by environment variables.
 */
import { isIP } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { SQSClient, type SQSClientConfig } from '@aws-sdk/client-sqs';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'winston';
import { ConfigError } from '../errors.ts';
import type { BaseHandler } from '../handler/base-handler.ts';
import { REDLOCK_DEFAULTS } from '../lock/options.ts';
import { Redlock } from '../lock/redlock.ts';
import { type MetricsServer, startMetricsServer } from '../observability/http.ts';
import { createLogger } from '../observability/logger.ts';
import { createMetrics } from '../observability/metrics.ts';
import { serializeError } from '../observability/serialize.ts';
import { checkHandoffSecret, HANDOFF_SECRET_MIN_LENGTH } from '../validate.ts';
import { maxCompletionWindowMs, WORKER_DEFAULTS } from './options.ts';
import { receiveWaitMs, Worker } from './worker.ts';

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

/**
 * What the shutdown may take past SHUTDOWN_TIMEOUT_MS (the drain): the aborted handlers' grace, the
 * handler's close(), closing the Redis and SQS clients and the server. Past it the process exits 1.
 */
export const SHUTDOWN_SLACK_MS = 2_000;

// ---- configuration ----

/**
 * Reads and validates the configuration from `env`. Blank values count as unset. Throws a
 * {@link ConfigError} whose `option` is the variable's name and whose message quotes the value.
 */
export function parseConfig(env: Readonly<Record<string, string | undefined>>): CliConfig {
  const read = (name: string): string | undefined => {
    const raw = env[name];
    return raw === undefined || raw.trim() === '' ? undefined : raw.trim();
  };

  const queueUrl = read('SQS_QUEUE_URL');
  if (queueUrl === undefined) {
    throw new ConfigError(
      'SQS_QUEUE_URL',
      env.SQS_QUEUE_URL,
      'must be set to the URL of the queue to consume',
    );
  }
  httpUrl('SQS_QUEUE_URL', queueUrl, 'must be an SQS queue URL (http:// or https://)');

  const redisUrls = parseRedisUrls(read('REDIS_URLS'), env.REDIS_URLS);

  const regionRaw = read('AWS_REGION');
  if (regionRaw !== undefined && !/^[a-z0-9]+(-[a-z0-9]+)*$/.test(regionRaw)) {
    throw new ConfigError('AWS_REGION', regionRaw, 'must be an AWS region name, like us-east-1');
  }
  const region = regionRaw ?? regionOfQueueUrl(queueUrl);

  const sqsEndpoint = read('AWS_ENDPOINT_URL_SQS');
  if (sqsEndpoint !== undefined)
    httpUrl('AWS_ENDPOINT_URL_SQS', sqsEndpoint, 'must be an http:// or https:// URL');

  const dlq = read('DLQ_URL');
  let deadLetterQueueUrl: string | false | undefined;
  if (dlq === undefined) deadLetterQueueUrl = undefined;
  else if (/^(none|false|off)$/i.test(dlq)) deadLetterQueueUrl = false;
  else deadLetterQueueUrl = httpUrl('DLQ_URL', dlq, "must be a queue URL (http:// or https://) or 'none'");

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

function envInteger(
  env: Readonly<Record<string, string | undefined>>,
  name: string,
  fallback: number,
  min: number,
  max: number,
): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const text = raw.trim();
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new ConfigError(name, raw, `must be an integer between ${min} and ${max}`);
  }
  return value;
}

function httpUrl(name: string, value: string, rule: string): string {
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
function nodeLabel(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || '6379'}`;
}

// ---- help ----

/** The text of `--help`: usage, every variable with its default and meaning, signals and exit codes. */
export function helpText(): string {
  const width = Math.max(...CLI_VARIABLES.map((v) => v.name.length)) + 2;
  const indent = ' '.repeat(2 + width);
  const variables = CLI_VARIABLES.map((v) => {
    const lines = wrap(v.description, HELP_WIDTH - indent.length);
    lines.push(`Default: ${v.default}`);
    return lines
      .map((line, i) => (i === 0 ? `  ${v.name.padEnd(width)}${line}` : `${indent}${line}`))
      .join('\n');
  }).join('\n');
  return `Usage: ${COMMAND} run <handler-module>
       ${COMMAND} --help

Runs an SQS worker in which every message is handled under a Redlock quorum lock. <handler-module>
is a path, relative to the current directory, to an ES module whose default export is a BaseHandler
subclass (instantiated with no arguments) or instance. If the handler has a close() method, it is
awaited at shutdown, after the last message was handled.

Environment variables (blank counts as unset):
${variables}

AWS credentials come from the SDK's default chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,
AWS_PROFILE, the ECS task role, ...).

SIGTERM or SIGINT (during startup too): stop polling, let in-flight handlers finish within
SHUTDOWN_TIMEOUT_MS (then abort their signals: the messages of those that give up become visible
again), release every lock and exit. A handler that ignores its signal keeps its lock, left to
expire. The rest of the shutdown gets ${SHUTDOWN_SLACK_MS} ms more; past that the process exits 1. A
second signal exits at once.

Exit codes: 0 clean shutdown; 1 fatal error (configuration, handler module, startup, uncaught
error, also one during the shutdown, or a shutdown past its bound), logged as JSON; 2 usage error;
128 + the signal number when a second signal cut the shutdown short.
`;
}

const HELP_WIDTH = 100;

/** Greedy word wrap to `width` columns. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines;
}

// ---- handler module ----

/**
 * Imports the module at `modulePath` (relative to `cwd`) and returns its default export as a handler:
 * an instance, or a class instantiated with no arguments. Duck-typed (`hydrate` and `handle`
 * functions): the module may import BaseHandler from another copy of the package.
 */
export async function loadHandler(
  modulePath: string,
  cwd: string = process.cwd(),
): Promise<BaseHandler<unknown>> {
  const absolute = path.resolve(cwd, modulePath);
  const option = `handler module ${JSON.stringify(modulePath)}`;
  let namespace: { default?: unknown };
  try {
    namespace = (await import(pathToFileURL(absolute).href)) as { default?: unknown };
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConfigError(option, absolute, `could not be imported (${reason})`, { cause: error });
  }
  const exported = namespace.default;
  if (isHandler(exported)) return exported;
  if (typeof exported === 'function' && isHandler(exported.prototype)) {
    let instance: unknown;
    try {
      instance = new (exported as new () => unknown)();
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new ConfigError(
        option,
        exported,
        `default export threw when instantiated with no arguments (${reason})`,
        {
          cause: error,
        },
      );
    }
    if (isHandler(instance)) return instance;
    throw new ConfigError(
      option,
      instance,
      'default export must construct a handler with hydrate and handle methods',
    );
  }
  throw new ConfigError(
    option,
    exported,
    'must have a default export that is a BaseHandler subclass or instance (with hydrate and handle methods)',
  );
}

/** Awaits the handler's optional `close()` (a CLI convention: release what the handler opened). */
async function closeHandler(handler: BaseHandler<unknown>): Promise<void> {
  const close = (handler as { close?: unknown }).close;
  if (typeof close === 'function') await close.call(handler);
}

function isHandler(value: unknown): value is BaseHandler<unknown> {
  if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return false;
  const candidate = value as { hydrate?: unknown; handle?: unknown };
  return typeof candidate.hydrate === 'function' && typeof candidate.handle === 'function';
}

// ---- main ----

export interface MainIo {
  /** Where `--help` goes. @defaultValue process.stdout */
  stdout?: (text: string) => void;
  /** Where usage errors and a one-line summary of fatal errors go. @defaultValue process.stderr */
  stderr?: (text: string) => void;
  /** Directory the handler module is resolved against. @defaultValue process.cwd() */
  cwd?: string;
}

/**
 * The command. Resolves the exit code (it never calls `process.exit`): 0 after `--help` or a clean
 * shutdown, 1 after a fatal error (logged through serialize-error), 2 for a usage error, 128 + the
 * signal number when a second signal cut the shutdown short.
 */
export async function main(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>> = process.env,
  io: MainIo = {},
): Promise<number> {
  const stdout = io.stdout ?? ((text: string) => void process.stdout.write(text));
  const stderr = io.stderr ?? ((text: string) => void process.stderr.write(text));

  if (argv.includes('--help') || argv.includes('-h')) {
    stdout(helpText());
    return 0;
  }
  const [command, modulePath, ...extra] = argv;
  if (command !== 'run' || modulePath === undefined || modulePath.startsWith('-') || extra.length > 0) {
    const what = command === undefined ? 'no command given' : `unexpected arguments: ${argv.join(' ')}`;
    stderr(
      `${COMMAND}: ${what}\nUsage: ${COMMAND} run <handler-module>   (${COMMAND} --help for the variables)\n`,
    );
    return 2;
  }

  let config: CliConfig;
  try {
    config = parseConfig(env);
  } catch (error) {
    // LOG_LEVEL may be the invalid one: log at the default level then.
    const level = (LOG_LEVELS as readonly string[]).includes(env.LOG_LEVEL?.trim().toLowerCase() ?? '')
      ? (env.LOG_LEVEL?.trim().toLowerCase() as LogLevel)
      : CLI_DEFAULTS.LOG_LEVEL;
    fatal(makeLogger(level), stderr, 'invalid configuration', error);
    return 1;
  }
  const logger = makeLogger(config.logLevel);

  let handler: BaseHandler<unknown>;
  try {
    handler = await loadHandler(modulePath, io.cwd ?? process.cwd());
  } catch (error) {
    fatal(logger, stderr, 'could not load the handler', error);
    return 1;
  }
  return run(config, handler, logger, stderr);
}

function makeLogger(level: LogLevel): Logger {
  return level === 'silent' ? createLogger({ silent: true }) : createLogger({ level });
}

function fatal(logger: Logger, stderr: (text: string) => void, message: string, error: unknown): void {
  logger.error(message, { err: serializeError(error, { maxDepth: 4 }) });
  stderr(`${COMMAND}: ${message}: ${error instanceof Error ? error.message : String(error)}\n`);
}

const SIGNAL_NUMBERS = { SIGINT: 2, SIGTERM: 15 } as const;
type StopSignal = keyof typeof SIGNAL_NUMBERS;
type StopReason = { kind: 'signal'; signal: StopSignal } | { kind: 'fatal'; error: unknown };

/** Runs the worker until a signal or a fatal error, then shuts it down. Resolves the exit code. */
async function run(
  config: CliConfig,
  handler: BaseHandler<unknown>,
  logger: Logger,
  stderr: (text: string) => void,
): Promise<number> {
  // Installed first: a signal or a crash during startup still shuts down cleanly.
  const stop = stopTriggers(logger);
  const clients = config.redisUrls.map((url) => redisClient(url, logger));
  let redlock: Redlock | undefined;
  let sqs: SQSClient | undefined;
  let worker: Worker<unknown> | undefined;
  let server: MetricsServer | undefined;
  let detachMetrics: (() => void) | undefined;
  /** Set once the shutdown closed the server: one that a startup still under way opens is closed at once. */
  let serverClosed = false;

  // Raced against the first signal: a hung startup call (GetQueueAttributes, a Redis node that does not
  // answer) must not hold the shutdown back. Each step checks that no signal came meanwhile.
  const startup = async (): Promise<void> => {
    redlock = new Redlock(clients, { ttlMs: config.lockTtlMs, logger });
    sqs = new SQSClient(sqsClientConfig(config));
    await checkRegion(sqs);
    worker = new Worker({
      queueUrl: config.queueUrl,
      handler,
      redlock,
      sqs,
      logger,
      batchSize: config.batchSize,
      concurrency: config.concurrency,
      visibilityTimeoutSec: config.visibilityTimeoutSec,
      extendVisibility: config.extendVisibility,
      completionWindowMs: config.completionWindowMs,
      deadLetterQueueUrl: config.deadLetterQueueUrl,
      handoffSecret: config.handoffSecret,
    });
    if (config.metricsPort !== undefined) {
      const metrics = createMetrics({ defaultMetrics: true });
      detachMetrics = metrics.attach(worker, redlock);
      server = await startMetricsServer({
        port: config.metricsPort,
        host: config.metricsHost,
        registry: metrics.registry,
        worker,
        redlock,
        logger,
      });
      if (serverClosed) await server.close();
      const address = server.server.address();
      logger.info('metrics server listening', {
        port: server.port,
        host: typeof address === 'object' && address ? address.address : config.metricsHost,
        paths: ['/metrics', '/healthz', '/readyz'],
      });
    }
    if (stop.reason !== undefined) return;
    const quorum = await redlock.quorumStatus();
    if (!quorum.available) {
      logger.warn('no Redis quorum at start: messages will wait (polling pauses) until it answers', {
        up: quorum.up,
        down: quorum.down,
        quorum: redlock.quorum,
      });
    }
    if (stop.reason === undefined) {
      await worker.start();
      logger.info('worker started', {
        queueUrl: config.queueUrl,
        redisNodes: redlock.nodes.map((n) => n.label),
        quorum: redlock.quorum,
        lockTtlMs: config.lockTtlMs,
        batchSize: config.batchSize,
        concurrency: config.concurrency,
        visibilityTimeoutSec: config.visibilityTimeoutSec,
        extendVisibility: config.extendVisibility,
        shutdownTimeoutMs: config.shutdownTimeoutMs,
        handoffSecret: config.handoffSecret === undefined ? 'none: handoffs are ignored' : '<redacted>',
      });
    }
  };
  const reason: StopReason = await Promise.race([
    startup().then(
      () => stop.next,
      (error: unknown): StopReason => ({ kind: 'fatal', error }),
    ),
    stop.next,
  ]);

  if (reason.kind === 'fatal') fatal(logger, stderr, 'fatal error: shutting down', reason.error);
  else
    logger.info(`${reason.signal} received: shutting down`, { shutdownTimeoutMs: config.shutdownTimeoutMs });

  // Every step runs even if an earlier one failed: the locks must be released whatever happens.
  let failed = false;
  const step = async (name: string, fn: () => unknown): Promise<void> => {
    try {
      await fn();
    } catch (error) {
      failed = true;
      fatal(logger, stderr, `shutdown: ${name} failed`, error);
    }
  };
  // Bounded in two phases: stop() gets SHUTDOWN_TIMEOUT_MS (or, if longer, the wait for a receive it
  // left open, so that what it let go is not swallowed) and the slack; what follows it (a hung close())
  // gets the slack from the moment stop() ended. Past either, the process exits 1 without the rest.
  const stopBoundMs =
    Math.max(config.shutdownTimeoutMs, receiveWaitMs(WORKER_DEFAULTS.waitTimeSeconds)) + SHUTDOWN_SLACK_MS;
  let deadline: NodeJS.Timeout | undefined;
  let boundMs = stopBoundMs;
  let arm: (ms: number) => void = () => {};
  const late = new Promise<'late'>((resolve) => {
    arm = (ms) => {
      clearTimeout(deadline);
      boundMs = ms;
      deadline = setTimeout(() => resolve('late'), ms);
    };
  });
  const shutdown = async (): Promise<void> => {
    await step('worker.stop', () => worker?.stop({ timeoutMs: config.shutdownTimeoutMs }));
    // The slack, but never past the whole bound: the platform's SIGKILL does not wait.
    arm(Math.max(0, Math.min(SHUTDOWN_SLACK_MS, shutdownStarted + stopBoundMs - performance.now())));
    // The handler's own resources (a database pool, a client), once no handler runs any more.
    await step('handler.close', () => closeHandler(handler));
    // Closes the clients; without a Redlock, just closes them. quit() releases no lock still held: a
    // handler still running past the deadline keeps its lock, left to expire as after a crash.
    await step('redlock.quit', () =>
      redlock ? redlock.quit() : clients.forEach((client) => void client.disconnect()),
    );
    await step('sqs.destroy', () => sqs?.destroy());
    serverClosed = true;
    await step('metrics server close', () => server?.close());
    detachMetrics?.();
  };
  const shutdownStarted = performance.now();
  arm(stopBoundMs);
  const ended = await Promise.race([
    shutdown().then(() => 'done' as const),
    stop.forced.then((signal) => ({ forced: signal })),
    late,
  ]);
  clearTimeout(deadline);
  stop.uninstall();
  // Cut short: whatever did not close must not keep the process alive (no lock is released by this).
  if (ended !== 'done') {
    for (const client of clients) client.disconnect();
    sqs?.destroy();
    server?.server.closeAllConnections();
    server?.server.close();
  }

  if (ended === 'late') {
    logger.error('shutdown did not finish in time', { timeoutMs: boundMs });
    return 1;
  }
  if (ended !== 'done') {
    logger.warn(`second ${ended.forced}: exiting without finishing the shutdown`);
    return 128 + SIGNAL_NUMBERS[ended.forced];
  }
  // An uncaught error while shutting down is as fatal as one before: the exit code says so.
  const clean = reason.kind === 'signal' && !failed && !stop.failedDuringShutdown;
  logger.info('stopped', { reason: reason.kind === 'signal' ? reason.signal : 'fatal error', clean });
  return clean ? 0 : 1;
}

/**
 * SIGTERM, SIGINT, uncaught exceptions and unhandled rejections, as promises: `next` settles on the
 * first, `forced` on a second signal. `uninstall` removes the process listeners.
 */
function stopTriggers(logger: Logger): {
  readonly reason: StopReason | undefined;
  /** An uncaught exception or unhandled rejection came after the first trigger. */
  readonly failedDuringShutdown: boolean;
  readonly next: Promise<StopReason>;
  readonly forced: Promise<StopSignal>;
  uninstall(): void;
} {
  let first: StopReason | undefined;
  let failedDuringShutdown = false;
  let resolveNext!: (reason: StopReason) => void;
  let resolveForced!: (signal: StopSignal) => void;
  const next = new Promise<StopReason>((resolve) => {
    resolveNext = resolve;
  });
  const forced = new Promise<StopSignal>((resolve) => {
    resolveForced = resolve;
  });
  const trigger = (reason: StopReason): void => {
    if (first === undefined) {
      first = reason;
      resolveNext(reason);
    } else if (reason.kind === 'signal') {
      resolveForced(reason.signal);
    } else {
      // Already shutting down: log it, the shutdown goes on, and the exit code will be 1.
      failedDuringShutdown = true;
      logger.error('uncaught error during shutdown', { err: serializeError(reason.error) });
    }
  };
  const onSigterm = (): void => trigger({ kind: 'signal', signal: 'SIGTERM' });
  const onSigint = (): void => trigger({ kind: 'signal', signal: 'SIGINT' });
  const onError = (error: unknown): void => trigger({ kind: 'fatal', error });
  process.on('SIGTERM', onSigterm);
  process.on('SIGINT', onSigint);
  process.on('uncaughtException', onError);
  process.on('unhandledRejection', onError);
  return {
    get reason() {
      return first;
    },
    get failedDuringShutdown() {
      return failedDuringShutdown;
    },
    next,
    forced,
    uninstall() {
      process.off('SIGTERM', onSigterm);
      process.off('SIGINT', onSigint);
      process.off('uncaughtException', onError);
      process.off('unhandledRejection', onError);
    },
  };
}

/** The SQS client: region and endpoint from the parsed config when given, the SDK's chain otherwise. */
function sqsClientConfig(config: CliConfig): SQSClientConfig {
  return {
    ...(config.region === undefined ? {} : { region: config.region }),
    ...(config.sqsEndpoint === undefined ? {} : { endpoint: config.sqsEndpoint }),
  };
}

/** Fails at start, naming AWS_REGION, when neither the environment nor the AWS config gives a region. */
async function checkRegion(sqs: SQSClient): Promise<void> {
  try {
    await sqs.config.region();
  } catch (error) {
    throw new ConfigError(
      'AWS_REGION',
      undefined,
      'must be set: neither the queue URL nor the AWS config (AWS_PROFILE, ~/.aws/config) names a region',
      { cause: error },
    );
  }
}

/**
 * One ioredis client per node, tuned for the lock engine, which bounds every command itself and
 * sends nothing to a reconnecting client: fail a request fast rather than retry it late, and keep
 * reconnecting (a node that comes back rejoins the quorum). Connection errors are logged once per
 * outage, not once per retry.
 */
function redisClient(url: string, logger: Logger): Redis {
  const node = nodeLabel(url);
  const options: RedisOptions = {
    connectionName: COMMAND,
    maxRetriesPerRequest: 1,
    connectTimeout: 5_000,
    retryStrategy: (times) => Math.min(50 * times, 1_000),
  };
  const client = new Redis(url, options);
  let down = false;
  client.on('error', (error: Error) => {
    if (down) return;
    down = true;
    logger.warn('Redis node unreachable: reconnecting', { node, err: serializeError(error) });
  });
  client.on('ready', () => {
    if (down) logger.info('Redis node reconnected', { node });
    down = false;
  });
  return client;
}
