/**
 * Tracing without code: the CLI bin (`node src/cli.ts run ...`) as a real process with
 * `NODE_OPTIONS=--import ./examples/observability/otel.js` and the standard OTEL_* variables, exporting
 * over OTLP/HTTP to a small collector this test runs, as a collector would receive it.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliEnv, inheritedEnv } from '../helpers/cli.ts';
import { eventually } from '../helpers/lock.ts';
import { NodeProcess, useProcesses } from '../helpers/processes.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';
import { sendMessages, useSqs } from '../helpers/sqs.ts';

/** OTLP/JSON (what @opentelemetry/exporter-trace-otlp-http posts), the parts the test reads. */
interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
}
interface OtlpAttribute {
  key: string;
  value: OtlpValue;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes?: OtlpAttribute[];
  links?: { traceId: string; spanId: string; attributes?: OtlpAttribute[] }[];
}
interface OtlpExport {
  resourceSpans: { resource: { attributes: OtlpAttribute[] }; scopeSpans: { spans: OtlpSpan[] }[] }[];
}

/** OTLP span kinds (SPAN_KIND_CLIENT, SPAN_KIND_CONSUMER). */
const CLIENT = 3;
const CONSUMER = 5;

/** A collector's OTLP/HTTP trace endpoint: keeps every request it receives. */
class Collector {
  readonly requests: { path: string; contentType: string; body: OtlpExport }[] = [];
  readonly server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      this.requests.push({
        path: req.url ?? '',
        contentType: req.headers['content-type'] ?? '',
        body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as OtlpExport,
      });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Every span received, with its resource's attributes. */
  spans(): { span: OtlpSpan; resource: Record<string, unknown> }[] {
    return this.requests.flatMap(({ body }) =>
      body.resourceSpans.flatMap((rs) =>
        rs.scopeSpans.flatMap((ss) =>
          ss.spans.map((span) => ({ span, resource: values(rs.resource.attributes) })),
        ),
      ),
    );
  }
}

function values(attributes: OtlpAttribute[] = []): Record<string, unknown> {
  return Object.fromEntries(
    attributes.map(({ key, value }) => [key, value.stringValue ?? value.boolValue ?? Number(value.intValue)]),
  );
}

describe('CLI with NODE_OPTIONS=--import ./examples/observability/otel.js', () => {
  const redis = useRedisNodes(3);
  const env = useSqs();
  const spawned = useProcesses<NodeProcess>();
  const collector = new Collector();

  beforeAll(() => new Promise<void>((resolve) => collector.server.listen(0, '127.0.0.1', resolve)));
  afterAll(() => new Promise<void>((resolve) => collector.server.close(() => resolve())));

  it('exports the receive and process spans over OTLP/HTTP, linked to the producer, with OTEL_SERVICE_NAME', async () => {
    const { queueUrl, queueName } = env.createQueue('otel-cli');
    const p = new NodeProcess(
      'CLI',
      ['src/cli.ts', 'run', 'test/fixtures/cli-handler.ts'],
      {
        ...inheritedEnv({ also: ['NODE_OPTIONS'], dropPrefix: 'OTEL_' }),
        ...cliEnv(redis, env, queueUrl),
        LOG_LEVEL: 'info',
        NODE_OPTIONS: '--import ./examples/observability/otel.js',
        OTEL_SERVICE_NAME: 'otel-cli-test',
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
        OTEL_BSP_SCHEDULE_DELAY: '200',
      },
      { waitForMs: 15_000 },
    );
    spawned.push(p);
    await p.waitFor((l) => l.message === 'worker started');
    const producer = { traceId: randomBytes(16).toString('hex'), spanId: randomBytes(8).toString('hex') };
    const [messageId] = await sendMessages(env.sqs, queueUrl, [
      {
        body: JSON.stringify({ id: 'otel-1' }),
        attributes: {
          traceparent: { DataType: 'String', StringValue: `00-${producer.traceId}-${producer.spanId}-01` },
        },
      },
    ]);
    await p.waitFor((l) => l.message === 'cli-handler: done' && l.id === 'otel-1');

    const process = await eventually(
      async () =>
        collector
          .spans()
          .find(
            ({ span }) =>
              span.name === `process ${queueName}` &&
              values(span.attributes)['messaging.message.id'] === messageId,
          ),
      10_000,
    );
    expect(collector.requests[0]).toMatchObject({ path: '/v1/traces', contentType: 'application/json' });
    expect(process.resource['service.name']).toBe('otel-cli-test');
    expect(process.span.kind).toBe(CONSUMER);
    expect(values(process.span.attributes)).toMatchObject({
      'messaging.system': 'aws_sqs',
      'messaging.destination.name': queueName,
      'sqs_redlock.outcome': 'processed',
      'sqs_redlock.lock.key': messageId,
    });
    expect(process.span.links?.map((l) => ({ traceId: l.traceId, spanId: l.spanId }))).toEqual([producer]);
    const receive = collector.spans().find(({ span }) => span.spanId === process.span.parentSpanId);
    expect(receive?.span).toMatchObject({ name: `receive ${queueName}`, kind: CLIENT });

    expect(await p.terminate()).toEqual({ code: 0, signal: null });
  });
});
