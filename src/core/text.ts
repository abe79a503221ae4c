/**
 * Text from a peer or a message, made safe to put on one line of a log, an error message, a
 * protocol line or a mail header: line breaks become one space, other control characters (and,
 * with `ascii`, everything outside printable US-ASCII) become "?", and long text is cut with "...".
 */
export function printable(
  text: string,
  options: { readonly max?: number; readonly ascii?: boolean } = {},
): string {
  const oneLine = text.replace(/[\r\n]+/g, ' ');
  // eslint-disable-next-line no-control-regex
  const clean = oneLine.replace(options.ascii === true ? /[^\x20-\x7e]/g : /[\u0000-\u001f\u007f]/g, '?');
  const max = options.max;
  return max !== undefined && clean.length > max ? `${clean.slice(0, max)}...` : clean;
}
