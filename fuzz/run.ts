/**
 * The long run of the lock engine's property test (test/property/redlock-schedules.test.ts), or with
 * `--suite worker`, of the Workers' one with SQS in the loop (test/property/worker-schedules.test.ts):
 *
 *   npm run fuzz -- --runs 200                 200 random schedules
 *   npm run fuzz -- --runs 10000 --jobs 4      split over 4 processes, each with its own nodes and seed
 *   npm run fuzz -- --seed=S --path=P          replays (and shrinks) a failing schedule fast-check printed
 *   npm run fuzz -- --runs 50 --shrink-ms 600000
 *   npm run fuzz -- --suite worker --runs 500  500 Worker schedules (a few seconds each)
 *
 * Runs vitest on that one file, with the schedule count and seed in its environment, and prints the
 * totals (schedules, seeds, time, and what they exercised) from the reports the runs write.
 * A schedule mostly waits on timers, so a few jobs per core keep the cores busy; with more than one,
 * each job's output goes to a log file in --out.
 */
import { spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { PropertyReport } from '../test/property/run-property.ts';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '100' },
    jobs: { type: 'string', default: '1' },
    seed: { type: 'string' },
    path: { type: 'string' },
    'shrink-ms': { type: 'string', default: '300000' },
    verbose: { type: 'boolean', default: false },
    suite: { type: 'string', default: 'lock' },
    out: { type: 'string' },
  },
});

function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(2);
}

const SUITES: Record<string, string> = {
  lock: 'test/property/redlock-schedules.test.ts',
  worker: 'test/property/worker-schedules.test.ts',
};
const suiteFile =
  SUITES[values.suite] ??
  fail(`--suite must be one of ${Object.keys(SUITES).join(', ')}. Received: ${values.suite}`);
const positive = (flag: string, text: string): number => {
  const n = Number(text);
  return Number.isSafeInteger(n) && n >= 1
    ? n
    : fail(`${flag} must be a positive integer. Received: ${text}`);
};
const runs = positive('--runs', values.runs);
const jobs = positive('--jobs', values.jobs);
if (jobs > runs) fail(`--jobs must be at most --runs (${runs}). Received: ${jobs}`);
if (jobs > 1 && (values.seed !== undefined || values.path !== undefined)) {
  fail('--seed and --path replay one schedule: use them with --jobs 1');
}
const out = values.out ?? mkdtempSync(join(tmpdir(), 'fuzz-'));
mkdirSync(out, { recursive: true });
const reportFile = join(out, 'reports.jsonl');
writeFileSync(reportFile, '');

function runJob(index: number, jobRuns: number): Promise<number> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PROPERTY_RUNS: String(jobRuns),
    PROPERTY_SHRINK_MS: values['shrink-ms'],
    PROPERTY_REPORT: reportFile,
  };
  if (values.seed !== undefined) env.PROPERTY_SEED = values.seed;
  if (values.path !== undefined) env.PROPERTY_PATH = values.path;
  if (values.verbose) env.PROPERTY_VERBOSE = '1';
  const child = spawn('npx', ['vitest', 'run', suiteFile], {
    env,
    stdio: jobs === 1 ? 'inherit' : ['ignore', 'pipe', 'pipe'],
  });
  if (jobs > 1) {
    const log = createWriteStream(join(out, `job-${index}.log`));
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
  }
  return new Promise((resolve) => child.on('close', (code) => resolve(code ?? 1)));
}

const started = performance.now();
if (jobs > 1) process.stdout.write(`${jobs} jobs of ${values.suite} schedules; logs in ${out}\n`);
const codes = await Promise.all(
  Array.from({ length: jobs }, (_, i) => runJob(i, Math.floor(runs / jobs) + (i < runs % jobs ? 1 : 0))),
);

let reports: PropertyReport[] = [];
try {
  reports = readFileSync(reportFile, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as PropertyReport);
} catch {
  // No report: vitest failed before the property ran; its exit code says so below.
}
const totals: Record<string, number> = {};
for (const report of reports) {
  for (const [name, n] of Object.entries(report.tally)) totals[name] = (totals[name] ?? 0) + n;
}
const ran = reports.reduce((n, r) => n + r.runs, 0);
const lines = [
  `${values.suite} schedules: ${ran} of ${runs} run, ${reports.filter((r) => r.failed).length} failed, in ${Math.round((performance.now() - started) / 1000)} s over ${jobs} job(s)`,
  ...reports.map(
    (r) =>
      `  seed ${r.seed}: ${r.runs} runs${r.failed ? ', FAILED' : ''}${r.interrupted ? ', interrupted by the time bound' : ''}, ${Math.round(r.durationMs / 1000)} s`,
  ),
  `  exercised: ${Object.entries(totals)
    .map(([name, n]) => `${name} ${n}`)
    .join(', ')}`,
];
process.stdout.write(`${lines.join('\n')}\n`);
process.exit(codes.find((c) => c !== 0) ?? (ran < runs ? 1 : 0));
