/** The help texts: the command's page (`--help`), and the notes each subcommand's help ends with. */
import { CLI_VARIABLES, COMMAND, SHUTDOWN_SLACK_MS } from './env.ts';

export const HELP_WIDTH = 100;

/** One line per form of the command: what usage errors end with. */
export const USAGE = `Usage: ${COMMAND} run <handler-module>
       ${COMMAND} check [options] [handler-module]
       ${COMMAND} dlq inspect [options]
       ${COMMAND} dlq redrive [options]
       ${COMMAND} [<command>] --help
`;

/** Every variable with its default and meaning, wrapped to the help's width. */
export function variablesText(): string {
  const width = Math.max(...CLI_VARIABLES.map((v) => v.name.length)) + 2;
  const indent = ' '.repeat(2 + width);
  return CLI_VARIABLES.map((v) => {
    const lines = wrap(v.description, HELP_WIDTH - indent.length);
    lines.push(`Default: ${v.default}`);
    return lines
      .map((line, i) => (i === 0 ? `  ${v.name.padEnd(width)}${line}` : `${indent}${line}`))
      .join('\n');
  }).join('\n');
}

/** The handler module, the variables, the credentials and the signals of `run`. */
function runText(): string {
  return `
<handler-module> is a path, relative to the current directory, to an ES module whose default export
is a BaseHandler subclass (instantiated with no arguments) or instance. If the handler has a close()
method, it is awaited at shutdown, after the last message was handled.

Environment variables (blank counts as unset):
${variablesText()}

AWS credentials come from the SDK's default chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,
AWS_PROFILE, the ECS task role, ...).

SIGTERM or SIGINT (during startup too): stop polling, let in-flight handlers finish within
SHUTDOWN_TIMEOUT_MS (then abort their signals: the messages of those that give up become visible
again), release every lock and exit. A handler that ignores its signal keeps its lock, left to
expire. The rest of the shutdown gets ${SHUTDOWN_SLACK_MS} ms more; past that the process exits 1. A
second signal exits at once.
`;
}

/** What `run --help` ends with. */
export function runNotes(): string {
  return `${runText()}
Exit codes: 0 clean shutdown; 1 fatal error (configuration, handler module, startup, uncaught
error, also one during the shutdown, or a shutdown past its bound), logged as JSON; 2 usage error;
128 + the signal number when a second signal cut the shutdown short.
`;
}

export const CHECK_NOTES = `
Reads the variables of run (${COMMAND} --help lists them), then checks, each call within
--timeout: the configuration (and the handler module, if given); SQS: the region,
GetQueueAttributes, receive (one ReceiveMessage with VisibilityTimeout 0 and no wait: a message it
meets stays visible, its receive count goes up by one), change visibility and delete (shown with an
invalid receipt handle, which SQS refuses only after the permission check: no message is touched),
the RedrivePolicy and the dead-letter queue (SendMessage to it is not checked: that cannot be shown
without sending); each Redis node: PING, version, persistence (CONFIG GET appendonly and
appendfsync: without AOF, or with appendfsync other than always, a restarted node can forget locks
and fencing counters), clock skew (TIME); and whether a quorum of nodes accepts writes (through the
lock's own script path).

Exit codes: 0 the worker can run (ok and warn findings only); 1 a check failed; 2 usage error.
`;

export const INSPECT_NOTES = `
The dead-letter queue is DLQ_URL, else the one in the RedrivePolicy of SQS_QUEUE_URL (with
AWS_REGION and AWS_ENDPOINT_URL_SQS as for run). Messages are received with a 60 s visibility
timeout, so that the scan meets each once, and made visible again at once when it ends
(ChangeMessageVisibilityBatch 0), also after an error or a signal; each receive counts. Bodies are
shown only with --samples.

Exit codes: 0 done, every message read visible again; 1 an error (named), or messages that could not
be made visible again (they are within 60 s); 2 usage error; 128 + the signal number after SIGINT or
SIGTERM (messages read are made visible again first).
`;

export const REDRIVE_NOTES = `
The dead-letter queue is found as for dlq inspect; the destination is --to, else SQS_QUEUE_URL. Uses
StartMessageMoveTask (the dead-letter queue's ARN to the destination's, at --rate) and follows it
with ListMessageMoveTasks until it ends. Where the endpoint has no such action, moves the messages
itself: receive, send (body, attributes, trace header and FIFO group kept), then delete, never
before the send succeeded; a message the destination refuses stays in the dead-letter queue. Says
which path it took. A progress bar on a terminal, one line per step otherwise.

Exit codes: 0 every message moved (the task COMPLETED); 1 an error, a task that FAILED or was
cancelled, or messages left behind (named); 2 usage error; 128 + the signal number after SIGINT or
SIGTERM (the move task is cancelled; the other path stops after the batch in hand).
`;

/** The text of `--help`: every command, the variables, and the exit codes. */
export function helpText(): string {
  return `${USAGE}
Commands:
  run <handler-module>    Run an SQS worker in which every message is handled under a Redlock
                          quorum lock, configured by the variables below.
  check [handler-module]  The preflight before deploying: the configuration, SQS permissions, the
                          RedrivePolicy and dead-letter queue, each Redis node, the quorum.
  dlq inspect             What is in the dead-letter queue, by poison-reason and error name, without
                          consuming it.
  dlq redrive             Move the dead-letter queue's messages back (StartMessageMoveTask, or
                          receive, send, delete where the endpoint lacks it).
${runText()}
Exit codes: 0 success; 1 failure (each command's --help says which); 2 usage error (an unknown
command or flag, a flag's bad value); 128 + the signal number when a signal cut a command short.
`;
}

/** Greedy word wrap to `width` columns. */
export function wrap(text: string, width: number): string[] {
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
