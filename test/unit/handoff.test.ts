import type { Message } from '@aws-sdk/client-sqs';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/cli/env.ts';
import { ConfigError } from '../../src/errors.ts';
import {
  LOCK_HANDOFF_ATTRIBUTES,
  lockHandoffAttributes,
  readLockHandoff,
  signLockHandoff,
  verifyLockHandoff,
} from '../../src/handler/handoff.ts';
import { resolveLambdaOptions } from '../../src/runtime/options.ts';

const SECRET = 'unit-test-handoff-secret-0123456789abcdef';
const HANDOFF = { key: 'order-1', value: 'owner-value-1', fencingToken: 42 };

function messageWith(attributes: Message['MessageAttributes']): Message {
  return { MessageId: 'm-1', ReceiptHandle: 'r-1', Body: '{}', MessageAttributes: attributes };
}

describe('signLockHandoff / verifyLockHandoff', () => {
  it('verifies the handoff it signed, and nothing else: the signature covers key, value and token each', () => {
    const signature = signLockHandoff(HANDOFF, SECRET);
    expect(signature).toMatch(/^[A-Za-z0-9_-]{43}$/); // HMAC-SHA256, base64url
    expect(verifyLockHandoff(HANDOFF, signature, SECRET)).toBe(true);
    expect(verifyLockHandoff({ ...HANDOFF, key: 'order-2' }, signature, SECRET)).toBe(false);
    expect(verifyLockHandoff({ ...HANDOFF, value: 'owner-value-2' }, signature, SECRET)).toBe(false);
    expect(verifyLockHandoff({ ...HANDOFF, fencingToken: 43 }, signature, SECRET)).toBe(false);
    expect(verifyLockHandoff(HANDOFF, signature, `${SECRET}x`)).toBe(false);
  });

  it('encodes the fields unambiguously: moving characters between key and value changes the signature', () => {
    const a = signLockHandoff({ key: 'ab', value: 'c', fencingToken: 1 }, SECRET);
    const b = signLockHandoff({ key: 'a', value: 'bc', fencingToken: 1 }, SECRET);
    const c = signLockHandoff({ key: 'a","b', value: 'c', fencingToken: 1 }, SECRET);
    expect(new Set([a, b, c]).size).toBe(3);
  });

  it('answers false, without throwing, for signatures of another length (timingSafeEqual would throw)', () => {
    const signature = signLockHandoff(HANDOFF, SECRET);
    for (const other of [
      '',
      'x',
      signature.slice(1),
      `${signature}A`,
      `${signature}${signature}`,
      'é'.repeat(43),
    ]) {
      expect(() => verifyLockHandoff(HANDOFF, other, SECRET)).not.toThrow();
      expect(verifyLockHandoff(HANDOFF, other, SECRET)).toBe(false);
    }
  });
});

describe('readLockHandoff', () => {
  const signed = lockHandoffAttributes(HANDOFF, SECRET);
  const attr = (value: string) => ({ DataType: 'String', StringValue: value });

  it('answers undefined for a message without handoff attributes, and the handoff when it verifies', () => {
    expect(readLockHandoff(messageWith(undefined), SECRET)).toBeUndefined();
    expect(readLockHandoff(messageWith({ other: attr('x') }), SECRET)).toBeUndefined();
    expect(readLockHandoff(messageWith(signed), SECRET)).toEqual(HANDOFF);
  });

  it('answers { unverified } for each way a handoff can fail, never quoting the owner value or the signature', () => {
    const { key, value, fencingToken, signature } = LOCK_HANDOFF_ATTRIBUTES;
    const { [signature]: _dropped, ...unsigned } = signed;
    const cases: [Message['MessageAttributes'], string | undefined, RegExp][] = [
      [signed, undefined, /no handoffSecret is configured/],
      [signed, `${SECRET}-other`, /srw-lock-signature does not verify/],
      [unsigned, SECRET, /carries no srw-lock-signature/],
      [
        { [key]: attr('order-1') },
        SECRET,
        /carries no srw-lock-value, srw-fencing-token, srw-lock-signature/,
      ],
      [{ ...signed, [key]: attr('order-2') }, SECRET, /does not verify/],
      [{ ...signed, [value]: attr('!42') }, SECRET, /does not verify/],
      [{ ...signed, [fencingToken]: attr('43') }, SECRET, /does not verify/],
      [
        { ...signed, [fencingToken]: attr('4.2e1') },
        SECRET,
        /srw-fencing-token is "4.2e1", not a positive integer/,
      ],
      [{ ...signed, [signature]: attr('AAAA') }, SECRET, /does not verify/],
    ];
    for (const [attributes, secret, reason] of cases) {
      const result = readLockHandoff(messageWith(attributes), secret);
      expect(result).toEqual({ unverified: expect.stringMatching(reason) });
      const text = JSON.stringify(result);
      expect(text).not.toContain(HANDOFF.value);
      expect(text).not.toContain(signed[signature]?.StringValue);
      expect(text).not.toContain(SECRET);
    }
  });

  it('refuses, even when signed, a value that would equal a completion marker', () => {
    const marker = { ...HANDOFF, value: '!42' };
    expect(readLockHandoff(messageWith(lockHandoffAttributes(marker, SECRET)), SECRET)).toEqual({
      unverified: expect.stringMatching(/srw-lock-value is empty or starts with '!'/),
    });
  });
});

describe('handoffSecret options', () => {
  const short = 'too-short-secret';

  it('refuses a short secret in the Lambda options and HANDOFF_SECRET, showing only its length', () => {
    const failures = [
      () => resolveLambdaOptions({ redlock: () => ({}) as never, handoffSecret: short }),
      () =>
        parseConfig({
          SQS_QUEUE_URL: 'http://localhost:4566/000000000000/jobs',
          REDIS_URLS: 'redis://a:6379,redis://b:6379,redis://c:6379',
          HANDOFF_SECRET: short,
        }),
    ];
    for (const fail of failures) {
      let error: unknown;
      try {
        fail();
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).message).toMatch(
        /^(handoffSecret|HANDOFF_SECRET) must be a string of at least 32/,
      );
      expect((error as ConfigError).message).toContain('Received: "<redacted, 16 chars>"');
      expect(JSON.stringify(error)).not.toContain(short);
      expect((error as ConfigError).message).not.toContain(short);
    }
  });

  it('takes HANDOFF_SECRET as is (not trimmed), and no secret when it is blank', () => {
    const env = {
      SQS_QUEUE_URL: 'http://localhost:4566/000000000000/jobs',
      REDIS_URLS: 'redis://a:6379,redis://b:6379,redis://c:6379',
    };
    expect(parseConfig({ ...env, HANDOFF_SECRET: ` ${SECRET}\n` }).handoffSecret).toBe(` ${SECRET}\n`);
    expect(parseConfig({ ...env, HANDOFF_SECRET: '  ' }).handoffSecret).toBeUndefined();
    expect(parseConfig(env).handoffSecret).toBeUndefined();
    expect(resolveLambdaOptions({ redlock: () => ({}) as never, handoffSecret: SECRET }).handoffSecret).toBe(
      SECRET,
    );
  });
});
