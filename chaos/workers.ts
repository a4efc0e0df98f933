/**
 * A worker of the chaos run: the real CLI (`node src/cli.ts run chaos/handler.ts`) as an OS process,
 * with its stdout parsed. The handler's `{"chaos": ...}` lines say which runs are in flight, in which
 * phase, and which messages it may already have written; the CLI's own JSON log lines are counted by
 * level. Everything the process printed also goes to a log file.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { inheritedEnv } from '../test/helpers/cli.ts';
import type { ChaosLine } from './handler.ts';

export const ROOT = fileURLToPath(new URL('../', import.meta.url));
const CLI = 'src/cli.ts';
const HANDLER = 'chaos/handler.ts';

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A handler run seen on the worker's stdout. */
export interface Run {
  readonly id: string;
  /** SQS MessageId */
  readonly mid: string;
  readonly token: number;
  readonly rc: number;
  phase: 'work' | 'applying' | 'applied' | 'rejected' | 'throw' | 'aborted';
}

export type WorkerState = 'starting' | 'running' | 'frozen' | 'stopping' | 'exited';

/** The inherited environment without any variable the CLI reads, so the run's own settings rule. */
function cleanEnv(): Record<string, string> {
  return inheritedEnv({ dropPrefix: 'CHAOS_' });
}

export class ChaosWorker {
  /** `w<slot>.<generation>`: a replacement takes the slot of a killed worker. */
  readonly name: string;
  readonly slot: number;
  readonly child: ChildProcess;
  readonly exited: Promise<Exit>;
  /** Resolves when the CLI logged 'worker started'; rejects if the process ends first. */
  readonly ready: Promise<void>;
  /** Runs started and not ended, by `id#token`. */
  readonly inflight = new Map<string, Run>();
  /**
   * Messages (MessageId → job id) this process may have written an effect for: from the `applying`
   * line on, unless the ledger rejected it. Killing the process while such a message is still in the
   * queue (not yet marked complete and deleted) would make its redelivery run, and write, again.
   */
  readonly wrote = new Map<string, string>();
  /** Every step of every run, by job id, for explaining a failure. */
  readonly history = new Map<string, { step: string; token: number; rc: number; at: number }[]>();
  /** Every run started: job id and when (performance.now()). */
  readonly starts: { readonly id: string; readonly at: number }[] = [];
  /** Counts of the handler's lines, by step. */
  readonly steps: Record<ChaosLine['chaos'] | 'staleApplying', number> = {
    start: 0,
    applying: 0,
    applied: 0,
    rejected: 0,
    throw: 0,
    aborted: 0,
    end: 0,
    staleApplying: 0,
  };
  /** Results of writes made after a process pause (the GC-pause story). */
  readonly staleResults = { applied: 0, rejected: 0 };
  /** Event-loop stalls the handler module saw (`chaosLag` lines), in ms. */
  readonly lags: number[] = [];
  /** Counts of the CLI's log lines, by level. */
  readonly levels: Record<string, number> = {};
  /** The last warnings and errors the CLI logged (message only), for the report. */
  readonly problems: string[] = [];
  state: WorkerState = 'starting';
  stderr = '';
  readonly #log: WriteStream;
  #partial = '';
  #lastOutputAt = performance.now();
  #exit: Exit | undefined;

  constructor(slot: number, generation: number, env: Record<string, string>, logDir: string) {
    this.slot = slot;
    this.name = `w${slot}.${generation}`;
    this.#log = createWriteStream(path.join(logDir, `${this.name}.log`));
    this.child = spawn(process.execPath, [CLI, 'run', HANDLER], {
      cwd: ROOT,
      env: { ...cleanEnv(), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout?.setEncoding('utf8');
    this.child.stderr?.setEncoding('utf8');
    let onReady: () => void = () => {};
    let onNotReady: (error: Error) => void = () => {};
    this.ready = new Promise<void>((resolve, reject) => {
      onReady = resolve;
      onNotReady = reject;
    });
    // A caller that never awaits it must not see an unhandled rejection.
    this.ready.catch(() => undefined);
    this.child.stdout?.on('data', (chunk: string) => {
      this.#lastOutputAt = performance.now();
      this.#log.write(chunk);
      const parts = (this.#partial + chunk).split('\n');
      this.#partial = parts.pop() ?? '';
      for (const part of parts) this.#line(part, onReady);
    });
    this.child.stderr?.on('data', (chunk: string) => {
      this.#lastOutputAt = performance.now();
      this.#log.write(chunk);
      this.stderr = (this.stderr + chunk).slice(-4_000);
    });
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        this.#exit = { code, signal };
        this.state = 'exited';
        this.#log.end();
        onNotReady(new Error(`${this.name} exited (code ${code}, signal ${signal}) before it started`));
        resolve(this.#exit);
      });
      this.child.once('error', (error) => {
        this.stderr += `\nspawn error: ${error.message}`;
        this.#exit = { code: null, signal: null };
        this.state = 'exited';
        this.#log.end();
        onNotReady(error);
        resolve(this.#exit);
      });
    });
    void this.ready.then(() => {
      if (this.state === 'starting') this.state = 'running';
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get alive(): boolean {
    return this.#exit === undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  get exit(): Exit | undefined {
    return this.#exit;
  }

  /** Runs in their work phase: started, not yet writing, not ended. */
  working(): Run[] {
    return [...this.inflight.values()].filter((r) => r.phase === 'work');
  }

  freeze(): void {
    if (!this.alive) return;
    this.child.kill('SIGSTOP');
    this.state = 'frozen';
  }

  thaw(): void {
    if (!this.alive) return;
    this.child.kill('SIGCONT');
    if (this.state === 'frozen') this.state = 'running';
  }

  /** SIGKILL, and the exit. */
  async kill(): Promise<Exit> {
    if (this.alive) this.child.kill('SIGKILL');
    return this.exited;
  }

  /** SIGTERM (after SIGCONT, should it be frozen), and the exit; SIGKILL after `timeoutMs`. */
  async terminate(timeoutMs: number): Promise<{ exit: Exit; timedOut: boolean }> {
    if (this.alive) {
      this.state = 'stopping';
      this.child.kill('SIGCONT');
      this.child.kill('SIGTERM');
    }
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), timeoutMs);
    });
    const first = await Promise.race([this.exited, late]);
    clearTimeout(timer);
    if (first !== 'late') return { exit: first, timedOut: false };
    this.child.kill('SIGKILL');
    return { exit: await this.exited, timedOut: true };
  }

  /**
   * After freeze(): resolves once the output the process wrote before it froze has been read: the
   * pipe has been quiet for `quietMs` since the freeze (at least that long, so lines already in the
   * pipe but not yet read are), at most `maxMs`.
   */
  async settleOutput(quietMs = 40, maxMs = 500): Promise<void> {
    const frozenAt = performance.now();
    const until = frozenAt + maxMs;
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      const now = performance.now();
      if (now >= until) return;
      if (now - frozenAt >= quietMs && now - this.#lastOutputAt >= quietMs) return;
    }
  }

  /** Last resort at process exit. */
  killSync(): void {
    if (!this.alive) return;
    try {
      this.child.kill('SIGCONT');
      this.child.kill('SIGKILL');
    } catch {
      // Already gone.
    }
  }

  #line(text: string, onReady: () => void): void {
    if (!text.startsWith('{')) return;
    let line: Record<string, unknown>;
    try {
      line = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return;
    }
    if (typeof line.chaosLag === 'number') {
      this.lags.push(line.chaosLag);
      return;
    }
    if (typeof line.chaos === 'string') {
      this.#step(line as unknown as ChaosLine);
      return;
    }
    const level = String(line.level ?? 'unknown');
    this.levels[level] = (this.levels[level] ?? 0) + 1;
    if (line.message === 'worker started') onReady();
    if (level === 'error' || level === 'warn') {
      this.problems.push(`${level}: ${String(line.message)}`);
      if (this.problems.length > 50) this.problems.shift();
    }
  }

  #step(line: ChaosLine): void {
    this.steps[line.chaos]++;
    const key = `${line.id}#${line.token}`;
    const run = this.inflight.get(key);
    const steps = this.history.get(line.id) ?? [];
    steps.push({
      step: line.stale ? `${line.chaos} (stale)` : line.chaos,
      token: line.token,
      rc: line.rc,
      at: line.at,
    });
    this.history.set(line.id, steps);
    switch (line.chaos) {
      case 'start':
        this.starts.push({ id: line.id, at: performance.now() });
        this.inflight.set(key, { id: line.id, mid: line.mid, token: line.token, rc: line.rc, phase: 'work' });
        return;
      case 'applying':
        if (line.stale) this.steps.staleApplying++;
        this.wrote.set(line.mid, line.id);
        if (run) run.phase = 'applying';
        return;
      case 'applied':
        if (line.stale) this.staleResults.applied++;
        if (run) run.phase = 'applied';
        return;
      case 'rejected':
        if (line.stale) this.staleResults.rejected++;
        this.wrote.delete(line.mid);
        if (run) run.phase = 'rejected';
        return;
      case 'throw':
      case 'aborted':
        if (run) run.phase = line.chaos;
        return;
      case 'end':
        this.inflight.delete(key);
        return;
    }
  }
}
