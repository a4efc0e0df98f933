/**
 * examples/observability: every metric the Grafana dashboard and the Prometheus alerting rules name is
 * one the worker exports (read from a real createMetrics registry), and the rules parse. promtool is not
 * available here: the YAML is parsed and each expression's metric names are checked.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { createMetrics } from '../../src/observability/metrics.ts';

const DIR = new URL('../../examples/observability/', import.meta.url);
const read = (file: string): string => readFileSync(new URL(file, DIR), 'utf8');

/** PromQL words that are not metric names (keywords, aggregation modifiers). */
const KEYWORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'inf',
  'nan',
]);

/**
 * The metric names of a PromQL expression (Grafana's `$variables` allowed): identifiers that are not
 * functions (followed by `(`), keywords, label names of `by (...)` lists and matchers, or durations.
 */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""') // string literals
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // ranges and subqueries
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ') // label lists
    .replace(/label_values\(([^,()]*),[^)]*\)/g, ' $1 '); // Grafana: label_values(metric, label)
  const names = new Set<string>();
  for (const match of stripped.matchAll(/(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    const [, name = '', call] = match;
    if (call || KEYWORDS.has(name.toLowerCase())) continue;
    names.add(name);
  }
  return [...names];
}

/** Parentheses, brackets and braces balance, outside string literals. */
function balanced(expr: string): boolean {
  const pairs: Record<string, string> = { ')': '(', ']': '[', '}': '{' };
  const stack: string[] = [];
  for (const ch of expr.replace(/"(?:[^"\\]|\\.)*"/g, '""')) {
    if ('([{'.includes(ch)) stack.push(ch);
    else if (ch in pairs && stack.pop() !== pairs[ch]) return false;
  }
  return stack.length === 0;
}

/** Every series name a worker's registry exposes (histograms as their _bucket, _sum and _count). */
async function exportedNames(): Promise<Set<string>> {
  const metrics = createMetrics({ defaultMetrics: true });
  const names = new Set<string>();
  for (const m of await metrics.registry.getMetricsAsJSON()) {
    names.add(m.name);
    if (String(m.type) === 'histogram')
      for (const s of ['_bucket', '_sum', '_count']) names.add(`${m.name}${s}`);
  }
  return names;
}

interface Panel {
  title?: string;
  type?: string;
  targets?: { expr?: string }[];
  panels?: Panel[];
}

describe('the PromQL metric-name reader', () => {
  it('finds metric names and only them', () => {
    expect(
      metricNames(
        'histogram_quantile(0.99, sum by (le, job) (rate(a_seconds_bucket{job=~"$job", x="y(z)"}[$__rate_interval]))) / on (job) group_left b_total offset 5m > bool 1',
      ).sort(),
    ).toEqual(['a_seconds_bucket', 'b_total']);
    expect(metricNames('label_values(sqs_redlock_messages_total{job=~"$job"}, instance)')).toEqual([
      'sqs_redlock_messages_total',
    ]);
  });
});

describe('examples/observability', () => {
  it('the Grafana dashboard names only exported metrics, and covers what an operator watches', async () => {
    const dashboard = JSON.parse(read('grafana-dashboard.json')) as {
      panels: Panel[];
      templating: { list: { query?: string | { query?: string } }[] };
    };
    const exported = await exportedNames();
    const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== 'row');
    const used = new Set<string>();
    for (const panel of panels) {
      expect(panel.targets?.length, `panel "${panel.title}" has no query`).toBeGreaterThan(0);
      for (const { expr = '' } of panel.targets ?? []) {
        expect(balanced(expr), expr).toBe(true);
        const names = metricNames(expr);
        expect(names.length, `no metric in ${expr}`).toBeGreaterThan(0);
        for (const name of names) {
          expect(exported.has(name), `${name} (panel "${panel.title}") is not exported`).toBe(true);
          used.add(name);
        }
      }
    }
    for (const variable of dashboard.templating.list) {
      const query = typeof variable.query === 'string' ? undefined : variable.query?.query;
      for (const name of query ? metricNames(query) : []) expect(exported.has(name), name).toBe(true);
    }
    // Throughput by outcome, lock and handler latency, locks held, nodes up and quorum, polling, DLQ.
    for (const name of [
      'sqs_redlock_messages_total',
      'sqs_redlock_lock_acquire_seconds_bucket',
      'sqs_redlock_handler_seconds_bucket',
      'sqs_redlock_locks_held',
      'sqs_redlock_redis_nodes_up',
      'sqs_redlock_redis_quorum',
      'sqs_redlock_polling_paused',
      'sqs_redlock_dead_lettered_total',
    ]) {
      expect(used.has(name), `the dashboard shows no ${name}`).toBe(true);
    }
  });

  it('the alerting rules parse, name only exported metrics, and alert on quorum, lock loss, poison and pauses', async () => {
    const rules = parse(read('alerts.yaml')) as {
      groups: { name: string; rules: { alert?: string; expr?: unknown; for?: unknown; labels?: object }[] }[];
    };
    const exported = await exportedNames();
    expect(rules.groups.length).toBeGreaterThan(0);
    const byMetric = new Map<string, string[]>();
    for (const group of rules.groups) {
      expect(typeof group.name).toBe('string');
      for (const rule of group.rules) {
        expect(rule.alert, JSON.stringify(rule)).toMatch(/^[A-Za-z][A-Za-z0-9_]*$/);
        expect(typeof rule.expr).toBe('string');
        const expr = String(rule.expr);
        expect(balanced(expr), expr).toBe(true);
        if (rule.for !== undefined) expect(String(rule.for)).toMatch(/^\d+[smhdwy]$/);
        expect(rule.labels).toHaveProperty('severity');
        const names = metricNames(expr);
        expect(names.length, `no metric in ${expr}`).toBeGreaterThan(0);
        for (const name of names) {
          expect(exported.has(name), `${name} (alert ${rule.alert}) is not exported`).toBe(true);
          byMetric.set(name, [...(byMetric.get(name) ?? []), expr]);
        }
      }
    }
    const alerted = (metric: string, pattern: RegExp) =>
      (byMetric.get(metric) ?? []).some((e) => pattern.test(e));
    expect(alerted('sqs_redlock_redis_quorum', /sqs_redlock_redis_nodes_up/)).toBe(true);
    expect(alerted('sqs_redlock_messages_total', /outcome="lock_lost"/)).toBe(true);
    expect(alerted('sqs_redlock_messages_total', /outcome="poison"/)).toBe(true);
    expect(alerted('sqs_redlock_polling_paused', /.*/)).toBe(true);
  });
});
