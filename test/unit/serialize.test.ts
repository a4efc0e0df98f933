import { serializeError as serializeWithLibrary } from 'serialize-error';
import { describe, expect, it } from 'vitest';
import { serializeError } from '../../src/observability/serialize.ts';

function withThrowingGetter(): Error {
  const error = new Error('boom');
  Object.defineProperty(error, 'details', {
    enumerable: true,
    get() {
      throw new Error('the details getter threw');
    },
  });
  return error;
}

describe('serializeError', () => {
  it('serializes like serialize-error when it can', () => {
    const error = new TypeError('bad input', { cause: new Error('root') });
    expect(serializeError(error)).toEqual(serializeWithLibrary(error));
    expect(serializeError(error)).toMatchObject({ name: 'TypeError', message: 'bad input' });
  });

  it('never throws on an error whose own getter throws: keeps its name and message', () => {
    const error = withThrowingGetter();
    expect(() => serializeWithLibrary(error)).toThrow('the details getter threw'); // why this module exists
    expect(serializeError(error)).toEqual({ name: 'Error', message: 'boom', serializationFailed: true });
  });

  it('never throws on a throwing toJSON', () => {
    const error = Object.assign(new RangeError('out of range'), {
      toJSON() {
        throw new Error('toJSON threw');
      },
    });
    expect(serializeError(error)).toMatchObject({ name: 'RangeError', message: 'out of range' });
  });

  it('answers a fixed string when nothing can be read', () => {
    const hostile = new Proxy(new Error('hidden'), {
      get() {
        throw new Error('every read throws');
      },
    });
    expect(serializeError(hostile)).toMatch(/could not be serialized/);
  });

  it('wraps a thrown non-error, bigint and symbol included, in a JSON-safe NonError', () => {
    for (const value of ['plain', 10n, Symbol('s'), undefined]) {
      const serialized = serializeError(value);
      expect(serialized).toMatchObject({ name: 'NonError' });
      expect(() => JSON.stringify(serialized)).not.toThrow();
    }
  });
});
