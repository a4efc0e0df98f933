import type { LambdaEvents } from '../../src/index.ts';

/**
 * The per-message outcome events (and `sqs_error`) that both a Worker and a Lambda handler emit, in the
 * order the tests, fixtures and the soak record or count them.
 */
export const MESSAGE_EVENTS = [
  'message_processed',
  'duplicate_skipped',
  'lock_contended',
  'quorum_unavailable',
  'poison_message',
  'handler_error',
  'lock_lost',
  'message_released',
  'sqs_error',
] as const satisfies readonly (keyof LambdaEvents)[];
