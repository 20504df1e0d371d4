/**
 * YAML parsing that keeps source positions, so every configuration problem can be reported as
 * `file:line:col message` against the node it is about.
 */
import { isMap, isScalar, isSeq, LineCounter, type Node, parseDocument } from 'yaml';
import type { ConfigProblem } from '../errors.js';

export type ConfigPath = readonly PropertyKey[];

export interface Position {
  line: number;
  col: number;
}

/** Turns a path into the document (['routes', 2, 'scopes', 0]) into a line and column. */
export interface PositionLookup {
  /** Position of the value at `path`, or of its deepest ancestor that exists in the file. */
  value(path: ConfigPath): Position;
  /** Position of the key naming the last element of `path` (for unknown keys); falls back to value(). */
  key(path: ConfigPath): Position;
}

const START: Position = { line: 1, col: 1 };

/** For documents that were never text (in-memory config): everything is at the start. */
export const NO_POSITIONS: PositionLookup = { value: () => START, key: () => START };

export interface ParsedYaml {
  /** Plain JS value of the document; undefined when the text did not parse. */
  value: unknown;
  positions: PositionLookup;
  problems: ConfigProblem[];
}

export function parseYaml(file: string, text: string): ParsedYaml {
  const lineCounter = new LineCounter();
  // prettyErrors off: its messages embed a copy of the source line, we only want the position.
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number): Position => lineCounter.linePos(offset);
  const problems: ConfigProblem[] = doc.errors.map((e) => ({ file, ...at(e.pos[0]), message: e.message }));
  const positions = documentPositions(doc.contents as Node | null, at);
  if (problems.length > 0) return { value: undefined, positions, problems };
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    // Alias expansion beyond the limit ("billion laughs") or similar.
    return { value: undefined, positions, problems: [{ file, ...START, message: (e as Error).message }] };
  }
  return { value, positions, problems };
}

function documentPositions(root: Node | null, at: (offset: number) => Position): PositionLookup {
  const startOf = (n: Node | null | undefined): Position => (n?.range ? at(n.range[0]) : START);
  const walk = (path: ConfigPath, wantKey: boolean): Position => {
    let node: Node | null | undefined = root;
    let best = startOf(root);
    for (let i = 0; i < path.length; i++) {
      const step = path[i];
      if (isMap(node)) {
        const pair = node.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === step);
        if (!pair) return best;
        if (wantKey && i === path.length - 1) return startOf(pair.key as Node);
        node = pair.value as Node | null;
        // `key:` with no value: point at the key.
        best = node?.range ? startOf(node) : startOf(pair.key as Node);
        if (!node) return best;
      } else if (isSeq(node) && typeof step === 'number') {
        const item = node.items[step] as Node | undefined;
        if (!item) return best;
        node = item;
        best = startOf(node);
      } else {
        return best;
      }
    }
    return best;
  };
  return { value: (p) => walk(p, false), key: (p) => walk(p, true) };
}

/** `routes[2].scopes[0]`, for messages. */
export function formatPath(path: ConfigPath): string {
  let s = '';
  for (const p of path) {
    if (typeof p === 'number') s += `[${p}]`;
    else if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(String(p))) s += `[${JSON.stringify(String(p))}]`;
    else s += s === '' ? String(p) : `.${String(p)}`;
  }
  return s;
}
