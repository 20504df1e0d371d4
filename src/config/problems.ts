/**
 * Turns zod issues into ConfigProblems that point at the offending YAML node, with messages a
 * person can act on ("missing required key", "unknown key" at the key itself, the one union branch
 * that was probably meant rather than all of them).
 */
import type { z } from 'zod';
import type { ConfigProblem } from '../errors.js';
import { type ConfigPath, formatPath, type PositionLookup } from './positions.js';

type Issue = z.core.$ZodIssue;

interface Leaf {
  path: PropertyKey[];
  issue?: Issue;
  /** Set instead of `issue` when no union branch fits at all. */
  message?: string;
}

export function zodProblems(issues: readonly Issue[], input: unknown, file: string, positions: PositionLookup, schema?: z.ZodType): ConfigProblem[] {
  const leaves: Leaf[] = [];
  flatten(issues, [], leaves);
  const out: ConfigProblem[] = [];
  const seen = new Set<string>();
  const push = (pos: { line: number; col: number }, message: string) => {
    const k = `${pos.line}:${pos.col}:${message}`;
    if (seen.has(k)) return;
    seen.add(k);
    out.push({ file, line: pos.line, col: pos.col, message });
  };
  for (const leaf of leaves) {
    const where = leaf.path.length > 0 ? `${formatPath(leaf.path)}: ` : '';
    if (leaf.message !== undefined) {
      push(positions.value(leaf.path), where + leaf.message);
      continue;
    }
    const issue = leaf.issue!;
    if (issue.code === 'unrecognized_keys') {
      const known = schema ? knownKeysAt(schema, leaf.path) : [];
      for (const key of issue.keys) {
        push(positions.key([...leaf.path, key]), `${where}unknown key "${key}"${unknownKeyHint(key, known)}`);
      }
    } else if (issue.code === 'invalid_key') {
      // A record key (upstream.connectTo): point at the key, with the key's own message.
      const inner = issue.issues[0]?.message ?? issue.message;
      push(positions.key(leaf.path), `${where}invalid key: ${tidy(inner)}`);
    } else if (issue.code === 'invalid_type' && isMissingKey(input, leaf.path)) {
      const parent = leaf.path.slice(0, -1);
      const prefix = parent.length > 0 ? `${formatPath(parent)}: ` : '';
      push(positions.value(parent), `${prefix}missing required key "${String(leaf.path[leaf.path.length - 1])}"`);
    } else {
      push(positions.value(leaf.path), where + tidy(issue.message));
    }
  }
  return out.sort((a, b) => a.line - b.line || a.col - b.col);
}

function tidy(message: string): string {
  return message.replace(/^Invalid input: /, '');
}

function flatten(issues: readonly Issue[], base: PropertyKey[], out: Leaf[]): void {
  for (const issue of issues) {
    const path = [...base, ...issue.path];
    if (issue.code === 'invalid_union' && issue.errors.length > 0) {
      const branch = pickBranch(issue.errors);
      if (branch) flatten(branch, path, out);
      else out.push({ path, message: expectedOneOf(issue.errors) });
    } else {
      out.push({ path, issue });
    }
  }
}

function rootTypeMismatch(branch: readonly Issue[]): boolean {
  return branch.some((i) => i.code === 'invalid_type' && i.path.length === 0);
}

/**
 * The branch the author most likely meant: one whose type matched, with the fewest problems,
 * and among those the one that got deepest into the value.
 */
function pickBranch(branches: readonly (readonly Issue[])[]): readonly Issue[] | undefined {
  let best: readonly Issue[] | undefined;
  let bestCount = Number.POSITIVE_INFINITY;
  let bestDepth = -1;
  for (const b of branches) {
    if (rootTypeMismatch(b)) continue;
    const leaves: Leaf[] = [];
    flatten(b, [], leaves);
    const depth = leaves.reduce((n, l) => n + l.path.length, 0);
    if (leaves.length < bestCount || (leaves.length === bestCount && depth > bestDepth)) {
      best = b;
      bestCount = leaves.length;
      bestDepth = depth;
    }
  }
  return best;
}

function expectedOneOf(branches: readonly (readonly Issue[])[]): string {
  const kinds = new Set<string>();
  let received = '';
  for (const b of branches) {
    for (const i of b) {
      if (i.code === 'invalid_type' && i.path.length === 0) {
        kinds.add(i.expected);
        const m = /received (\w+)/.exec(i.message);
        if (m) received = m[1];
      }
    }
  }
  return `expected ${[...kinds].join(' or ')}${received ? `, received ${received}` : ''}`;
}

function isMissingKey(input: unknown, path: ConfigPath): boolean {
  if (path.length === 0) return false;
  let node: unknown = input;
  for (let i = 0; i < path.length - 1; i++) {
    if (node === null || typeof node !== 'object') return false;
    node = (node as Record<PropertyKey, unknown>)[path[i]];
  }
  if (node === null || typeof node !== 'object' || Array.isArray(node)) return false;
  return !Object.hasOwn(node, path[path.length - 1]);
}

type SchemaDef = {
  type: string;
  shape?: Record<string, z.ZodType>;
  innerType?: z.ZodType;
  in?: z.ZodType;
  element?: z.ZodType;
  valueType?: z.ZodType;
  options?: readonly z.ZodType[];
};

/** The keys an object schema at `path` knows (every union branch's), for "unknown key" hints. */
export function knownKeysAt(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  const keys = new Set<string>();
  const walk = (node: z.ZodType | undefined, i: number, depth: number): void => {
    if (!node || depth > 32) return;
    const def = (node as unknown as { _zod: { def: SchemaDef } })._zod.def;
    if (def.innerType) walk(def.innerType, i, depth + 1);
    else if (def.type === 'pipe') walk(def.in, i, depth + 1);
    else if (def.type === 'union') for (const o of def.options ?? []) walk(o, i, depth + 1);
    else if (i === path.length) {
      if (def.type === 'object') for (const k of Object.keys(def.shape ?? {})) keys.add(k);
    } else if (def.type === 'object') walk(def.shape?.[String(path[i])], i + 1, depth + 1);
    else if (def.type === 'array') walk(def.element, i + 1, depth + 1);
    else if (def.type === 'record') walk(def.valueType, i + 1, depth + 1);
  };
  walk(schema, 0, 0);
  return [...keys];
}

/** Edit distance, for "did you mean" (keys are short: the quadratic table is nothing). */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}

/** What to write instead of an unknown key: the known key it is closest to, or the list of them. */
export function unknownKeyHint(key: string, known: readonly string[]): string {
  if (known.length === 0) return '';
  const lower = key.toLowerCase();
  const best = known
    .map((k) => ({ k, d: k.toLowerCase() === lower ? 0 : distance(lower, k.toLowerCase()) }))
    .sort((a, b) => a.d - b.d)[0];
  if (best.d <= Math.max(1, Math.floor(key.length / 3))) return ` (did you mean "${best.k}"?)`;
  return ` (known keys: ${[...known].sort().join(', ')})`;
}
