/**
 * Tracing without code for the CLI (or any Node process): registers the OpenTelemetry SDK from the
 * standard OTEL_* variables before the application loads.
 *
 *   NODE_OPTIONS="--import ./examples/observability/otel.js" \
 *   OTEL_SERVICE_NAME=orders-worker OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 \
 *     npx sqs-redlock-worker run ./dist/handler.js
 *
 * Needs, besides sqs-redlock-worker (which brings @opentelemetry/api): @opentelemetry/sdk-trace,
 * @opentelemetry/context-async-hooks, @opentelemetry/exporter-trace-otlp-http, @opentelemetry/resources.
 * The 3.x SDK line has no NodeSDK to read the environment, so this file does what it would for traces:
 *
 *   OTEL_SDK_DISABLED            true: register nothing
 *   OTEL_TRACES_EXPORTER         otlp (default: OTLP/HTTP, JSON), console, or none
 *   OTEL_EXPORTER_OTLP_ENDPOINT  collector base URL (default http://localhost:4318; /v1/traces is appended);
 *                                OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, _HEADERS, _TIMEOUT are read by the exporter
 *   OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES   the resource (host and process attributes are added)
 *   OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG  always_on, always_off, traceidratio,
 *                                parentbased_always_on (default), parentbased_always_off, parentbased_traceidratio
 *   OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_EXPORT_TIMEOUT
 *
 * Spans still buffered are exported when the process ends by itself (the CLI does after SIGTERM); a
 * process.exit() or a kill drops them.
 */
import { context, diag, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import {
  defaultResource,
  detectResources,
  envDetector,
  hostDetector,
  processDetector,
} from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ConsoleSpanExporter,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace';

const env = process.env;

function number(name, fallback) {
  const value = Number(env[name]);
  return env[name] !== undefined && Number.isFinite(value) && value >= 0 ? value : fallback;
}

function sampler() {
  const ratio = () => new TraceIdRatioBasedSampler(Math.min(1, number('OTEL_TRACES_SAMPLER_ARG', 1)));
  switch ((env.OTEL_TRACES_SAMPLER ?? 'parentbased_always_on').trim().toLowerCase()) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return ratio();
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: ratio() });
    default:
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
  }
}

function exporter() {
  switch ((env.OTEL_TRACES_EXPORTER ?? 'otlp').split(',')[0]?.trim().toLowerCase()) {
    case 'none':
      return undefined;
    case 'console':
      return new ConsoleSpanExporter();
    default:
      return new OTLPTraceExporter();
  }
}

const disabled = (env.OTEL_SDK_DISABLED ?? '').trim().toLowerCase() === 'true';
const spanExporter = disabled ? undefined : exporter();
if (spanExporter) {
  const provider = new TracerProvider({
    resource: defaultResource().merge(
      detectResources({ detectors: [envDetector, hostDetector, processDetector] }),
    ),
    sampler: sampler(),
    spanProcessors: [
      new BatchSpanProcessor({
        exporter: spanExporter,
        scheduledDelayMillis: number('OTEL_BSP_SCHEDULE_DELAY', 5000),
        maxExportBatchSize: number('OTEL_BSP_MAX_EXPORT_BATCH_SIZE', 512),
        maxQueueSize: number('OTEL_BSP_MAX_QUEUE_SIZE', 2048),
        exportTimeoutMillis: number('OTEL_BSP_EXPORT_TIMEOUT', 30000),
      }),
    ],
  });
  // Async hooks: the worker runs each handler in its message's span, and the handler's own spans and
  // auto-instrumented calls find it through the context.
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(provider);
  // Once, when the event loop empties: the export keeps it alive until the buffered spans are sent.
  let flushed = false;
  process.on('beforeExit', () => {
    if (flushed) return;
    flushed = true;
    provider
      .shutdown()
      .catch((error) => diag.error('OpenTelemetry: the last spans were not exported', error));
  });
}
