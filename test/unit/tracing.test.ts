import type { Message, MessageAttributeValue } from '@aws-sdk/client-sqs';
import { createTraceState, type SpanContext, TraceFlags } from '@opentelemetry/api';
import * as incubating from '@opentelemetry/semantic-conventions/incubating';
import { describe, expect, it } from 'vitest';
import {
  creationLinks,
  formatTraceparent,
  injectCreationContext,
  parseTraceparent,
  parseXrayTraceHeader,
} from '../../src/observability/propagation.ts';
import * as semconv from '../../src/observability/semconv.ts';
import { queueNameOf } from '../../src/observability/tracing.ts';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN_ID = '00f067aa0ba902b7';
const string = (value: string): MessageAttributeValue => ({ DataType: 'String', StringValue: value });

describe('semantic convention names', () => {
  it('each copied constant equals the installed @opentelemetry/semantic-conventions/incubating one', () => {
    const copied = Object.entries(semconv).filter(([name]) => /^(ATTR|METRIC|MESSAGING)_/.test(name));
    const published = incubating as unknown as Record<string, unknown>;
    // Ours only: the bucket advice is a list in the conventions' prose, not an exported constant.
    const ours = new Set(['MESSAGING_DURATION_BUCKETS']);
    const checked = copied.filter(([name]) => !ours.has(name));
    expect(checked.length).toBeGreaterThan(15);
    for (const [name, value] of checked) expect([name, value]).toEqual([name, published[name]]);
  });

  it('keeps this package’s own attributes under one prefix', () => {
    for (const name of Object.values(semconv.SRW)) expect(name).toMatch(/^sqs_redlock\.[a-z_.]+$/);
  });
});

describe('W3C trace context', () => {
  it('formats and parses traceparent, with the sampled flag and a tracestate', () => {
    const context: SpanContext = {
      traceId: TRACE_ID,
      spanId: SPAN_ID,
      traceFlags: TraceFlags.SAMPLED,
      traceState: createTraceState('congo=t61rcWkgMzE'),
    };
    const header = formatTraceparent(context);
    expect(header).toBe(`00-${TRACE_ID}-${SPAN_ID}-01`);
    const parsed = parseTraceparent(header, 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7');
    expect(parsed).toMatchObject({ traceId: TRACE_ID, spanId: SPAN_ID, traceFlags: 1, isRemote: true });
    expect(parsed?.traceState?.get('rojo')).toBe('00f067aa0ba902b7');
    expect(parseTraceparent(`00-${TRACE_ID}-${SPAN_ID}-00`)?.traceFlags).toBe(TraceFlags.NONE);
  });

  it('refuses what is not a traceparent', () => {
    for (const bad of [
      '',
      'garbage',
      `00-${'0'.repeat(32)}-${SPAN_ID}-01`, // all-zero trace id
      `00-${TRACE_ID}-${'0'.repeat(16)}-01`, // all-zero span id
      `ff-${TRACE_ID}-${SPAN_ID}-01`, // forbidden version
      `00-${TRACE_ID}-${SPAN_ID}-01-extra`, // version 00 ends at the flags
      `00-${TRACE_ID.toUpperCase()}-${SPAN_ID}-01`,
      `00-${TRACE_ID}-${SPAN_ID}-01${' '.repeat(5000)}x`,
    ]) {
      expect(parseTraceparent(bad)).toBeUndefined();
    }
    // A later version may append fields.
    expect(parseTraceparent(`01-${TRACE_ID}-${SPAN_ID}-01-more`)?.spanId).toBe(SPAN_ID);
  });
});

describe('X-Ray trace header (AWSTraceHeader)', () => {
  it('parses Root, Parent and Sampled, in any order and case of keys, ignoring others', () => {
    expect(
      parseXrayTraceHeader('Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1'),
    ).toEqual({
      traceId: '5759e988bd862e3fe1be46a994272793',
      spanId: '53995c3f42cd8ad8',
      traceFlags: TraceFlags.SAMPLED,
      isRemote: true,
    });
    expect(
      parseXrayTraceHeader(
        'sampled=0; parent=53995C3F42CD8AD8; Lineage=a87bd80c:1|68fd508a:5; root=1-5759E988-BD862E3FE1BE46A994272793',
      ),
    ).toMatchObject({
      traceId: '5759e988bd862e3fe1be46a994272793',
      spanId: '53995c3f42cd8ad8',
      traceFlags: TraceFlags.NONE,
    });
  });

  it('refuses a header without a valid Root and Parent', () => {
    for (const bad of [
      'Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1', // no span to link to
      'Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8',
      'Root=1-5759e988-bd862e3f;Parent=53995c3f42cd8ad8',
      'Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f',
      'Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0000000000000000',
      '',
    ]) {
      expect(parseXrayTraceHeader(bad)).toBeUndefined();
    }
  });
});

describe('creationLinks', () => {
  const message = (extra: Partial<Message>): Message => ({ MessageId: 'm-1', ReceiptHandle: 'r', ...extra });

  it('links to the traceparent attribute and to the AWSTraceHeader, each with the message id', () => {
    const links = creationLinks(
      message({
        MessageAttributes: { traceparent: string(`00-${TRACE_ID}-${SPAN_ID}-01`) },
        Attributes: { AWSTraceHeader: 'Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8' },
      }),
    );
    expect(links.map((l) => [l.context.traceId, l.context.spanId, l.attributes])).toEqual([
      [TRACE_ID, SPAN_ID, { 'messaging.message.id': 'm-1' }],
      ['5759e988bd862e3fe1be46a994272793', '53995c3f42cd8ad8', { 'messaging.message.id': 'm-1' }],
    ]);
  });

  it('links once when both name the same span, and not at all to what does not parse', () => {
    const same = `Root=1-${TRACE_ID.slice(0, 8)}-${TRACE_ID.slice(8)};Parent=${SPAN_ID};Sampled=1`;
    const both = message({
      MessageAttributes: { traceparent: string(`00-${TRACE_ID}-${SPAN_ID}-01`) },
      Attributes: { AWSTraceHeader: same },
    });
    expect(creationLinks(both)).toHaveLength(1);
    expect(creationLinks(message({ MessageAttributes: { traceparent: string('nope') } }))).toEqual([]);
    expect(creationLinks(message({}))).toEqual([]);
  });
});

describe('injectCreationContext', () => {
  const context: SpanContext = { traceId: TRACE_ID, spanId: SPAN_ID, traceFlags: TraceFlags.SAMPLED };
  const attributes = (count: number): Record<string, MessageAttributeValue> =>
    Object.fromEntries(Array.from({ length: count }, (_, i) => [`a${i}`, string(String(i))]));

  it('adds traceparent while under the limit, tracestate only with room for both', () => {
    const roomy = attributes(3);
    expect(injectCreationContext(roomy, { ...context, traceState: createTraceState('k=v') }, 10)).toBe(
      'injected',
    );
    expect(roomy.traceparent?.StringValue).toBe(`00-${TRACE_ID}-${SPAN_ID}-01`);
    expect(roomy.tracestate?.StringValue).toBe('k=v');

    const tight = attributes(9);
    expect(injectCreationContext(tight, { ...context, traceState: createTraceState('k=v') }, 10)).toBe(
      'injected',
    );
    expect(Object.keys(tight)).toHaveLength(10);
    expect(tight.tracestate).toBeUndefined();
  });

  it('leaves a full message, a traceparent of the caller, and an invalid context alone', () => {
    const full = attributes(10);
    expect(injectCreationContext(full, context, 10)).toBe('no_room');
    expect(Object.keys(full)).toHaveLength(10);

    const own = { traceparent: string('00-11111111111111111111111111111111-2222222222222222-01') };
    expect(injectCreationContext(own, context, 10)).toBe('present');
    expect(own.traceparent.StringValue).toMatch(/^00-1{32}/);

    const none = attributes(1);
    expect(
      injectCreationContext(none, { traceId: '0'.repeat(32), spanId: '0'.repeat(16), traceFlags: 0 }, 10),
    ).toBe('no_context');
    expect(Object.keys(none)).toEqual(['a0']);
  });
});

describe('queueNameOf', () => {
  it('is the last path segment of the queue URL', () => {
    expect(queueNameOf('https://sqs.eu-west-1.amazonaws.com/123456789012/orders.fifo')).toBe('orders.fifo');
    expect(queueNameOf('http://localhost:4566/000000000000/jobs/')).toBe('jobs');
  });
});
