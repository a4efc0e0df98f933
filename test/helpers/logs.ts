import { Writable } from 'node:stream';
import winston from 'winston';

export type LogEntry = { level: string; message: string } & Record<string, unknown>;

/** A winston logger at debug level that keeps every entry with its fields, for asserting on what was logged. */
export function capturingLogger(): { logger: winston.Logger; entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const stream = new Writable({
    objectMode: true,
    write(info: LogEntry, _encoding, done) {
      entries.push({ ...info, message: String(info.message) });
      done();
    },
  });
  return {
    logger: winston.createLogger({ level: 'debug', transports: [new winston.transports.Stream({ stream })] }),
    entries,
  };
}
