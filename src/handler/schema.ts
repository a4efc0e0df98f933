import type { Message } from '@aws-sdk/client-sqs';
import type { StandardSchemaV1 } from '@standard-schema/spec';
import { InvalidBodyError } from '../errors.ts';
import { sqsAttributeText } from '../sqs-text.ts';

/** A body issue as kept: its path reduced to keys (vendors give keys or `{ key }` segments). */
type BodyIssue = InvalidBodyError['issues'][number];

/** Whether `value` can be used as a Standard Schema v1: it has `~standard.validate`. */
export function isStandardSchema(value: unknown): value is StandardSchemaV1 {
  if ((typeof value !== 'object' && typeof value !== 'function') || value === null) return false;
  const props = (value as { '~standard'?: { version?: unknown; validate?: unknown } })['~standard'];
  return props?.version === 1 && typeof props.validate === 'function';
}

/**
 * The message's body, JSON-parsed and validated by `schema` (awaited: async schemas work). Throws an
 * {@link InvalidBodyError} for a body that is missing, not JSON, or refused; its message is the
 * poison reason. A schema that itself throws rethrows as is (poison too, as any throw of hydrate).
 */
export async function parseBody<T>(schema: StandardSchemaV1<unknown, T>, message: Message): Promise<T> {
  const body = message.Body;
  if (body === undefined || body === '') throw new InvalidBodyError(message.MessageId, 'body is empty');
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    // V8's message quotes the body: it stays out of the reason, which is logged (the DLQ has the body).
    throw new InvalidBodyError(message.MessageId, `body is not JSON (${Buffer.byteLength(body)} bytes)`);
  }
  const result = await schema['~standard'].validate(value);
  if (!result.issues) return result.value;
  // Kept and listed: the first MAX_ISSUES, each message cut. A body of a huge array of bad items
  // would otherwise make a reason, a log line and a poison-error of megabytes (cut to 1,000
  // characters in the end anyway); the count says how many there were.
  const issues = result.issues.slice(0, MAX_ISSUES).map(
    (issue): BodyIssue => ({
      message: sqsAttributeText(cut(String(issue.message), MAX_ISSUE_MESSAGE_CHARS)),
      ...(issue.path ? { path: issue.path.map((s) => (typeof s === 'object' ? s.key : s)) } : {}),
    }),
  );
  const total = result.issues.length;
  const count = `${total} issue${total === 1 ? '' : 's'}`;
  const listed = issues.map((i) => (i.path?.length ? `${pathText(i.path)}: ${i.message}` : i.message));
  if (total > issues.length) listed.push(`and ${total - issues.length} more`);
  // The count first: a long list is cut when dead-lettered, the count survives.
  const summary = `body does not match the schema (${count})`;
  throw new InvalidBodyError(
    message.MessageId,
    sqsAttributeText(`${summary}: ${listed.join('; ')}`),
    issues,
    summary,
  );
}

/** Issues kept on the error and listed in the reason. */
const MAX_ISSUES = 100;
/** An issue's message is cut here (some vendors quote the value they refused). */
const MAX_ISSUE_MESSAGE_CHARS = 300;

function cut(text: string, chars: number): string {
  return text.length <= chars ? text : `${text.slice(0, chars - 1)}…`;
}

/** `items[0].sku`; a key that is not an identifier is quoted: `["a b"]`. */
function pathText(path: readonly PropertyKey[]): string {
  return path
    .map((key, i) => {
      if (typeof key === 'number') return `[${key}]`;
      if (typeof key === 'symbol') return `[${key.toString()}]`;
      if (/^[A-Za-z_$][\w$]*$/.test(key)) return i === 0 ? key : `.${key}`;
      return `[${JSON.stringify(key)}]`;
    })
    .join('');
}
