/**
 * JSON text written member by member, for the per-request records (audit lines, request log
 * lines) whose fields are a fixed, known set: no intermediate object and no JSON.stringify of the
 * whole. Each value comes out exactly as JSON.stringify writes it, and a value of the wrong type
 * is left out, so only the fields a caller names, with the types it expects, can appear.
 *
 * Member helpers return `,"key":value` (the caller passes the `,"key":` prefix) or nothing.
 */

/** Strings JSON.stringify writes as they are, between quotes: no quote, backslash, control character or surrogate half. */
const VERBATIM = /^[^"\\\u0000-\u001f\ud800-\udfff]*$/;

/** A string exactly as JSON.stringify writes it; the check spares the common case its escaping pass. */
export function jsonString(s: string): string {
  return VERBATIM.test(s) ? `"${s}"` : JSON.stringify(s);
}

/** `,"key":"value"` when v is a string, else nothing. */
export function str(member: string, v: unknown): string {
  return typeof v === 'string' ? member + jsonString(v) : '';
}

/** `,"key":n` for a finite number (String(n) is what JSON.stringify writes for one), else nothing. */
export function num(member: string, v: unknown): string {
  return typeof v === 'number' && Number.isFinite(v) ? member + v : '';
}

/** `,"key":[...]` keeping only the strings of an array, else nothing. */
export function strings(member: string, v: unknown): string {
  if (!Array.isArray(v)) return '';
  let out = '';
  for (const x of v) if (typeof x === 'string') out += out === '' ? jsonString(x) : `,${jsonString(x)}`;
  return `${member}[${out}]`;
}
