import { type ErrorObject, type Options, serializeError as serializeWithLibrary } from 'serialize-error';

/** serialize-error's JSON-safe object (a thrown non-error comes wrapped in a NonError), or a fixed string. */
export type SerializedError = ErrorObject | string;

/** Answered when not even the name and message of an error can be read. */
const UNREADABLE = 'an error that could not be serialized (its properties throw when read)';

/**
 * serialize-error's `serializeError`, but it never throws: it is called in catch blocks, timers and
 * event listeners, where a throw would replace the error being reported, or escape. An own enumerable
 * getter that throws, a throwing `toJSON` or a hostile Proxy make the library throw; then only `name`
 * and `message` are kept, each read on its own, and failing that a fixed string.
 */
export function serializeError(error: unknown, options?: Options): SerializedError {
  try {
    return serializeWithLibrary(error, options) as ErrorObject;
  } catch {
    const name = readString(error, 'name');
    const message = readString(error, 'message');
    if (name === undefined && message === undefined) return UNREADABLE;
    return { name: name ?? 'Error', message: message ?? '', serializationFailed: true };
  }
}

/** `value[key]` as a string, or undefined if reading it (or turning it into a string) throws. */
function readString(value: unknown, key: 'name' | 'message'): string | undefined {
  try {
    if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return undefined;
    const read: unknown = (value as Record<string, unknown>)[key];
    return read === undefined || read === null ? undefined : String(read);
  } catch {
    return undefined;
  }
}
