/**
 * `sqs-redlock-worker/testing`: unit tests of handlers without SQS or Redis. `sqsMessage` builds a
 * message, `testHandler` runs a handler on it as the pipeline would and returns the outcome.
 */
export { type SqsMessageAttribute, type SqsMessageInit, sqsMessage } from './message.ts';
export {
  type LogEntry,
  type TestHandlerOptions,
  type TestHandlerResult,
  testHandler,
} from './test-handler.ts';
