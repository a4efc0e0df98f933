/**
 * An SQS client on fauxqs whose calls can be faulted, per command and while a fault is in force, by SDK
 * middleware (the calls themselves stay real SDK calls to the real emulator):
 *
 * - `delay`: the request waits `delayMs` before it is sent (a slow network on the way out);
 * - `slow-reply`: the request reaches fauxqs at once, its answer comes `delayMs` late (done, but late);
 * - `fail`: the call fails without reaching fauxqs, as a 500 after the SDK's retries would;
 * - `hang`: the request goes to a black hole (test/helpers/sqs-faults.ts) that never answers; only the
 *   caller's abort signal ends it, or the heal, which closes the black hole (a connection reset);
 * - `refuse-entry`: a batch call's first entry is not sent and comes back in `Failed` as an
 *   `InternalError` (SQS' partial failure); the other entries go through.
 */
import { SQSClient } from '@aws-sdk/client-sqs';
import { sleep } from '../helpers/lock.ts';
import type { SqsEnv } from '../helpers/sqs.ts';
import { startBlackHole } from '../helpers/sqs-faults.ts';

export const FAULTED_COMMANDS = [
  'ReceiveMessage',
  'DeleteMessageBatch',
  'ChangeMessageVisibilityBatch',
  'SendMessage',
] as const;
export type FaultedCommand = (typeof FAULTED_COMMANDS)[number];

export const SQS_FAULT_MODES = ['delay', 'slow-reply', 'fail', 'hang', 'refuse-entry'] as const;
export type SqsFaultMode = (typeof SQS_FAULT_MODES)[number];

export interface SqsFault {
  readonly mode: SqsFaultMode;
  readonly delayMs: number;
}

/** How long an injected failure takes: a failing call is not instant, and a poll loop must not spin. */
const FAIL_AFTER_MS = 20;

type BlackHole = Awaited<ReturnType<typeof startBlackHole>>;

interface BatchEntry {
  Id?: string;
}

export class FaultySqs {
  readonly client: SQSClient;
  /** Faulted calls so far, by command and mode (for the run's summary). */
  readonly injected = new Map<string, number>();
  readonly #faults = new Map<FaultedCommand, { fault: SqsFault; blackHole?: BlackHole }>();

  constructor(env: SqsEnv) {
    this.client = new SQSClient({
      endpoint: env.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    });
    this.client.middlewareStack.add(
      (next, context) => async (args) => {
        const command = commandOf(context.commandName);
        const active = command && this.#faults.get(command);
        if (!active) return next(args);
        const { mode, delayMs } = active.fault;
        this.#count(`${command} ${mode}`);
        switch (mode) {
          case 'delay':
            await sleep(delayMs);
            return next(args);
          case 'slow-reply': {
            const result = await next(args);
            await sleep(delayMs);
            return result;
          }
          case 'fail':
            await sleep(FAIL_AFTER_MS);
            throw injectedError(command);
          case 'refuse-entry':
            return (await refuseFirstEntry(args, next as never)) as Awaited<ReturnType<typeof next>>;
          case 'hang':
            return next(args); // rerouted at the build step, below
        }
      },
      { step: 'initialize', name: 'propertySqsFaults' },
    );
    this.client.middlewareStack.add(
      (next, context) => (args) => {
        const command = commandOf(context.commandName);
        const blackHole = command && this.#faults.get(command)?.blackHole;
        if (blackHole) {
          const request = args.request as { hostname?: string; port?: number };
          request.hostname = '127.0.0.1';
          request.port = blackHole.port;
        }
        return next(args);
      },
      { step: 'build', name: 'propertySqsBlackHole' },
    );
  }

  /** Puts `fault` in force on `command` (replacing one in force) until `heal(command)`. */
  async inject(command: FaultedCommand, fault: SqsFault): Promise<void> {
    await this.heal(command);
    const entry: { fault: SqsFault; blackHole?: BlackHole } = { fault };
    if (fault.mode === 'hang') entry.blackHole = await startBlackHole();
    this.#faults.set(command, entry);
  }

  async heal(command: FaultedCommand): Promise<void> {
    const entry = this.#faults.get(command);
    this.#faults.delete(command);
    // Calls still hung there see their connection reset, as when a dropped route comes back.
    await entry?.blackHole?.close();
  }

  async healAll(): Promise<void> {
    await Promise.all(FAULTED_COMMANDS.map((c) => this.heal(c)));
  }

  async destroy(): Promise<void> {
    await this.healAll();
    this.client.destroy();
  }

  #count(what: string): void {
    this.injected.set(what, (this.injected.get(what) ?? 0) + 1);
  }
}

function commandOf(name: string | undefined): FaultedCommand | undefined {
  const bare = name?.replace(/Command$/, '');
  return FAULTED_COMMANDS.find((c) => c === bare);
}

/** What SQS' 500 looks like to a caller once the SDK gave up retrying. */
function injectedError(command: string): Error {
  return Object.assign(new Error(`injected fault: ${command} failed`), {
    name: 'InternalError',
    $fault: 'server',
    $metadata: { httpStatusCode: 500 },
  });
}

/**
 * The first entry of a batch call is refused with InternalError and never reaches fauxqs; the others
 * are sent. A call of one entry is then not sent at all (SQS refuses an empty batch).
 */
async function refuseFirstEntry(
  args: { input: object },
  next: (args: never) => Promise<{ output: object; response: unknown }>,
): Promise<{ output: object; response: unknown }> {
  const input = args.input as { Entries?: BatchEntry[] };
  const [first, ...rest] = input.Entries ?? [];
  if (!first) return next(args as never);
  const refused = {
    Id: first.Id,
    Code: 'InternalError',
    SenderFault: false,
    Message: 'injected fault: entry refused',
  };
  if (rest.length === 0) {
    await sleep(FAIL_AFTER_MS);
    return { output: { Successful: [], Failed: [refused], $metadata: {} }, response: {} };
  }
  const result = await next({ ...args, input: { ...input, Entries: rest } } as never);
  const output = result.output as { Failed?: object[] };
  return { ...result, output: { ...output, Failed: [...(output.Failed ?? []), refused] } };
}
