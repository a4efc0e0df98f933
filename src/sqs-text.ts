/**
 * `text` with what SQS refuses in a string attribute value (control characters, lone surrogates,
 * U+FFFE and U+FFFF: an error message or the keys of a JSON body can hold them) written as `\uXXXX`,
 * so that a send carrying it is not refused as a whole.
 */
export function sqsAttributeText(text: string): string {
  return text.replace(
    // biome-ignore lint/suspicious/noControlCharactersInRegex: SQS's own character set, tab and newlines among it
    /[^\x09\x0A\x0D\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/gu,
    (c) => `\\u${(c.codePointAt(0) ?? 0).toString(16).padStart(4, '0')}`,
  );
}
