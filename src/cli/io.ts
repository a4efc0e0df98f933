/** What every command writes to, and the signals the operator commands stop on. */

/** The command's streams and working directory (a test's, or the process's). */
export interface CliIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  /** Directory a handler module is resolved against. */
  readonly cwd: string;
  /** Whether stdout is a terminal: a progress bar there, one line per step otherwise. */
  readonly isTTY: boolean;
}

const SIGNAL_NUMBERS = { SIGINT: 2, SIGTERM: 15 } as const;
export type StopSignal = keyof typeof SIGNAL_NUMBERS;

/** The exit code of a command that a signal stopped: 128 + its number. */
export function signalExitCode(signal: StopSignal): number {
  return 128 + SIGNAL_NUMBERS[signal];
}

/**
 * SIGINT and SIGTERM as a flag the operator commands check between their (bounded) calls: a call in
 * flight is never cut, so what it received is still answered for (made visible again, or moved).
 */
export interface Interrupt {
  /** The first signal received, if any. */
  readonly signal: StopSignal | undefined;
  /** Aborts on the first signal: for waits between calls, never for a call itself. */
  readonly aborted: AbortSignal;
  uninstall(): void;
}

export function onInterrupt(): Interrupt {
  let signal: StopSignal | undefined;
  const controller = new AbortController();
  const on = (name: StopSignal) => (): void => {
    signal ??= name;
    controller.abort();
  };
  const onSigint = on('SIGINT');
  const onSigterm = on('SIGTERM');
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
  return {
    get signal() {
      return signal;
    },
    aborted: controller.signal,
    uninstall() {
      process.off('SIGINT', onSigint);
      process.off('SIGTERM', onSigterm);
    },
  };
}

/** Resolves after `ms`, or at once when `signal` aborts; never rejects. */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * A table in columns, each as wide as its widest cell; the last column is not padded.
 * `rows[0]` is the header.
 */
export function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  }
  return rows
    .map((row) =>
      row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  '),
    )
    .join('\n')
    .concat('\n');
}

/** Progress of a long step: a bar redrawn in place on a terminal, one line per change otherwise. */
export interface Progress {
  update(done: number, total: number, note?: string): void;
  /** Ends the bar's line (on a terminal). */
  end(): void;
}

const BAR_WIDTH = 30;

export function progress(io: CliIo, what: string): Progress {
  let last = '';
  let drawn = false;
  return {
    update(done, total, note) {
      const suffix = note ? ` (${note})` : '';
      if (io.isTTY) {
        const filled = total > 0 ? Math.min(BAR_WIDTH, Math.round((BAR_WIDTH * done) / total)) : BAR_WIDTH;
        // \r and erase-to-end-of-line: the bar is redrawn where it stands.
        io.stdout(
          `\r[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${done}/${total} ${what}${suffix}\x1b[K`,
        );
        drawn = true;
        return;
      }
      const line = `${what}: ${done} of about ${total}${suffix}`;
      if (line !== last) io.stdout(`${line}\n`);
      last = line;
    },
    end() {
      if (drawn) io.stdout('\n');
      drawn = false;
    },
  };
}
