/**
 * `sqs-redlock-worker run <handler-module>`: a {@link Worker} over the module's default export,
 * configured by the environment, until SIGTERM or SIGINT, then a shutdown bounded in two phases.
 */
import type { SQSClient } from '@aws-sdk/client-sqs';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'winston';
import type { BaseHandler } from '../handler/base-handler.ts';
import { Redlock } from '../lock/redlock.ts';
import { type MetricsServer, startMetricsServer } from '../observability/http.ts';
import { createLogger } from '../observability/logger.ts';
import { createMetrics } from '../observability/metrics.ts';
import { serializeError } from '../observability/serialize.ts';
import { WORKER_DEFAULTS } from '../runtime/options.ts';
import { receiveWaitMs, Worker } from '../runtime/worker.ts';
import {
  CLI_DEFAULTS,
  type CliConfig,
  COMMAND,
  type Env,
  LOG_LEVELS,
  type LogLevel,
  nodeLabel,
  parseConfig,
  SHUTDOWN_SLACK_MS,
} from './env.ts';
import { closeHandler, loadHandler } from './handler-module.ts';
import { type CliIo, type StopSignal, signalExitCode } from './io.ts';
import { checkRegion, newSqsClient } from './sqs.ts';

/**
 * The command: resolves the exit code, 0 after a clean shutdown, 1 after a fatal error (logged
 * through serialize-error), 128 + the signal number when a second signal cut the shutdown short.
 */
export async function runCommand(modulePath: string, env: Env, io: CliIo): Promise<number> {
  let config: CliConfig;
  try {
    config = parseConfig(env);
  } catch (error) {
    // LOG_LEVEL may be the invalid one: log at the default level then.
    const level = (LOG_LEVELS as readonly string[]).includes(env.LOG_LEVEL?.trim().toLowerCase() ?? '')
      ? (env.LOG_LEVEL?.trim().toLowerCase() as LogLevel)
      : CLI_DEFAULTS.LOG_LEVEL;
    fatal(makeLogger(level), io.stderr, 'invalid configuration', error);
    return 1;
  }
  const logger = makeLogger(config.logLevel);

  let handler: BaseHandler<unknown>;
  try {
    handler = await loadHandler(modulePath, io.cwd);
  } catch (error) {
    fatal(logger, io.stderr, 'could not load the handler', error);
    return 1;
  }
  return run(config, handler, logger, io.stderr);
}

function makeLogger(level: LogLevel): Logger {
  return level === 'silent' ? createLogger({ silent: true }) : createLogger({ level });
}

function fatal(logger: Logger, stderr: (text: string) => void, message: string, error: unknown): void {
  logger.error(message, { err: serializeError(error, { maxDepth: 4 }) });
  stderr(`${COMMAND}: ${message}: ${error instanceof Error ? error.message : String(error)}\n`);
}

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
    sqs = newSqsClient(config);
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
    return signalExitCode(ended.forced);
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
