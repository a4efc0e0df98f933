/**
 * The real OpenTelemetry SDK for a test file: a TracerProvider exporting to memory, the async hooks
 * context manager, and a MeterProvider whose reader collects on demand, registered as the globals before
 * the file's tests (workers made afterwards take their tracer and meter from them) and removed after.
 */
import {
  context,
  type DiagLogger,
  DiagLogLevel,
  diag,
  metrics,
  type SpanContext,
  trace,
} from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { type DataPoint, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import {
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
  type SpanProcessor,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import { afterAll, beforeAll } from 'vitest';

/** Collects when asked (no timer): what a periodic reader would export, read by the test. */
class OnDemandReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

/** A span processor that throws on every span start and end while `faulty` is set (a buggy SDK plugin). */
class FaultyProcessor implements SpanProcessor {
  faulty = false;
  onStart(): void {
    if (this.faulty) throw new Error('faulty span processor: onStart');
  }
  onEnd(): void {
    if (this.faulty) throw new Error('faulty span processor: onEnd');
  }
  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

/** Tracks the spans started and not ended yet (one left open is a leak: its trace never completes). */
class OpenSpans implements SpanProcessor {
  readonly open = new Set<ReadableSpan>();
  onStart(span: unknown): void {
    this.open.add(span as ReadableSpan);
  }
  onEnd(span: ReadableSpan): void {
    this.open.delete(span);
  }
  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

export interface Otel {
  /** Every span ended so far. */
  spans(): ReadableSpan[];
  /** Every span started and not ended yet. */
  openSpans(): ReadableSpan[];
  /** What the API's diag logger was told at level error (a span ended twice, for one). */
  readonly diagErrors: readonly string[];
  /** The data points of one metric now (summed over the whole run: cumulative temporality). */
  points(name: string): Promise<DataPoint<unknown>[]>;
  /** Removes the global providers (a worker made now records nothing) until {@link Otel.register}. */
  unregister(): void;
  register(): void;
  /** Makes a span processor throw on every span start and end (until set back to false). */
  faulty(on: boolean): void;
}

export function useOtel(): Otel {
  const exporter = new InMemorySpanExporter();
  const faulty = new FaultyProcessor();
  const open = new OpenSpans();
  const diagErrors: string[] = [];
  const provider = new TracerProvider({
    spanProcessors: [faulty, open, new SimpleSpanProcessor({ exporter })],
  });
  const reader = new OnDemandReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  const contextManager = new AsyncLocalStorageContextManager();
  const register = (): void => {
    trace.setGlobalTracerProvider(provider);
    metrics.setGlobalMeterProvider(meterProvider);
  };
  const unregister = (): void => {
    trace.disable();
    metrics.disable();
  };
  const diagLogger: DiagLogger = {
    error: (message: string) => diagErrors.push(message),
    warn: () => {},
    info: () => {},
    debug: () => {},
    verbose: () => {},
  };
  beforeAll(() => {
    context.setGlobalContextManager(contextManager.enable());
    diag.setLogger(diagLogger, { logLevel: DiagLogLevel.ERROR, suppressOverrideMessage: true });
    register();
  });
  afterAll(async () => {
    unregister();
    context.disable();
    diag.disable();
    await provider.shutdown();
    await meterProvider.shutdown();
  });
  return {
    spans: () => exporter.getFinishedSpans(),
    openSpans: () => [...open.open],
    diagErrors,
    async points(name) {
      const { resourceMetrics } = await reader.collect();
      const found = resourceMetrics.scopeMetrics
        .flatMap((s) => s.metrics)
        .filter((m) => m.descriptor.name === name);
      return found.flatMap((m) => m.dataPoints as DataPoint<unknown>[]);
    },
    unregister,
    register,
    faulty(on) {
      faulty.faulty = on;
    },
  };
}

/** Whether a span's parent is `parent`. */
export function isChildOf(span: ReadableSpan, parent: ReadableSpan): boolean {
  const p = parent.spanContext();
  return span.parentSpanContext?.spanId === p.spanId && span.parentSpanContext?.traceId === p.traceId;
}

/** Whether a span links to `target` (a span, or the ids of one). */
export function linksTo(
  span: ReadableSpan,
  target: ReadableSpan | Pick<SpanContext, 'traceId' | 'spanId'>,
): boolean {
  const t = 'spanContext' in target ? target.spanContext() : target;
  return span.links.some((l) => l.context.traceId === t.traceId && l.context.spanId === t.spanId);
}
