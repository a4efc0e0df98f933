import { describe, expect, it } from 'vitest';
import { parseConfig, redactUrl } from '../../src/cli/env.ts';
import { ConfigError } from '../../src/errors.ts';

const BASE = { SQS_QUEUE_URL: 'http://localhost:4566/000000000000/jobs' };

function redisUrlsError(value: string): ConfigError {
  try {
    parseConfig({ ...BASE, REDIS_URLS: value });
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('Redis URL redaction', () => {
  it('hides a password holding unencoded / and @ whole', () => {
    expect(redactUrl('redis://user:se/cr@et@host:6379')).toBe('redis://user:***@host:6379');
    expect(redactUrl('redis://:p@ss/w0rd@a:1,rediss://u:x/y@b')).toBe('redis://:***@a:1,rediss://u:***@b');
    expect(redactUrl('redis://s3cr/et@host')).toBe('redis://***@host');
  });

  it('an invalid URL is not echoed whole in the error', () => {
    // An unencoded '/' in the password ends the authority: the URL does not parse.
    const error = redisUrlsError('redis://default:hunter/2@h:6379');
    expect(error.option).toBe('REDIS_URLS');
    expect(error.message).not.toContain('hunter');
    expect(JSON.stringify(error.value)).not.toContain('hunter');
  });

  it('a valid URL with an unencoded @ in its password is redacted in the duplicate-node error', () => {
    const error = redisUrlsError('redis://:p@ss@a:6379,redis://:p@ss@a');
    expect(error.message).toContain('must not list the same node twice');
    expect(error.message).not.toContain('ss@');
  });
});
