/**
 * Review of issue 11 (unit): the trace context a Publisher adds stays within the queue's bytes, hostile
 * X-Ray headers link to nothing, and the examples' PromQL uses only exported label names, outcome values
 * and real PromQL functions (the examples test checks metric names only).
 */
import { readFileSync } from 'node:fs';
import type { Message, MessageAttributeValue } from '@aws-sdk/client-sqs';
import { createTraceState, type SpanContext, TraceFlags } from '@opentelemetry/api';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { createMetrics, OUTCOME_EVENTS } from '../../src/observability/metrics.ts';
import { creationLinks, injectCreationContext } from '../../src/observability/propagation.ts';
import { messageSize } from '../../src/runtime/sqs-actions.ts';

const context: SpanContext = {
  traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
  spanId: '00f067aa0ba902b7',
  traceFlags: TraceFlags.SAMPLED,
  traceState: createTraceState('vendor=value'),
};

describe('injectCreationContext within a byte budget', () => {
  it('adds traceparent (and tracestate) only when the bytes SQS counts fit', () => {
    const sized = (bytesLeft: number): Record<string, MessageAttributeValue> => {
      const attributes: Record<string, MessageAttributeValue> = {};
      const result = injectCreationContext(attributes, context, 10, bytesLeft);
      expect(messageSize('', attributes)).toBeLessThanOrEqual(Math.max(0, bytesLeft));
      expect(result).toBe(Object.keys(attributes).length > 0 ? 'injected' : 'no_room');
      return attributes;
    };
    // traceparent: 11 + 6 + 55 bytes; tracestate: 10 + 6 + 12.
    expect(Object.keys(sized(71))).toEqual([]);
    expect(Object.keys(sized(72))).toEqual(['traceparent']);
    expect(Object.keys(sized(99))).toEqual(['traceparent']);
    expect(Object.keys(sized(100))).toEqual(['traceparent', 'tracestate']);
    expect(Object.keys(sized(-5))).toEqual([]);
  });
});

describe('hostile AWSTraceHeader values', () => {
  const message = (header: string): Message => ({ MessageId: 'm', Attributes: { AWSTraceHeader: header } });
  it('link to nothing, and never throw', () => {
    for (const header of [
      'Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=1',
      'Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0000000000000000',
      'Root=1-5759e988-bd862e3fe1be46a99427279;Parent=53995c3f42cd8ad8',
      'Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8',
      'Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad',
      'Root=1-5759e988-bd862e3fe1be46a994272793',
      `Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;${'x=y;'.repeat(2_000)}`,
      ';;;===;Root;Parent=',
      '',
    ]) {
      expect(creationLinks(message(header)), header.slice(0, 80)).toEqual([]);
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// The examples' PromQL: label names, outcome values and function names.

const DIR = new URL('../../examples/observability/', import.meta.url);
const read = (file: string): string => readFileSync(new URL(file, DIR), 'utf8');

/** Labels Prometheus adds (target labels, histogram buckets) besides the worker's own. */
const PROMETHEUS_LABELS = ['job', 'instance', 'le', '__name__'];
const PROMQL_FUNCTIONS = new Set([
  'abs',
  'absent',
  'absent_over_time',
  'avg_over_time',
  'ceil',
  'changes',
  'clamp',
  'clamp_max',
  'clamp_min',
  'count_over_time',
  'delta',
  'deriv',
  'exp',
  'floor',
  'histogram_quantile',
  'holt_winters',
  'idelta',
  'increase',
  'irate',
  'label_replace',
  'label_values',
  'last_over_time',
  'max_over_time',
  'min_over_time',
  'predict_linear',
  'quantile_over_time',
  'rate',
  'resets',
  'round',
  'scalar',
  'sort',
  'sort_desc',
  'sqrt',
  'sum_over_time',
  'time',
  'timestamp',
  'vector',
  'sum',
  'min',
  'max',
  'avg',
  'count',
  'stddev',
  'stdvar',
  'topk',
  'bottomk',
  'quantile',
  'count_values',
  'group',
  'query_result',
]);

/** Every PromQL expression of the dashboard (targets and variables) and of the alerting rules. */
function expressions(): string[] {
  const found: string[] = [];
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) for (const x of node) walk(x);
    else if (node && typeof node === 'object') {
      for (const [key, value] of Object.entries(node)) {
        if ((key === 'expr' || key === 'query') && typeof value === 'string' && value.includes('sqs_redlock'))
          found.push(value);
        else walk(value);
      }
    }
  };
  walk(JSON.parse(read('grafana-dashboard.json')));
  const rules = parse(read('alerts.yaml')) as { groups: { rules: { expr: string }[] }[] };
  for (const group of rules.groups) for (const rule of group.rules) found.push(rule.expr);
  return found;
}

describe('examples/observability PromQL (labels and functions)', () => {
  it('uses only label names the worker exports, outcome values it emits, and PromQL functions', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const labels = new Set(PROMETHEUS_LABELS);
    for (const m of await metrics.registry.getMetricsAsJSON()) {
      for (const v of m.values) for (const name of Object.keys(v.labels)) labels.add(name);
    }
    // Labels that appear only once a series exists: read from the metric definitions.
    for (const name of ['outcome', 'reason', 'operation', 'node']) labels.add(name);
    const outcomes = new Set(Object.keys(OUTCOME_EVENTS));
    const exprs = expressions();
    expect(exprs.length).toBeGreaterThan(10);
    for (const expr of exprs) {
      const noStrings = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
      for (const [, list = ''] of noStrings.matchAll(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g)) {
        for (const name of list
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean))
          expect(labels.has(name), `label ${name} in ${expr}`).toBe(true);
      }
      for (const [, name = '', value = ''] of expr.matchAll(/([a-zA-Z_]\w*)\s*=~?\s*"([^"]*)"/g)) {
        expect(labels.has(name), `label ${name} in ${expr}`).toBe(true);
        if (name === 'outcome') expect(outcomes.has(value), `outcome ${value} in ${expr}`).toBe(true);
      }
      for (const [, fn = ''] of noStrings.replace(/\{[^}]*\}/g, ' ').matchAll(/([a-zA-Z_]\w*)\s*\(/g)) {
        if (['by', 'without', 'on', 'ignoring', 'group_left', 'group_right'].includes(fn)) continue;
        expect(PROMQL_FUNCTIONS.has(fn), `function ${fn} in ${expr}`).toBe(true);
      }
    }
  });
});
