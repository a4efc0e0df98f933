/**
 * The one runner of both property suites: fast-check's `check` over real schedules, bounded in time,
 * with the settings a long run passes in its environment (fuzz/run.ts), and a report of what ran.
 *
 * Environment: PROPERTY_RUNS, PROPERTY_SEED, PROPERTY_PATH (replay a failing schedule),
 * PROPERTY_SHRINK_MS (how long shrinking may go on), PROPERTY_VERBOSE (a line per run),
 * PROPERTY_REPORT (a file that receives the run's totals as JSON, for fuzz/run.ts).
 */
import { appendFileSync } from 'node:fs';
import fc from 'fast-check';

export interface PropertySettings {
  readonly runs: number;
  readonly seed: number | undefined;
  readonly path: string | undefined;
  readonly shrinkMs: number;
  readonly verbose: boolean;
}

export function propertySettings(defaultRuns: number): PropertySettings {
  const env = process.env;
  return {
    runs: Number(env.PROPERTY_RUNS ?? defaultRuns),
    seed: env.PROPERTY_SEED === undefined ? undefined : Number(env.PROPERTY_SEED),
    path: env.PROPERTY_PATH,
    shrinkMs: Number(env.PROPERTY_SHRINK_MS ?? 120_000),
    verbose: env.PROPERTY_VERBOSE !== undefined,
  };
}

/** What one schedule exercised: counts by name, summed over the run into the report. */
export type Tally = Readonly<Record<string, number>>;

export function describeTally(tally: Tally): string {
  return Object.entries(tally)
    .map(([name, n]) => `${name} ${n}`)
    .join(', ');
}

export interface PropertyReport {
  readonly suite: string;
  readonly seed: number;
  /** Schedules that ran to their end (fewer than asked when the time bound interrupted the run). */
  readonly runs: number;
  readonly failed: boolean;
  readonly interrupted: boolean;
  readonly durationMs: number;
  readonly tally: Tally;
}

/** The time the whole property may take: every run at its bound, then the shrinking. */
export function propertyTimeoutMs(settings: PropertySettings, perRunMs: number): number {
  return settings.runs * perRunMs + settings.shrinkMs + 30_000;
}

/**
 * Runs `check` over `settings.runs` schedules; a failure shrinks (within the shrink bound) and throws
 * fast-check's report, with the seed and path to replay it. `check` returns what the schedule exercised.
 */
export async function runProperty<T>(
  suite: string,
  arbitrary: fc.Arbitrary<T>,
  check: (value: T) => Promise<Tally>,
  settings: PropertySettings,
  perRunMs: number,
): Promise<void> {
  const tally: Record<string, number> = {};
  let completed = 0;
  let failedOnce = false;
  const started = performance.now();
  const details = await fc.check(
    fc.asyncProperty(arbitrary, async (value) => {
      // After the first failure fast-check reruns shrunk schedules: only the first pass counts.
      let counts: Tally;
      try {
        counts = await check(value);
      } catch (error) {
        failedOnce = true;
        throw error;
      }
      if (!failedOnce) {
        completed++;
        for (const [name, n] of Object.entries(counts)) tally[name] = (tally[name] ?? 0) + n;
      }
    }),
    {
      numRuns: settings.runs,
      ...(settings.seed === undefined ? {} : { seed: settings.seed }),
      ...(settings.path === undefined ? {} : { path: settings.path }),
      // Shrinking reruns real schedules: bounded, and what it found so far is reported.
      interruptAfterTimeLimit: settings.runs * perRunMs + settings.shrinkMs,
      markInterruptAsFailure: false,
    },
  );
  const report: PropertyReport = {
    suite,
    seed: details.seed,
    runs: details.failed ? completed : details.numRuns,
    failed: details.failed,
    interrupted: details.interrupted,
    durationMs: Math.round(performance.now() - started),
    tally,
  };
  const reportFile = process.env.PROPERTY_REPORT;
  if (reportFile !== undefined) appendFileSync(reportFile, `${JSON.stringify(report)}\n`);
  if (details.failed) {
    // fast-check's report gives the seed, path and counterexample; the check's own error says which
    // rule broke, with the trail.
    const cause = details.errorInstance;
    const why = cause instanceof Error ? cause.message : String(cause);
    const replay = `npm run fuzz -- --suite ${suite} --seed=${details.seed} --path=${details.counterexamplePath ?? ''}`;
    throw new Error(`${fc.defaultReportMessage(details) ?? 'property failed'}\nreplay: ${replay}\n${why}`, {
      cause,
    });
  }
}
