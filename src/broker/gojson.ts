/**
 * JSON as Go's encoding/json writes and reads it, because AgentWrit clients and verifiers see
 * bytes the Go broker produced: token payloads, the delegation chain that `chain_hash` covers, and
 * every response body.
 */
import { JsonNumber, JsonObject, type JsonValue } from './jsonparse.js';

const GO_ESCAPES: Record<string, string> = {
  '<': '\\u003c',
  '>': '\\u003e',
  '&': '\\u0026',
  '\u2028': '\\u2028',
  '\u2029': '\\u2029',
};
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

function wellFormed(_key: string, v: unknown): unknown {
  return typeof v === 'string' && /[\ud800-\udfff]/.test(v) ? v.replace(LONE_SURROGATE, '\ufffd') : v;
}

/**
 * Compact JSON with Go's HTML-safe escaping of `<`, `>`, `&`, U+2028 and U+2029. Control characters
 * come out the same as Go 1.22+ writes them (`\b`, `\f`, `\n`, `\r`, `\t`, else `\u00XX`), and
 * object keys keep insertion order, so callers build objects in Go's struct field order.
 */
export function goJson(value: unknown): string {
  const text = JSON.stringify(value, wellFormed);
  // These characters never occur in JSON structure, only inside strings, so a plain replace is exact.
  return text.replace(/[<>&\u2028\u2029]/g, (c) => GO_ESCAPES[c]!);
}

export class JsonTypeError extends Error {
  override name = 'JsonTypeError';
}

export type FieldDecoder<T> = (v: JsonValue, field: string) => T;

function mismatch(field: string, want: string): never {
  throw new JsonTypeError(`cannot unmarshal into field ${field} of type ${want}`);
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

export const str: FieldDecoder<string> = (v, f) => (typeof v === 'string' ? v : mismatch(f, 'string'));

/** Go int: the literal must be an integer (no fraction, no exponent) within int64. */
export const int: FieldDecoder<number> = (v, f) => {
  if (!(v instanceof JsonNumber) || !/^-?[0-9]+$/.test(v.raw)) return mismatch(f, 'int');
  const big = BigInt(v.raw);
  if (big < INT64_MIN || big > INT64_MAX) return mismatch(f, 'int');
  return Number(big);
};

export const bool: FieldDecoder<boolean> = (v, f) => (typeof v === 'boolean' ? v : mismatch(f, 'bool'));

/** Decoders of Go kinds that `null` sets to nil (slices); into any other kind `null` changes nothing. */
const NILLABLE = new WeakSet<FieldDecoder<unknown>>();

/** A Go slice: `null` elements decode to the element's zero value. */
export function sliceOf<T>(elem: FieldDecoder<T>, zero: T): FieldDecoder<T[]> {
  const decode: FieldDecoder<T[]> = (v, f) => {
    if (!Array.isArray(v)) return mismatch(f, 'slice');
    return v.map((item) => (item === null ? zero : elem(item, f)));
  };
  NILLABLE.add(decode);
  return decode;
}

export const strings = sliceOf(str, '');

/** A nested Go struct (decoded with the same rules). */
export function structOf<S extends Spec>(spec: S): FieldDecoder<Decoded<S>> {
  return (v, f) => {
    if (!(v instanceof JsonObject)) return mismatch(f, 'struct');
    return decodeStruct(v, spec);
  };
}

export type Spec = Record<string, FieldDecoder<unknown>>;
export type Decoded<S extends Spec> = { [K in keyof S]?: S[K] extends FieldDecoder<infer T> ? T : never };

/** A member name as Go's encoding/json compares it with a field name: case folded, `ſ` (U+017F) as `s`, the Kelvin sign as `k`. */
function foldName(name: string): string {
  return name.replace(/\u017f/g, 's').toLowerCase();
}

/**
 * Decodes a parsed value into the fields of `spec` the way Go unmarshals into a struct: unknown
 * members are ignored, member names match a field exactly or else case-insensitively (with Go's
 * folding), the last duplicate wins, and `null` sets a slice field to nil (undefined here) and
 * leaves a field of any other kind as it was — unset, or an earlier duplicate's value. A top-level
 * `null` yields an empty struct; any other non-object is a type error, as are mismatched member types.
 */
export function decodeStruct<S extends Spec>(value: JsonValue, spec: S): Decoded<S> {
  const out: Record<string, unknown> = {};
  if (value === null) return out as Decoded<S>;
  if (!(value instanceof JsonObject)) throw new JsonTypeError('cannot unmarshal non-object into struct');
  const names = Object.keys(spec);
  for (const [key, v] of value.entries) {
    const field = Object.hasOwn(spec, key) ? key : names.find((n) => foldName(n) === foldName(key));
    if (field === undefined) continue;
    if (v === null) {
      if (NILLABLE.has(spec[field] as FieldDecoder<unknown>)) delete out[field];
      continue;
    }
    out[field] = spec[field]!(v, field);
  }
  return out as Decoded<S>;
}
