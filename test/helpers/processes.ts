/**
 * Child Node processes for the tests that run the package as real OS processes: spawned with the Node
 * running vitest, their stdout parsed into JSON lines, stdout and stderr kept for the diagnostics, and
 * killed (SIGKILL) after every test, described when it failed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { sleep } from './lock.ts';

/** The repository root, the working directory of every child. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A spawned Node process, with its output collected and its stdout parsed into JSON lines. */
export class NodeProcess<Line extends Record<string, unknown> = Record<string, unknown>> {
  /** Names the process in error messages and in {@link describe}. */
  readonly name: string;
  readonly child: ChildProcess;
  readonly lines: Line[] = [];
  readonly exited: Promise<Exit>;
  /** How long {@link waitFor} waits unless told. */
  readonly waitForMs: number;
  stdout = '';
  stderr = '';
  #closed = false;
  #partial = '';

  /** Runs `node ...args` in {@link ROOT} with exactly `env`. */
  constructor(name: string, args: string[], env: NodeJS.ProcessEnv, options: { waitForMs: number }) {
    this.name = name;
    this.waitForMs = options.waitForMs;
    // process.execPath: the Node running vitest (24, with type stripping), not whatever `node` is on PATH.
    this.child = spawn(process.execPath, args, {
      cwd: ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout?.setEncoding('utf8');
    this.child.stderr?.setEncoding('utf8');
    this.child.stdout?.on('data', (chunk: string) => {
      this.stdout += chunk;
      const parts = (this.#partial + chunk).split('\n');
      this.#partial = parts.pop() ?? '';
      for (const part of parts) {
        try {
          this.lines.push(JSON.parse(part) as Line);
        } catch {
          // Not JSON (--help, a stray warning): kept in `stdout` for the diagnostics.
        }
      }
    });
    this.child.stderr?.on('data', (chunk: string) => {
      this.stderr += chunk;
    });
    // 'close' (not 'exit'): stdout and stderr are fully read by then.
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        this.#closed = true;
        resolve({ code, signal });
      });
      this.child.once('error', (error) => {
        this.stderr += `\nspawn error: ${error.message}`;
        this.#closed = true;
        resolve({ code: null, signal: null });
      });
    });
  }

  get alive(): boolean {
    return !this.#closed && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The first line matching `match`, waiting for it; fails at once if the process ends first. */
  async waitFor(match: (line: Line) => boolean, timeoutMs = this.waitForMs): Promise<Line> {
    const until = performance.now() + timeoutMs;
    for (;;) {
      const found = this.lines.find(match);
      if (found) return found;
      if (!this.alive) throw new Error(`${this.name} ended before the expected line\n${this.describe()}`);
      if (performance.now() > until) {
        throw new Error(`${this.name}: no expected line within ${timeoutMs} ms\n${this.describe()}`);
      }
      await sleep(20);
    }
  }

  /** The exit, waiting up to `timeoutMs`; SIGKILL and a failure if it has not exited by then. */
  async exit(timeoutMs: number): Promise<Exit> {
    return this.#exit(timeoutMs, '');
  }

  /** SIGTERM, then the exit; SIGKILL if it does not exit within `timeoutMs`. */
  async terminate(timeoutMs = 20_000): Promise<Exit> {
    if (this.alive) this.child.kill('SIGTERM');
    return this.#exit(timeoutMs, ' of SIGTERM');
  }

  async #exit(timeoutMs: number, after: string): Promise<Exit> {
    const exit = await Promise.race([this.exited, sleep(timeoutMs).then(() => undefined)]);
    if (exit) return exit;
    this.child.kill('SIGKILL');
    throw new Error(`${this.name} did not exit within ${timeoutMs} ms${after}\n${this.describe()}`);
  }

  /** Its pid and exit, stderr, and the tail of stdout. */
  describe(): string {
    const tail = (s: string): string => s.trimEnd().split('\n').slice(-30).join('\n');
    return [
      `--- ${this.name} (pid ${this.child.pid}, exit ${this.child.exitCode}, signal ${this.child.signalCode})`,
      `stderr:\n${tail(this.stderr) || '(empty)'}`,
      `stdout (tail):\n${tail(this.stdout) || '(empty)'}`,
    ].join('\n');
  }
}

/** What {@link useProcesses} needs of a process. */
export interface Spawned {
  readonly alive: boolean;
  readonly child: ChildProcess;
  readonly exited: Promise<Exit>;
  describe(): string;
}

/**
 * The processes a test file spawns (`spawned.push(p)`): after every test each one still alive gets
 * SIGKILL and is awaited, and on a failure every process of the test is described on stderr; should the
 * vitest worker itself exit, the live ones get SIGKILL too.
 */
export function useProcesses<P extends Spawned>(): P[] {
  const spawned: P[] = [];
  /** Last resort: a crashed vitest worker must not leave processes behind. */
  const killAllSync = (): void => {
    for (const p of spawned) if (p.alive) p.child.kill('SIGKILL');
  };
  beforeAll(() => {
    process.once('exit', killAllSync);
  });
  afterEach(async (context) => {
    killAllSync();
    await Promise.all(spawned.map((p) => p.exited));
    // On failure, print what every process of the test wrote (stderr first: crashes, then stdout's tail).
    if (context.task.result?.state === 'fail')
      for (const p of spawned) process.stderr.write(`${p.describe()}\n`);
    spawned.length = 0;
  });
  afterAll(() => {
    killAllSync();
    process.off('exit', killAllSync);
  });
  return spawned;
}
