/**
 * Shared benchmark plumbing: a fixed-iteration / fixed-concurrency runner, latency statistics,
 * markdown table formatting and the environment header. Used by every benchmark (bench/lock.ts,
 * bench/worker.ts, bench/all.ts); it has no dependency on the engines being measured.
 */
import os from 'node:os';

// ---------------------------------------------------------------------------
// Command line

/** True when `--json` was passed: print raw numbers as JSON instead of the markdown table. */
export function wantsJson(argv: readonly string[] = process.argv.slice(2)): boolean {
  return argv.includes('--json');
}

/** The value of a `--name=value` argument, or undefined. */
export function flagValue(name: string, argv: readonly string[] = process.argv.slice(2)): string | undefined {
  return argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3);
}

/** Prints the result on stdout: `raw()` as JSON with `--json`, else the `markdown()` report. */
export function printResult(json: boolean, raw: () => unknown, markdown: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(raw(), null, 2)}\n` : `${markdown()}\n`);
}

/** Progress goes to stderr so that stdout holds only the table (or the JSON). */
export function progress(message: string): void {
  process.stderr.write(`${message}\n`);
}

// ---------------------------------------------------------------------------
// Running

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Runs a benchmark's `main`: a throw sets exit code 1 and is printed. Everything should be closed by then;
 * should a handle still be open, the process exits 2 s later instead of hanging the npm script on it.
 */
export async function runMain(main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (error) {
    process.exitCode = 1;
    console.error(error);
  }
  setTimeout(() => {
    progress('bench: handles still open after cleanup; exiting');
    process.exit(process.exitCode ?? 0);
  }, 2_000).unref();
}

export interface RunOptions {
  /** Operations to run, in total, across all loops. */
  readonly iterations: number;
  /** Loops running at once; each starts its next operation when its previous one settles. */
  readonly concurrency: number;
  /** One operation; `i` is unique across the run (0 .. iterations - 1), e.g. to derive distinct keys. */
  readonly op: (i: number) => Promise<void>;
}

export interface RunResult {
  readonly iterations: number;
  readonly concurrency: number;
  /** Wall time from the first operation's start to the last one's end, in ms. */
  readonly durationMs: number;
  /** Latency of each successful operation, in ms (unsorted, in completion order). */
  readonly latenciesMs: number[];
  /** Operations that threw; they count in the wall time but not in the latencies. */
  readonly errors: number;
  /** The first error thrown, for the report. */
  readonly firstError: Error | undefined;
}

/**
 * Runs `iterations` operations with exactly `concurrency` of them in flight (closed loop), timing each
 * one with the monotonic clock. An operation that throws is counted, not retried.
 */
export async function runFixed({ iterations, concurrency, op }: RunOptions): Promise<RunResult> {
  const latenciesMs: number[] = [];
  let next = 0;
  let errors = 0;
  let firstError: Error | undefined;
  const loop = async (): Promise<void> => {
    for (let i = next++; i < iterations; i = next++) {
      const started = performance.now();
      try {
        await op(i);
        latenciesMs.push(performance.now() - started);
      } catch (error) {
        errors++;
        firstError ??= error instanceof Error ? error : new Error(String(error));
      }
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, iterations) }, loop));
  const durationMs = performance.now() - started;
  return { iterations, concurrency, durationMs, latenciesMs, errors, firstError };
}

// ---------------------------------------------------------------------------
// Statistics

/** Nearest-rank percentile (`p` in 0..100) of an ascending array; NaN when empty. */
export function percentile(sortedAsc: readonly number[], p: number): number {
  if (sortedAsc.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sortedAsc.length);
  return sortedAsc[Math.min(sortedAsc.length - 1, Math.max(0, rank - 1))] as number;
}

export interface LatencySummary {
  readonly count: number;
  readonly meanMs: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

export function summarize(latenciesMs: readonly number[]): LatencySummary {
  const sorted = Float64Array.from(latenciesMs).sort();
  const asArray = Array.from(sorted);
  const sum = asArray.reduce((a, b) => a + b, 0);
  return {
    count: asArray.length,
    meanMs: asArray.length > 0 ? sum / asArray.length : Number.NaN,
    p50Ms: percentile(asArray, 50),
    p90Ms: percentile(asArray, 90),
    p99Ms: percentile(asArray, 99),
    maxMs: asArray.length > 0 ? (asArray[asArray.length - 1] as number) : Number.NaN,
  };
}

// ---------------------------------------------------------------------------
// Formatting

/** A number with thousands separators and `digits` decimals; '–' for NaN / Infinity. */
export function fmt(value: number, digits = 0): string {
  if (!Number.isFinite(value)) return '–';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** A ratio such as `3.42x`; '–' when undefined. */
export function fmtRatio(value: number | undefined, digits = 2): string {
  return value === undefined || !Number.isFinite(value) ? '–' : `${value.toFixed(digits)}x`;
}

export type Align = 'left' | 'right';

/** A GitHub markdown table; columns are padded so it also reads well as plain text. */
export function markdownTable(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
  align: readonly Align[] = [],
): string {
  const widths = headers.map((h, c) => Math.max(h.length, 3, ...rows.map((r) => (r[c] ?? '').length)));
  const pad = (text: string, c: number): string =>
    align[c] === 'right' ? text.padStart(widths[c] as number) : text.padEnd(widths[c] as number);
  const line = (cells: readonly string[]): string =>
    `| ${headers.map((_, c) => pad(cells[c] ?? '', c)).join(' | ')} |`;
  const rule = `|${widths.map((w, c) => (align[c] === 'right' ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`;
  return [line(headers), rule, ...rows.map(line)].join('\n');
}

// ---------------------------------------------------------------------------
// Environment

export interface Environment {
  readonly date: string;
  readonly node: string;
  readonly v8: string;
  readonly platform: string;
  readonly cpuModel: string;
  readonly cpuCount: number;
  readonly [extra: string]: string | number;
}

/** Node / CPU / date facts, plus `extra` ones such as the redis-server version. */
export function environment(extra: Record<string, string | number> = {}): Environment {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    node: process.version,
    v8: process.versions.v8,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cpuCount: os.availableParallelism?.() ?? cpus.length,
    ...extra,
  };
}

/** The environment as markdown bullet lines, printed above a result table. */
export function environmentHeader(env: Environment, labels: Record<string, string> = {}): string {
  const known: [string, string][] = [
    ['Date', env.date],
    ['Node', `${env.node} (V8 ${env.v8})`],
    ['Platform', env.platform],
    ['CPU', `${env.cpuModel} × ${env.cpuCount}`],
  ];
  const builtin = new Set(['date', 'node', 'v8', 'platform', 'cpuModel', 'cpuCount']);
  const extra = Object.entries(env)
    .filter(([key]) => !builtin.has(key))
    .map(([key, value]): [string, string] => [labels[key] ?? key, String(value)]);
  return [...known, ...extra].map(([label, value]) => `- ${label}: ${value}`).join('\n');
}

/** The `redis_version` field of an `INFO server` reply. */
export function redisVersionOf(info: string): string {
  return /^redis_version:(.*)$/m.exec(info)?.[1]?.trim() ?? 'unknown';
}

// ---------------------------------------------------------------------------
// Helpers of the worker benchmark (bench/worker.ts)

/** Half the min-max range of `values` over their mean (0.05 = ±5%); NaN when empty. */
export function relativeSpread(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return (Math.max(...values) - Math.min(...values)) / 2 / mean;
}

/** `items` rotated left by `shift` (modulo its length): round r of an interleaved run starts at item r. */
export function rotate<T>(items: readonly T[], shift: number): T[] {
  if (items.length === 0) return [];
  const s = ((shift % items.length) + items.length) % items.length;
  return [...items.slice(s), ...items.slice(0, s)];
}

/** Adds counters name by name (e.g. the `INFO commandstats` of several nodes). */
export function addCounts(...counts: readonly Readonly<Record<string, number>>[]): Record<string, number> {
  const sum: Record<string, number> = {};
  for (const c of counts) for (const [name, n] of Object.entries(c)) sum[name] = (sum[name] ?? 0) + n;
  return sum;
}

/**
 * Commands a benchmark itself does not send: the harness's INFO / CONFIG RESETSTAT / FLUSHALL probes and
 * connection handshakes. Names as `INFO commandstats` spells them (`config|resetstat`, `client|setinfo`).
 */
export function isRedisAdminCommand(name: string): boolean {
  return /^(info|config|hello|client|ping|flushall|flushdb|select|quit|script|command|cluster|auth)(\||$)/.test(
    name,
  );
}

/** Total calls in `counts`, leaving out the commands `exclude` names (default: Redis admin commands). */
export function totalCalls(
  counts: Readonly<Record<string, number>>,
  exclude: (name: string) => boolean = isRedisAdminCommand,
): number {
  return Object.entries(counts).reduce((n, [name, calls]) => (exclude(name) ? n : n + calls), 0);
}

/** `after - before`, name by name (names only in `before` are left out). */
export function diffCounts(
  after: Readonly<Record<string, number>>,
  before: Readonly<Record<string, number>>,
): Record<string, number> {
  return Object.fromEntries(Object.entries(after).map(([name, n]) => [name, n - (before[name] ?? 0)]));
}
