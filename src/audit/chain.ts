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
import { jsonString, num, str, strings } from '../json-text.js';
import type { AuditEvent } from './types.js';

export const GENESIS_HASH = '0'.repeat(64);
/** Type of the record that opens every file the sink starts after rotating (sink.ts). */
export const ROTATED_TYPE = 'rotated';

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

/**
 * Every record member in canonical order (UTF-16 code units, as Array.prototype.sort compares
 * strings), with seq and prev_hash among them. prepareRecord writes the members in this order and a
 * test holds it to this list; the assertions below hold the list to the AuditEvent type and to the
 * sort order, so a new field fails to compile or to load until it is placed here and there.
 */
export const RECORD_ORDER = [
  'bytes_in',
  'bytes_out',
  'chain_root',
  'close_reason',
  'connector',
  'decision',
  'deleg_depth',
  'duration_ms',
  'error_code',
  'generation',
  'host',
  'jti',
  'method',
  'orch_id',
  'outcome',
  'path_template',
  'policy_digest',
  'port',
  'prev_hash',
  'raw_path',
  'request_id',
  'route',
  'scopes',
  'seq',
  'sub',
  'task_id',
  'time',
  'tunnel_id',
  'type',
  'upstream_status',
] as const;
type Unlisted = Exclude<keyof AuditEvent, (typeof RECORD_ORDER)[number]>;
const everyKeyListed: [Unlisted] extends [never] ? true : never = true;
void everyKeyListed;
if ([...RECORD_ORDER].sort().join() !== RECORD_ORDER.join()) throw new Error('audit: RECORD_ORDER is not in canonical order');

/**
 * An event reduced to known, well-typed fields and already written as canonical JSON text, in
 * three pieces around the two members only the writer knows:
 *   {<before>"prev_hash":"…"<between>,"seq":N<after>}
 * `before` members each end with a comma; `between` and `after` members each start with one.
 */
export interface PreparedRecord {
  readonly before: string;
  readonly between: string;
  readonly after: string;
}

/**
 * Copies only the known AuditEvent fields with values of the right type, so nothing else an object
 * happens to carry (a token, a secret) can reach the file and the result always serializes. The
 * text is written field by field in canonical order — no intermediate object, no sort, no
 * JSON.stringify of the record, which costs several times more per request — and each string and
 * number comes out exactly as JSON.stringify writes it. A missing time is filled with the current
 * time. The caller may reuse its event objects.
 */
export function prepareRecord(event: AuditEvent): PreparedRecord {
  const e = event as unknown as Record<(typeof RECORD_ORDER)[number], unknown>;
  const time = typeof e.time === 'string' && e.time !== '' ? e.time : new Date().toISOString();
  const before =
    num(',"bytes_in":', e.bytes_in) +
    num(',"bytes_out":', e.bytes_out) +
    str(',"chain_root":', e.chain_root) +
    str(',"close_reason":', e.close_reason) +
    str(',"connector":', e.connector) +
    str(',"decision":', e.decision) +
    num(',"deleg_depth":', e.deleg_depth) +
    num(',"duration_ms":', e.duration_ms) +
    str(',"error_code":', e.error_code) +
    num(',"generation":', e.generation) +
    str(',"host":', e.host) +
    str(',"jti":', e.jti) +
    str(',"method":', e.method) +
    str(',"orch_id":', e.orch_id) +
    str(',"outcome":', e.outcome) +
    str(',"path_template":', e.path_template) +
    str(',"policy_digest":', e.policy_digest) +
    num(',"port":', e.port);
  const between =
    str(',"raw_path":', e.raw_path) + str(',"request_id":', e.request_id) + str(',"route":', e.route) + strings(',"scopes":', e.scopes);
  const after =
    str(',"sub":', e.sub) + str(',"task_id":', e.task_id) + str(',"time":', time) + str(',"tunnel_id":', e.tunnel_id) + str(',"type":', e.type) + num(',"upstream_status":', e.upstream_status);
  return { before: before === '' ? '' : `${before.slice(1)},`, between, after };
}

export interface ChainedLine {
  /** The full line including the trailing newline. */
  line: string;
  hash: string;
}

/** Serializes a prepared record as record `seq` chained to `prevHash`. */
export function chainPrepared(rec: PreparedRecord, seq: number, prevHash: string): ChainedLine {
  const open = `{${rec.before}"prev_hash":${jsonString(prevHash)}${rec.between},"seq":${seq}${rec.after}`;
  const hash = sha256Hex(`${open}}`);
  return { line: `${open},"hash":"${hash}"}\n`, hash };
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
