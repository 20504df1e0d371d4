/**
 * The README's configuration tables against the schema: every key the sidecar configuration takes
 * has a row, no row names a key that does not exist, and every default the schema fills in is the
 * one the table shows.
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import type { z } from 'zod';
import { SidecarConfigSchema } from '../../src/config/schema.js';

/** Wrappers that do not change which keys a value has. */
const WRAPPERS = new Set(['default', 'prefault', 'optional', 'nullable', 'readonly']);

/** Dotted paths of every leaf key (a value that is not an object with a fixed set of keys). */
function leafKeys(schema: z.ZodType, prefix: string): string[] {
  let def = schema._zod.def as { type: string; innerType?: z.ZodType; shape?: Record<string, z.ZodType> };
  while (WRAPPERS.has(def.type) && def.innerType) def = def.innerType._zod.def as typeof def;
  if (def.type !== 'object' || !def.shape) return [prefix];
  return Object.entries(def.shape).flatMap(([k, v]) => leafKeys(v, prefix ? `${prefix}.${k}` : k));
}

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

/** Rows of the main configuration table and of the `tls` table: key → default cell. */
function documentedRows(): Map<string, string> {
  const rows = new Map<string, string>();
  const lines = readme.split('\n');
  let table: 'main' | 'tls' | undefined;
  for (const line of lines) {
    if (line.startsWith('| key | default |')) table = 'main';
    else if (line.startsWith('| `tls` key | default |')) table = 'tls';
    else if (!line.startsWith('|')) table = undefined;
    if (!table) continue;
    const m = /^\| ((?:`[^`]+`(?: \/ )?)+) \| ([^|]*) \|/.exec(line);
    if (!m) continue;
    for (const key of m[1].split(' / ')) rows.set(`${table === 'tls' ? 'tls.' : ''}${key.slice(1, -1)}`, m[2].trim());
  }
  return rows;
}

/** A default as the table writes it, in backticks. */
function shown(v: unknown): string {
  if (Array.isArray(v)) return `[${v.join(', ')}]`;
  if (v !== null && typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

const keys = leafKeys(SidecarConfigSchema, '');
const rows = documentedRows();
const defaults = SidecarConfigSchema.parse({}) as Record<string, unknown>;
const defaultAt = (path: string): unknown => path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], defaults);

t.test('the tables were found', async (t) => {
  t.ok(keys.length > 40, `${keys.length} keys in the schema`);
  t.ok(rows.size > 40, `${rows.size} rows in the README`);
});

t.test('every configuration key has a row in the README, and every row is a key', async (t) => {
  const documented = new Set(rows.keys());
  // `tls.*` in the main table points to the tls table, which has a row per key.
  documented.delete('tls.*');
  t.same(
    keys.filter((k) => !documented.has(k)),
    [],
    'keys without a row',
  );
  t.same(
    [...documented].filter((k) => !keys.includes(k)),
    [],
    'rows without a key',
  );
});

t.test('every default the schema fills in is the one the README shows', async (t) => {
  for (const key of keys) {
    const cell = rows.get(key);
    if (cell === undefined) continue;
    const value = defaultAt(key);
    if (value === undefined) {
      // No default: the row says so, or names the default the sidecar computes (broker.verify).
      t.ok(cell.startsWith('—') || key === 'broker.verify', `${key}: no default, README shows ${cell}`);
      continue;
    }
    t.equal(/^`([^`]*)`/.exec(cell)?.[1], shown(value), key);
  }
});
