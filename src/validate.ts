import { ConfigError } from './errors.ts';

/*
 * Rule helpers shared by every layer's options resolver (the lock's in src/lock/options.ts, the
 * runtime's in src/runtime/options.ts). They sit below every layer: they import nothing but the errors.
 */

/**
 * The longest delay a Node.js timer takes: a longer one fires at once (with a warning), so every ms
 * option that ends up in a timer is bounded by it (about 24.8 days).
 */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * The longest TTL given to Redis: ten years. Redis rejects an expire past 2^63 ms only when the command
 * runs, so a TTL that large must fail at start, not on the first message.
 */
export const MAX_REDIS_TTL_MS = 315_360_000_000;

export function dropUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export function number(option: string, value: unknown, range: { min?: number; max?: number } = {}): number {
  const { min = -Infinity, max = Infinity } = range;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw new ConfigError(option, value, `must be a number${rangeText(min, max)}`);
  }
  return value;
}

export function integer(option: string, value: unknown, range: { min?: number; max?: number } = {}): number {
  const { min = -Infinity, max = Infinity } = range;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(option, value, `must be an integer${rangeText(min, max)}`);
  }
  return value;
}

export function boolean(option: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw new ConfigError(option, value, 'must be a boolean');
  return value;
}

/** The shortest handoff secret accepted: an HMAC key should carry at least 256 bits. */
export const HANDOFF_SECRET_MIN_LENGTH = 32;

/** Checks a handoff secret. The ConfigError shows only its length: its value would be logged. */
export function checkHandoffSecret(option: string, value: unknown): string {
  if (typeof value !== 'string' || value.length < HANDOFF_SECRET_MIN_LENGTH) {
    const redacted =
      typeof value === 'string'
        ? `<redacted, ${value.length} chars>`
        : value == null
          ? value
          : `<redacted ${typeof value}>`;
    throw new ConfigError(
      option,
      redacted,
      `must be a string of at least ${HANDOFF_SECRET_MIN_LENGTH} characters, a random secret shared by the Publisher and the consumers`,
    );
  }
  return value;
}

function rangeText(min: number, max: number): string {
  if (min !== -Infinity && max !== Infinity) return ` between ${min} and ${max}`;
  if (min !== -Infinity) return ` >= ${min}`;
  if (max !== Infinity) return ` <= ${max}`;
  return '';
}
