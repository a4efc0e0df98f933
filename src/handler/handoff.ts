import type { Message, MessageAttributeValue } from '@aws-sdk/client-sqs';
import type { LockHandoff } from '../lock/adopt.ts';

/**
 * Message attributes that carry a handed-over lock from a {@link Publisher} to the worker that adopts it.
 *
 * The owner value (`srw-lock-value`) is the secret that proves ownership of the lock: anyone who can
 * receive from the queue (or read its messages any other way: a DLQ, logs of attributes) can read it,
 * and with it adopt the lock, for instance to complete it so that the task never runs. Grant
 * sqs:ReceiveMessage on a handoff queue only to the workers that are meant to run its tasks.
 */
export const LOCK_HANDOFF_ATTRIBUTES = {
  key: 'srw-lock-key',
  value: 'srw-lock-value',
  fencingToken: 'srw-fencing-token',
} as const;

/** The message attributes that hand over `handoff`. */
export function lockHandoffAttributes(handoff: LockHandoff): Record<string, MessageAttributeValue> {
  return {
    [LOCK_HANDOFF_ATTRIBUTES.key]: { DataType: 'String', StringValue: handoff.key },
    [LOCK_HANDOFF_ATTRIBUTES.value]: { DataType: 'String', StringValue: handoff.value },
    [LOCK_HANDOFF_ATTRIBUTES.fencingToken]: { DataType: 'Number', StringValue: String(handoff.fencingToken) },
  };
}

/**
 * The lock handed over with a received message: undefined when it carries none; `{ invalid }` when it
 * carries only some of the attributes, or values that cannot be a handoff (a tampered or foreign
 * message). The message must have been received with its message attributes (`MessageAttributeNames`).
 */
export function readLockHandoff(message: Message): LockHandoff | { invalid: string } | undefined {
  const attributes = message.MessageAttributes ?? {};
  const { key: keyName, value: valueName, fencingToken: tokenName } = LOCK_HANDOFF_ATTRIBUTES;
  const key = attributes[keyName]?.StringValue;
  const value = attributes[valueName]?.StringValue;
  const token = attributes[tokenName]?.StringValue;
  if (key === undefined && value === undefined && token === undefined) return undefined;
  const invalid = (what: string): { invalid: string } => ({ invalid: `invalid lock handoff: ${what}` });
  const names = [keyName, valueName, tokenName];
  const missing = names.filter((_, i) => [key, value, token][i] === undefined);
  if (missing.length > 0) {
    const present = names.filter((name) => !missing.includes(name));
    return invalid(`the message carries ${present.join(', ')} but not ${missing.join(', ')}`);
  }
  if (!key) return invalid(`${keyName} is missing or empty`);
  // A value starting with '!' would equal a completion marker: adopting it would erase the marker.
  if (!value || value.startsWith('!')) return invalid(`${valueName} is missing, empty or starts with '!'`);
  const fencingToken = Number(token);
  if (!Number.isSafeInteger(fencingToken) || fencingToken <= 0) {
    return invalid(`${tokenName} is ${JSON.stringify(token ?? null)}, not a positive integer`);
  }
  return { key, value, fencingToken };
}
