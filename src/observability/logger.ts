import winston from 'winston';

/** The package's default logger: winston, JSON lines, level from `LOG_LEVEL` (default `info`). */
export function createLogger(options: { level?: string; silent?: boolean } = {}): winston.Logger {
  return winston.createLogger({
    level: options.level ?? process.env.LOG_LEVEL ?? 'info',
    silent: options.silent ?? false,
    format: winston.format.combine(winston.format.timestamp(), winston.format.json()),
    defaultMeta: { service: 'sqs-redlock-worker' },
    transports: [new winston.transports.Console()],
  });
}

let shared: winston.Logger | undefined;

/** One default logger per process, created on first use. */
export function defaultLogger(): winston.Logger {
  shared ??= createLogger();
  return shared;
}
