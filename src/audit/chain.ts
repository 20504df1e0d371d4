/**
 * The audit hash chain: how a record is serialized and hashed.
 *
 * Canonical serialization (what the hash covers):
 * - JSON with no whitespace anywhere;
 * - object members sorted by key, comparing UTF-16 code units (JavaScript's default sort),
 *   recursively; members whose value is undefined are omitted;
 * - arrays keep their order;
 * - strings and numbers exactly as ECMAScript JSON.stringify writes them (numbers must be finite).
 *
 * A record is { seq, time, type, ...event fields, prev_hash } and
 *   hash = lower-case hex SHA-256 of the UTF-8 bytes of canonical(record without `hash`).
 * The line written to the file is that same canonical text with `,"hash":"<hex>"` inserted before
 * the final `}` and a `\n` after it. So the hashed bytes are the line itself minus its trailing
 * `,"hash":"…"` member: an operator can check one line with standard tools, e.g.
 *   sed -n 5p audit.jsonl | sed 's/,"hash":"[0-9a-f]*"}$/}/' | tr -d '\n' | sha256sum
 * The first record's prev_hash is 64 zeros; every later record's prev_hash is the hash of the line
 * before it, and seq counts 1, 2, 3, ... without gaps.
 */
import { hash as digest } from 'node:crypto';
import type { AuditEvent } from './types.js';

export const GENESIS_HASH = '0'.repeat(64);

export function canonicalJson(value: unknown): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError('canonical JSON: non-finite number');
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
      const obj = value as Record<string, unknown>;
      const parts: string[] = [];
      for (const key of Object.keys(obj).sort()) {
        const v = obj[key];
        if (v !== undefined) parts.push(`${JSON.stringify(key)}:${canonicalJson(v)}`);
      }
      return `{${parts.join(',')}}`;
    }
    default:
      throw new TypeError(`canonical JSON: cannot serialize a ${typeof value}`);
  }
}

export function sha256Hex(text: string): string {
  return digest('sha256', text, 'hex');
}

/** Turns the canonical text of a record (without hash) into its file line (without newline). */
export function lineWithHash(canonical: string, hash: string): string {
  return canonical === '{}' ? `{"hash":"${hash}"}` : `${canonical.slice(0, -1)},"hash":"${hash}"}`;
}

/** Every event key, by value type. A new AuditEvent field fails to compile until it is added here. */
const EVENT_STRING_KEYS = [
  'chain_root',
  'close_reason',
  'connector',
  'decision',
  'error_code',
  'host',
  'jti',
  'method',
  'orch_id',
  'outcome',
  'path_template',
  'policy_digest',
  'raw_path',
  'request_id',
  'route',
  'sub',
  'task_id',
  'time',
  'type',
] as const satisfies readonly (keyof AuditEvent)[];
const EVENT_NUMBER_KEYS = [
  'bytes_in',
  'bytes_out',
  'deleg_depth',
  'duration_ms',
  'generation',
  'port',
  'upstream_status',
] as const satisfies readonly (keyof AuditEvent)[];
type Unlisted = Exclude<keyof AuditEvent, (typeof EVENT_STRING_KEYS)[number] | (typeof EVENT_NUMBER_KEYS)[number] | 'scopes'>;
const everyKeyListed: [Unlisted] extends [never] ? true : never = true;
void everyKeyListed;
type Kind = 'string' | 'number' | 'strings' | 'seq' | 'prev';
const RECORD_KEYS: [string, Kind][] = [
  ...EVENT_STRING_KEYS.map((k): [string, Kind] => [k, 'string']),
  ...EVENT_NUMBER_KEYS.map((k): [string, Kind] => [k, 'number']),
  ['scopes', 'strings'],
  ['seq', 'seq'],
  ['prev_hash', 'prev'],
];
// Canonical order: UTF-16 code units, as Array.prototype.sort compares strings.
RECORD_KEYS.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));

/** An event reduced to known, well-typed fields, with seq and prev_hash slots, in canonical key order. */
export type PreparedRecord = Record<string, unknown> & { readonly __prepared: true };

/**
 * Copies only the known AuditEvent fields with values of the right type, so nothing else an object
 * happens to carry (a token, a secret) can reach the file and the result always serializes. The
 * copy is built in canonical key order, seq and prev_hash included as slots filled at write time:
 * JSON.stringify then writes canonical text directly (no sorting), which keeps the writer cheap.
 * A missing time is filled with the current time. The caller may reuse its event objects.
 */
export function prepareRecord(event: AuditEvent): PreparedRecord {
  const src = event as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [key, kind] of RECORD_KEYS) {
    const v = src[key];
    if (kind === 'seq') out[key] = 0;
    else if (kind === 'prev') out[key] = GENESIS_HASH;
    else if (key === 'time') out[key] = typeof v === 'string' && v !== '' ? v : new Date().toISOString();
    else if (kind === 'string') {
      if (typeof v === 'string') out[key] = v;
    } else if (kind === 'number') {
      if (typeof v === 'number' && Number.isFinite(v)) out[key] = v;
    } else if (Array.isArray(v)) {
      out[key] = v.filter((x) => typeof x === 'string');
    }
  }
  return out as PreparedRecord;
}

export interface ChainedLine {
  /** The full line including the trailing newline. */
  line: string;
  hash: string;
}

/** Serializes a prepared record as record `seq` chained to `prevHash` (assigning its slots). */
export function chainPrepared(rec: PreparedRecord, seq: number, prevHash: string): ChainedLine {
  const r = rec as Record<string, unknown>;
  r.seq = seq;
  r.prev_hash = prevHash;
  const canonical = JSON.stringify(r);
  const hash = sha256Hex(canonical);
  return { line: `${lineWithHash(canonical, hash)}\n`, hash };
}

/** Serializes an arbitrary record body (the sink's own notes); the body must not hold seq/prev_hash/hash. */
export function chainRecord(body: Record<string, unknown>, seq: number, prevHash: string): ChainedLine {
  const canonical = canonicalJson({ ...body, seq, prev_hash: prevHash });
  const hash = sha256Hex(canonical);
  return { line: `${lineWithHash(canonical, hash)}\n`, hash };
}

export type LineCheck =
  | { ok: true; seq: number; hash: string; prevHash: string }
  | { ok: false; seq?: number; reason: string };

/**
 * Checks one line on its own: JSON object, integer seq, well-formed hashes, hash matching the
 * content, and the line being exactly the canonical form (so duplicate keys, extra whitespace or
 * re-escaped strings, which other JSON readers may interpret differently, are refused).
 */
export function checkLine(line: string): LineCheck {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return { ok: false, reason: 'not JSON' };
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    return { ok: false, reason: 'not a JSON object' };
  }
  const rec = parsed as Record<string, unknown>;
  const seq = Number.isSafeInteger(rec.seq) && (rec.seq as number) > 0 ? (rec.seq as number) : undefined;
  if (seq === undefined) return { ok: false, reason: 'missing or invalid seq' };
  const { hash, ...body } = rec;
  if (typeof hash !== 'string' || !/^[0-9a-f]{64}$/.test(hash)) {
    return { ok: false, seq, reason: 'missing or malformed hash' };
  }
  if (typeof rec.prev_hash !== 'string' || !/^[0-9a-f]{64}$/.test(rec.prev_hash)) {
    return { ok: false, seq, reason: 'missing or malformed prev_hash' };
  }
  let canonical: string;
  try {
    canonical = canonicalJson(body);
  } catch {
    return { ok: false, seq, reason: 'not JSON' };
  }
  if (sha256Hex(canonical) !== hash) {
    return { ok: false, seq, reason: 'hash mismatch (the record was changed)' };
  }
  if (lineWithHash(canonical, hash) !== line) {
    return { ok: false, seq, reason: 'not in canonical form (the line was re-encoded or has duplicate keys)' };
  }
  return { ok: true, seq, hash, prevHash: rec.prev_hash };
}
