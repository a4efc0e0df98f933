/**
 * The `sqs-redlock-worker` command line: subcommands, flags and `--help` by commander, each command
 * in its own module. `main` resolves the exit code and never calls `process.exit`.
 */
import {
  Command,
  CommanderError,
  Help,
  type HelpConfiguration,
  InvalidArgumentError,
  type Option,
} from 'commander';
import { checkCommand } from './check.ts';
import { inspectCommand } from './dlq-inspect.ts';
import { redriveCommand } from './dlq-redrive.ts';
import { COMMAND, type Env, httpUrl } from './env.ts';
import { CHECK_NOTES, HELP_WIDTH, helpText, INSPECT_NOTES, REDRIVE_NOTES, runNotes, USAGE } from './help.ts';
import type { CliIo } from './io.ts';
import { runCommand } from './run.ts';
import { DEFAULT_CALL_TIMEOUT_MS } from './sqs.ts';

export interface MainIo {
  /** Where `--help` and the reports go. @defaultValue process.stdout */
  stdout?: (text: string) => void;
  /** Where usage errors and a one-line summary of fatal errors go. @defaultValue process.stderr */
  stderr?: (text: string) => void;
  /** Directory the handler module is resolved against. @defaultValue process.cwd() */
  cwd?: string;
  /** Draw progress bars (stdout is a terminal). @defaultValue process.stdout.isTTY */
  isTTY?: boolean;
}

/** Exit code of a usage error: an unknown command or flag, a missing argument, a flag's bad value. */
export const USAGE_ERROR = 2;

/**
 * The command. Resolves the exit code: 0 after `--help` or success, 2 for a usage error, otherwise
 * the command's own (see each command's `--help`).
 */
export async function main(
  argv: readonly string[],
  env: Env = process.env,
  io: MainIo = {},
): Promise<number> {
  const cli: CliIo = {
    stdout: io.stdout ?? ((text: string) => void process.stdout.write(text)),
    stderr: io.stderr ?? ((text: string) => void process.stderr.write(text)),
    cwd: io.cwd ?? process.cwd(),
    isTTY: io.isTTY ?? process.stdout.isTTY === true,
  };
  if (argv.length === 0) {
    cli.stderr(`${COMMAND}: no command given\n${USAGE}`);
    return USAGE_ERROR;
  }
  let code = 0;
  const program = buildProgram(env, cli, (result) => {
    code = result;
  });
  try {
    await program.parseAsync([...argv], { from: 'user' });
  } catch (error) {
    // Thrown by exitOverride: help shown (exit code 0), or a usage error already written to stderr.
    if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : USAGE_ERROR;
    throw error;
  }
  return code;
}

/**
 * commander rather than util.parseArgs: nested subcommands (`dlq inspect`), a generated `--help` per
 * command, and flag errors that name the flag and the value, with no code of ours for any of it.
 */
function buildProgram(env: Env, io: CliIo, done: (code: number) => void): Command {
  const program = new Command(COMMAND)
    .exitOverride()
    .configureOutput({
      writeOut: io.stdout,
      writeErr: io.stderr,
      getOutHelpWidth: () => HELP_WIDTH,
      getErrHelpWidth: () => HELP_WIDTH,
      outputError: (text, write) => write(`${COMMAND}: ${text.replace(/^error: /, '')}`),
    })
    .showHelpAfterError(USAGE.trimEnd())
    .helpCommand(false);
  // The command's own page lists the variables and every command's usage: written, not generated.
  program.helpInformation = () => helpText();

  program
    .command('run')
    .description('Run the worker over the default export of <handler-module>, configured by the environment.')
    .usage('<handler-module>')
    .argument('<handler-module>', 'path to the ES module whose default export is the handler')
    .showHelpAfterError(`Usage: ${COMMAND} run <handler-module>   (${COMMAND} run --help for the variables)`)
    .configureHelp(withNotes(runNotes()))
    .action(async (modulePath: string) => done(await runCommand(modulePath, env, io)));

  program
    .command('check')
    .description('The preflight before deploying: can the worker run with this configuration?')
    .argument('[handler-module]', 'also load this handler module, as run would')

    .addOption(timeoutOption(program, 'SQS and Redis'))
    .option('--json', 'print the findings as JSON instead of a table')
    .showHelpAfterError(`Usage: ${COMMAND} check [--timeout <ms>] [--json] [handler-module]`)
    .configureHelp(withNotes(CHECK_NOTES))
    .action(async (handlerModule: string | undefined, flags: { timeout: number; json?: boolean }) =>
      done(
        await checkCommand(env, io, { handlerModule, timeoutMs: flags.timeout, json: flags.json === true }),
      ),
    );

  const dlq = program
    .command('dlq')
    .description("The dead-letter queue: what is in it, and moving it back. See 'dlq <command> --help'.")
    .helpCommand(false);
  dlq
    .command('inspect')
    .description('Counts by poison-reason and by error name, the oldest and the newest, without consuming.')
    .option('--max <n>', 'read at most this many messages (1 to 100000)', integerFlag(1, 100_000), 1_000)
    .option('--samples <n>', 'show this many message bodies (0 to 100)', integerFlag(0, 100), 0)
    .addOption(timeoutOption(program, 'SQS'))
    .option('--json', 'print the summary as JSON')
    .showHelpAfterError(`Usage: ${COMMAND} dlq inspect [--max <n>] [--samples <n>] [--timeout <ms>] [--json]`)
    .configureHelp(withNotes(INSPECT_NOTES))
    .action(async (flags: { max: number; samples: number; timeout: number; json?: boolean }) =>
      done(
        await inspectCommand(env, io, {
          max: flags.max,
          samples: flags.samples,
          timeoutMs: flags.timeout,
          json: flags.json === true,
        }),
      ),
    );
  dlq
    .command('redrive')
    .description("Move the dead-letter queue's messages back to SQS_QUEUE_URL, or to --to.")
    .option('--to <url>', 'destination queue URL (default: SQS_QUEUE_URL)', urlFlag)
    .option(
      '--rate <n>',
      'messages per second at most (1 to 500; default: as fast as SQS goes)',
      integerFlag(1, 500),
    )
    .addOption(timeoutOption(program, 'SQS'))
    .showHelpAfterError(`Usage: ${COMMAND} dlq redrive [--to <url>] [--rate <n>] [--timeout <ms>]`)
    .configureHelp(withNotes(REDRIVE_NOTES))
    .action(async (flags: { to?: string; rate?: number; timeout: number }) =>
      done(await redriveCommand(env, io, { to: flags.to, rate: flags.rate, timeoutMs: flags.timeout })),
    );
  return program;
}

/**
 * Help that ends with `notes`, printed in one write with the rest (addHelpText writes apart: a
 * reader that stops early, like `| head`, would get EPIPE on the second).
 */
function withNotes(notes: string): HelpConfiguration {
  return {
    formatHelp: (command, helper) => `${Help.prototype.formatHelp.call(helper, command, helper)}${notes}`,
  };
}

function timeoutOption(program: Command, what: string): Option {
  return program
    .createOption('--timeout <ms>', `deadline of every ${what} call, in ms (100 to 120000)`)
    .argParser(integerFlag(100, 120_000))
    .default(DEFAULT_CALL_TIMEOUT_MS);
}

/** A flag's integer value in [min, max]; commander names the flag and the value when it throws. */
function integerFlag(min: number, max: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`It must be an integer between ${min} and ${max}.`);
    }
    return n;
  };
}

function urlFlag(value: string): string {
  try {
    return httpUrl('--to', value.trim(), 'must be a queue URL');
  } catch {
    throw new InvalidArgumentError('It must be a queue URL (http:// or https://).');
  }
}
