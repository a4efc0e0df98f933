import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Message, MessageAttributeValue } from '@aws-sdk/client-sqs';
import type { LockHandoff } from '../lock/adopt.ts';

/**
 * Message attributes that carry a handed-over lock from a {@link Publisher} to the worker that adopts it.
 *
 * The signature (`srw-lock-signature`) is an HMAC-SHA256, under the secret the publisher and the
 * consumers share (`handoffSecret`), of the key, owner value and fencing token: a producer without the
 * secret cannot make a worker run its message under a key of its choosing (and then mark that key done).
 *
 * The owner value (`srw-lock-value`) is what proves ownership of the lock: anyone who can receive from
 * the queue (or read its messages any other way: a DLQ, logs of attributes) can read a genuine handoff,
 * and with it adopt the lock, for instance to complete it so that the task never runs. Grant
 * sqs:ReceiveMessage on a handoff queue only to the workers that are meant to run its tasks.
 */
export const LOCK_HANDOFF_ATTRIBUTES = {
  key: 'srw-lock-key',
  value: 'srw-lock-value',
  fencingToken: 'srw-fencing-token',
  signature: 'srw-lock-signature',
} as const;

/** Versions the signed encoding: a later format can never verify against this one. */
const SIGNATURE_DOMAIN = 'srw-lock-handoff/v1';

/**
 * The HMAC-SHA256 (base64url) of a handoff. The fields are encoded as a JSON array, not concatenated:
 * no two different (key, value, token) triples share an encoding.
 */
export function signLockHandoff(handoff: LockHandoff, secret: string): string {
  const encoded = JSON.stringify([
    SIGNATURE_DOMAIN,
    handoff.key,
    handoff.value,
    String(handoff.fencingToken),
  ]);
  return createHmac('sha256', secret).update(encoded, 'utf8').digest('base64url');
}

/** Whether `signature` is the handoff's, compared in constant time (unequal lengths never throw). */
export function verifyLockHandoff(handoff: LockHandoff, signature: string, secret: string): boolean {
  const expected = Buffer.from(signLockHandoff(handoff, secret), 'utf8');
  const received = Buffer.from(signature, 'utf8');
  // timingSafeEqual throws on unequal lengths; the length of an HMAC is no secret.
  return received.length === expected.length && timingSafeEqual(received, expected);
}

/** The message attributes that hand over `handoff`, signed with `secret`. */
export function lockHandoffAttributes(
  handoff: LockHandoff,
  secret: string,
): Record<string, MessageAttributeValue> {
  return {
    [LOCK_HANDOFF_ATTRIBUTES.key]: { DataType: 'String', StringValue: handoff.key },
    [LOCK_HANDOFF_ATTRIBUTES.value]: { DataType: 'String', StringValue: handoff.value },
    [LOCK_HANDOFF_ATTRIBUTES.fencingToken]: { DataType: 'Number', StringValue: String(handoff.fencingToken) },
    [LOCK_HANDOFF_ATTRIBUTES.signature]: {
      DataType: 'String',
      StringValue: signLockHandoff(handoff, secret),
    },
  };
}

/**
 * The lock handed over with a received message: undefined when it carries no handoff attribute; the
 * handoff when its signature verifies under `secret`; otherwise `{ unverified: reason }` (no secret
 * configured, no or a wrong signature, attributes missing or malformed). An unverified handoff must be
 * ignored: the message is an ordinary one, locked by its handler's own `lockKey`. The reason never
 * quotes the owner value or the signature. The message must have been received with its message
 * attributes (`MessageAttributeNames`).
 */
export function readLockHandoff(
  message: Message,
  secret: string | undefined,
): LockHandoff | { unverified: string } | undefined {
  const attributes = message.MessageAttributes ?? {};
  const names = Object.values(LOCK_HANDOFF_ATTRIBUTES);
  const [key, value, token, signature] = names.map((name) => attributes[name]?.StringValue);
  if ([key, value, token, signature].every((v) => v === undefined)) return undefined;
  const unverified = (reason: string): { unverified: string } => ({ unverified: reason });

  if (secret === undefined) return unverified('no handoffSecret is configured on this consumer');
  const {
    key: keyName,
    value: valueName,
    fencingToken: tokenName,
    signature: signatureName,
  } = LOCK_HANDOFF_ATTRIBUTES;
  if (key === undefined || value === undefined || token === undefined || signature === undefined) {
    const missing = names.filter((name) => attributes[name]?.StringValue === undefined);
    return unverified(`the message carries no ${missing.join(', ')}`);
  }
  const fencingToken = Number(token);
  if (!/^\d+$/.test(token) || !Number.isSafeInteger(fencingToken) || fencingToken <= 0) {
    return unverified(`${tokenName} is ${JSON.stringify(token.slice(0, 40))}, not a positive integer`);
  }
  const handoff: LockHandoff = { key, value, fencingToken };
  if (!verifyLockHandoff(handoff, signature, secret)) {
    return unverified(`${signatureName} does not verify (forged, tampered, or signed with another secret)`);
  }
  // A Publisher never signs these; checked anyway, as adopting them would be unsafe.
  if (!key) return unverified(`${keyName} is empty`);
  // A value starting with '!' would equal a completion marker: adopting it would erase the marker.
  if (!value || value.startsWith('!')) return unverified(`${valueName} is empty or starts with '!'`);
  return handoff;
}
