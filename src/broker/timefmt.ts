/**
 * Go's time formats as they appear on the wire. Audit timestamps and delegation records use
 * RFC3339Nano (fraction with trailing zeros trimmed, none at all when zero); the exact string is
 * hashed and signed, so it has to match byte for byte.
 */

/** `seconds` since the epoch plus `nanos` (0..999999999) in UTC RFC3339Nano. */
export function rfc3339NanoParts(seconds: number, nanos: number): string {
  const base = new Date(seconds * 1000).toISOString().slice(0, 19);
  if (nanos === 0) return `${base}Z`;
  const frac = String(nanos).padStart(9, '0').replace(/0+$/, '');
  return `${base}.${frac}Z`;
}

/** A millisecond clock reading (fractions of a millisecond are kept to the nanosecond). */
export function rfc3339Nano(ms: number): string {
  const whole = Math.floor(ms);
  const subMs = Math.min(999_999, Math.round((ms - whole) * 1e6));
  const seconds = Math.floor(whole / 1000);
  return rfc3339NanoParts(seconds, (whole - seconds * 1000) * 1e6 + subMs);
}

/** RFC 3339 at second precision in UTC, as the broker writes launch-token `expires_at`. */
export function rfc3339Seconds(ms: number): string {
  return `${new Date(Math.floor(ms / 1000) * 1000).toISOString().slice(0, 19)}Z`;
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|([+-])(\d{2}):(\d{2}))$/;
const DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/** Nanoseconds since the epoch of an RFC 3339 time (Go's time.RFC3339 layout), or undefined. */
export function parseRfc3339(text: string): bigint | undefined {
  const m = RFC3339.exec(text);
  if (!m) return undefined;
  const [year, month, day, hour, min, sec] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  if (month < 1 || month > 12 || day < 1 || day > DAYS_IN_MONTH[month - 1]!) return undefined;
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  if (month === 2 && day === 29 && !leap) return undefined;
  if (hour > 23 || min > 59 || sec > 59) return undefined;
  let offsetMin = 0;
  if (m[8] !== 'Z') {
    const oh = Number(m[10]);
    const om = Number(m[11]);
    if (oh > 23 || om > 59) return undefined;
    offsetMin = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day); // Date.UTC would read years below 100 as 19xx
  d.setUTCHours(hour, min, sec, 0);
  const ms = d.getTime() - offsetMin * 60_000;
  const fracNs = m[7] ? BigInt(m[7].padEnd(9, '0')) : 0n;
  return BigInt(ms) * 1_000_000n + fracNs;
}
