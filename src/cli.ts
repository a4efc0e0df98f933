#!/usr/bin/env node
/**
 * The `sqs-redlock-worker` bin. Built to dist/cli.js; with Node >= 24 it also runs from source:
 * `node src/cli.ts run ./handler.ts`.
 */
import { main } from './cli/main.ts';

const code = await main(process.argv.slice(2), process.env);
process.exitCode = code;
// Everything is closed by now; should a stray handle (a socket that would not close) keep the event
// loop alive, it must not keep a stopped worker around until the platform's SIGKILL.
setTimeout(() => process.exit(code), 2_000).unref();
