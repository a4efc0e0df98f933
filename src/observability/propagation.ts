import type { Message, MessageAttributeValue } from '@aws-sdk/client-sqs';
import {
  createTraceState,
  isSpanContextValid,
  type Link,
  type SpanContext,
  TraceFlags,
} from '@opentelemetry/api';
import { ATTR_MESSAGING_MESSAGE_ID } from './semconv.ts';

/**
 * A message's creation context travels as W3C Trace Context message attributes (`traceparent`, and
 * `tracestate` beside it), written and read here whatever propagators the application configured: the
 * format on the queue is this package's, and no propagator (baggage, say) can spend attributes of SQS's
 * ten. Messages sent through X-Ray carry it in the `AWSTraceHeader` system attribute instead (the only
 * mechanism Lambda's conventions support); both are read.
 */
export const TRACEPARENT = 'traceparent';
export const TRACESTATE = 'tracestate';
export const AWS_TRACE_HEADER = 'AWSTraceHeader';

/** Longer values are no trace context (a traceparent is 55 characters): not parsed. */
const MAX_HEADER_CHARS = 4096;
const TRACEPARENT_FORMAT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const XRAY_ROOT = /^1-([0-9a-f]{8})-([0-9a-f]{24})$/i;
const XRAY_PARENT = /^[0-9a-f]{16}$/i;

/** The W3C `traceparent` (version 00) of a span context. */
export function formatTraceparent(spanContext: SpanContext): string {
  const flags = (spanContext.traceFlags & 0xff).toString(16).padStart(2, '0');
  return `00-${spanContext.traceId}-${spanContext.spanId}-${flags}`;
}

/** The remote span context of a W3C `traceparent` (and `tracestate`), or undefined if it is not valid. */
export function parseTraceparent(traceparent: string, tracestate?: string): SpanContext | undefined {
  if (traceparent.length > MAX_HEADER_CHARS) return undefined;
  const match = TRACEPARENT_FORMAT.exec(traceparent.trim());
  if (!match) return undefined;
  const [, version, traceId = '', spanId = '', flags = '', rest] = match;
  // Version ff is forbidden; version 00 ends at the flags (a later version may add fields: ignored).
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined;
  const spanContext: SpanContext = {
    traceId,
    spanId,
    traceFlags: Number.parseInt(flags, 16),
    isRemote: true,
  };
  if (tracestate && tracestate.length <= MAX_HEADER_CHARS) {
    try {
      spanContext.traceState = createTraceState(tracestate);
    } catch {
      // A tracestate that does not parse is dropped; the traceparent alone still links.
    }
  }
  return isSpanContextValid(spanContext) ? spanContext : undefined;
}

/**
 * The remote span context of an X-Ray trace header
 * (`Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1`), or undefined when it
 * has no valid Root and Parent (a Root alone names a trace, not a span to link to).
 */
export function parseXrayTraceHeader(header: string): SpanContext | undefined {
  if (header.length > MAX_HEADER_CHARS) return undefined;
  let root: string | undefined;
  let parent: string | undefined;
  let sampled: string | undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const key = part.slice(0, eq).trim().toLowerCase();
    const value = part.slice(eq + 1).trim();
    if (key === 'root') root = value;
    else if (key === 'parent') parent = value;
    else if (key === 'sampled') sampled = value;
  }
  const ids = XRAY_ROOT.exec(root ?? '');
  if (!ids || !parent || !XRAY_PARENT.test(parent)) return undefined;
  const spanContext: SpanContext = {
    traceId: `${ids[1]}${ids[2]}`.toLowerCase(),
    spanId: parent.toLowerCase(),
    traceFlags: sampled === '1' ? TraceFlags.SAMPLED : TraceFlags.NONE,
    isRemote: true,
  };
  return isSpanContextValid(spanContext) ? spanContext : undefined;
}

/**
 * Links to the creation context(s) a received message carries: its `traceparent` message attribute, its
 * `AWSTraceHeader` system attribute, or both when they name different spans. Each link carries the
 * message's id, as the conventions put per-message attributes on links.
 */
export function creationLinks(message: Message): Link[] {
  const attributes = message.MessageAttributes;
  const traceparent = attributes?.[TRACEPARENT]?.StringValue;
  const xray = message.Attributes?.[AWS_TRACE_HEADER];
  if (traceparent === undefined && xray === undefined) return [];
  const found: SpanContext[] = [];
  const w3c =
    traceparent === undefined
      ? undefined
      : parseTraceparent(traceparent, attributes?.[TRACESTATE]?.StringValue);
  if (w3c) found.push(w3c);
  const fromXray = xray === undefined ? undefined : parseXrayTraceHeader(xray);
  if (fromXray && !(w3c && w3c.traceId === fromXray.traceId && w3c.spanId === fromXray.spanId)) {
    found.push(fromXray);
  }
  const linkAttributes = message.MessageId ? { [ATTR_MESSAGING_MESSAGE_ID]: message.MessageId } : {};
  return found.map((context) => ({ context, attributes: linkAttributes }));
}

/** What {@link injectCreationContext} did. */
export type Injection =
  | 'injected'
  /** SQS's attribute limit, or the bytes the queue's MaximumMessageSize leaves, is reached: nothing added. */
  | 'no_room'
  /** The message already carries a `traceparent`: a creation context of the caller's, left as it is. */
  | 'present'
  /** No valid span context (no OpenTelemetry SDK registered): nothing to add. */
  | 'no_context';

/**
 * Adds `spanContext` to `attributes` as the message's creation context, within `limit` attributes in all
 * and `bytesLeft` bytes (what SQS counts of an attribute: its name, type and value), so the trace context
 * never makes SQS refuse a message it would accept without it: `traceparent` when there is room for one
 * more, `tracestate` only beside it and only with room for both.
 */
export function injectCreationContext(
  attributes: Record<string, MessageAttributeValue>,
  spanContext: SpanContext,
  limit: number,
  bytesLeft = Number.POSITIVE_INFINITY,
): Injection {
  if (!isSpanContextValid(spanContext)) return 'no_context';
  if (attributes[TRACEPARENT] !== undefined) return 'present';
  const room = limit - Object.keys(attributes).length;
  const traceparent = formatTraceparent(spanContext);
  const parentBytes = stringAttributeBytes(TRACEPARENT, traceparent);
  if (room < 1 || parentBytes > bytesLeft) return 'no_room';
  attributes[TRACEPARENT] = { DataType: 'String', StringValue: traceparent };
  const state = spanContext.traceState?.serialize();
  // SQS refuses an empty string value.
  if (
    state &&
    room >= 2 &&
    attributes[TRACESTATE] === undefined &&
    parentBytes + stringAttributeBytes(TRACESTATE, state) <= bytesLeft
  ) {
    attributes[TRACESTATE] = { DataType: 'String', StringValue: state };
  }
  return 'injected';
}

/** What SQS counts against MaximumMessageSize for a String attribute (as sqs-actions' messageSize). */
function stringAttributeBytes(name: string, value: string): number {
  return (
    Buffer.byteLength(name, 'utf8') + Buffer.byteLength('String', 'utf8') + Buffer.byteLength(value, 'utf8')
  );
}
