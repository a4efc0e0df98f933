/**
 * The OpenTelemetry semantic conventions this package emits: messaging (v1.44.0, AWS SQS), copied as
 * constants rather than imported from `@opentelemetry/semantic-conventions/incubating`, whose
 * experimental names may change in a minor release (its own advice to libraries). A unit test checks each
 * copy against the installed package. This package's own attributes and metrics are under `sqs_redlock.`.
 */

/** The instrumentation scope (tracer and meter name) of everything this package records. */
export const INSTRUMENTATION_SCOPE = 'sqs-redlock-worker';

export const ATTR_MESSAGING_SYSTEM = 'messaging.system';
export const MESSAGING_SYSTEM_VALUE_AWS_SQS = 'aws_sqs';
export const ATTR_MESSAGING_DESTINATION_NAME = 'messaging.destination.name';
export const ATTR_MESSAGING_OPERATION_NAME = 'messaging.operation.name';
export const ATTR_MESSAGING_OPERATION_TYPE = 'messaging.operation.type';
export const MESSAGING_OPERATION_TYPE_VALUE_RECEIVE = 'receive';
export const MESSAGING_OPERATION_TYPE_VALUE_PROCESS = 'process';
export const MESSAGING_OPERATION_TYPE_VALUE_SETTLE = 'settle';
export const MESSAGING_OPERATION_TYPE_VALUE_SEND = 'send';
export const ATTR_MESSAGING_MESSAGE_ID = 'messaging.message.id';
export const ATTR_MESSAGING_BATCH_MESSAGE_COUNT = 'messaging.batch.message_count';
export const ATTR_AWS_SQS_QUEUE_URL = 'aws.sqs.queue.url';
export const ATTR_SERVER_ADDRESS = 'server.address';
export const ATTR_SERVER_PORT = 'server.port';
export const ATTR_ERROR_TYPE = 'error.type';

export const METRIC_MESSAGING_CLIENT_CONSUMED_MESSAGES = 'messaging.client.consumed.messages';
export const METRIC_MESSAGING_PROCESS_DURATION = 'messaging.process.duration';
export const METRIC_MESSAGING_CLIENT_OPERATION_DURATION = 'messaging.client.operation.duration';
/** The conventions' ExplicitBucketBoundaries advice for both messaging duration histograms, in s. */
export const MESSAGING_DURATION_BUCKETS = [
  0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
];

/** This package's own attributes, on spans and metrics alike. */
export const SRW = {
  outcome: 'sqs_redlock.outcome',
  lockKey: 'sqs_redlock.lock.key',
  idempotencyKey: 'sqs_redlock.lock.idempotency_key',
  fencingToken: 'sqs_redlock.lock.fencing_token',
  marked: 'sqs_redlock.lock.marked',
  lostReason: 'sqs_redlock.lock.lost_reason',
  receiveCount: 'sqs_redlock.message.receive_count',
  retryInSec: 'sqs_redlock.message.retry_in_sec',
  poisonReason: 'sqs_redlock.poison.reason',
  deadLettered: 'sqs_redlock.poison.dead_lettered',
  releaseReason: 'sqs_redlock.release.reason',
  dispatchResult: 'sqs_redlock.dispatch.result',
  keyCount: 'sqs_redlock.lock.keys',
  granted: 'sqs_redlock.lock.granted',
  duplicates: 'sqs_redlock.lock.duplicates',
  contended: 'sqs_redlock.lock.contended',
  noQuorum: 'sqs_redlock.lock.no_quorum',
  nodes: 'sqs_redlock.redis.nodes',
  quorum: 'sqs_redlock.redis.quorum',
  failedNodes: 'sqs_redlock.redis.failed_nodes',
  node: 'sqs_redlock.redis.node',
  sqsOperation: 'sqs_redlock.sqs.operation',
} as const;
