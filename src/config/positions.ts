/**
 * YAML parsing that keeps source positions, so every configuration problem can be reported as
 * `file:line:col message` against the node it is about.
 *
 * A file is parsed on the main thread, also on a hot reload of a running sidecar, so the work is
 * bounded: files above MAX_FILE_BYTES are refused unread, nesting beyond MAX_DEPTH is refused
 * before the (recursive) composer sees it, and nothing below is worse than linear in the file.
 */
import { CST, Composer, isAlias, isMap, isPair, isScalar, isSeq, Lexer, LineCounter, type Node, type Pair, Parser, type YAMLMap } from 'yaml';
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

/** Largest configuration or policy file read, in bytes. */
export const MAX_FILE_BYTES = 256 * 1024;
/** Deepest nesting of mappings and sequences in a file. */
export const MAX_DEPTH = 64;
/** Most values a file may stand for once its aliases are expanded (a file of 256 KiB holds about 65,000 without). */
export const MAX_EXPANDED_NODES = 200_000;

export function fileTooLarge(bytes?: number): string {
  const size = bytes === undefined ? '' : ` (${bytes} bytes)`;
  return `file is larger than 256 KiB${size}; policies can be split across several files in a directory`;
}

export interface ParsedYaml {
  /** Plain JS value of the document; undefined when the text did not parse. */
  value: unknown;
  positions: PositionLookup;
  problems: ConfigProblem[];
}

export function parseYaml(file: string, text: string): ParsedYaml {
  const size = Buffer.byteLength(text);
  if (size > MAX_FILE_BYTES) return { value: undefined, positions: NO_POSITIONS, problems: [{ file, ...START, message: fileTooLarge(size) }] };
  const lineCounter = new LineCounter();
  const at = (offset: number): Position => lineCounter.linePos(offset);
  const tokens = syntaxTree(text, lineCounter);
  if (typeof tokens === 'number') {
    return { value: undefined, positions: NO_POSITIONS, problems: [{ file, ...at(tokens), message: `nesting deeper than ${MAX_DEPTH} levels` }] };
  }
  // uniqueKeys off: the library's check is quadratic in the keys of a mapping; indexKeys() does it with a Map.
  // (Errors are not "prettified" here: that would embed a copy of the source line, we only want the position.)
  const docs = new Composer({ uniqueKeys: false }).compose(tokens, true, text.length);
  const doc = docs.next().value!;
  const found: Array<{ offset: number; message: string }> = doc.errors.map((e) => ({ offset: e.pos[0], message: e.message }));
  const second = docs.next().value;
  if (second) found.push({ offset: second.range[0], message: 'a second YAML document (after "---"): a file holds one' });
  const keys = indexKeys(doc.contents as Node | null, (offset, key) => {
    const name = typeof key === 'string' || typeof key === 'number' || typeof key === 'boolean' ? ` ${JSON.stringify(key)}` : '';
    found.push({ offset, message: `duplicate key${name}: a key may appear once in a mapping; remove or merge the other one` });
  });
  const positions = documentPositions(doc.contents as Node | null, keys, at);
  if (found.length > 0) {
    found.sort((a, b) => a.offset - b.offset);
    return { value: undefined, positions, problems: found.map((f) => ({ file, ...at(f.offset), message: f.message })) };
  }
  const bomb = aliasExpansionPast(doc.contents as Node | null, MAX_EXPANDED_NODES);
  if (bomb !== undefined) {
    return { value: undefined, positions, problems: [{ file, ...at(bomb), message: `aliases expand the file past ${MAX_EXPANDED_NODES} values; write fewer aliases, or split the file` }] };
  }
  let value: unknown;
  try {
    // Expansion was bounded just above, by the values it makes (the library counts aliases, and
    // refuses 100 uses of one scalar anchor).
    value = doc.toJS({ maxAliasCount: -1 });
  } catch (e) {
    return { value: undefined, positions, problems: [{ file, ...START, message: (e as Error).message }] };
  }
  return { value, positions, problems: [] };
}

/**
 * Values the document stands for once its aliases are expanded (each alias counts what its anchor
 * holds, aliases within included), as everything that reads the parsed value walks it so. Returns
 * the offset of the alias that takes the count past `max`, if one does. Linear in the document:
 * each anchored node's count is kept, and anchors are followed in document order (an alias names
 * the closest anchor before it; one inside its own anchor counts 1, as the value refers to itself).
 */
function aliasExpansionPast(root: Node | null, max: number): number | undefined {
  const anchors = new Map<string, Node>();
  const counted = new Map<Node, number>();
  let total = 0;
  let past: number | undefined;
  const count = (node: unknown): number => {
    if (past !== undefined || node === null || typeof node !== 'object') return 0;
    if (isAlias(node)) {
      const source = anchors.get(node.source);
      const n = source === undefined ? 1 : (counted.get(source) ?? 1);
      total += n;
      if (total > max) past = node.range?.[0] ?? 0;
      return n;
    }
    if (isPair(node)) return count(node.key) + count(node.value);
    const n0 = node as Node;
    if (n0.anchor) anchors.set(n0.anchor, n0);
    let n = 1;
    total += 1;
    if (isMap(n0) || isSeq(n0)) for (const item of n0.items) n += count(item);
    if (n0.anchor) counted.set(n0, n);
    return n;
  };
  count(root);
  return past;
}

/**
 * The concrete syntax tree, built without recursion; or the offset of a collection nested deeper
 * than MAX_DEPTH, as composing the tree into a document recurses once per level.
 */
function syntaxTree(text: string, lineCounter: LineCounter): CST.Token[] | number {
  const parser = new Parser(lineCounter.addNewLine);
  const tokens: CST.Token[] = [];
  lineCounter.addNewLine(0); // as Parser.parse() does
  for (const lexeme of new Lexer().lex(text)) {
    for (const t of parser.next(lexeme)) tokens.push(t);
    // The open collections are on the parser's stack: stop there rather than build a huge tree first.
    if (parser.stack.length > MAX_DEPTH) {
      const open = parser.stack.filter(CST.isCollection);
      if (open.length > MAX_DEPTH) return open[MAX_DEPTH].offset;
    }
  }
  for (const t of parser.end()) tokens.push(t);
  return tooDeep(tokens) ?? tokens;
}

/** Offset of the first collection nested deeper than MAX_DEPTH, if any (depth first, in document order). */
function tooDeep(tokens: readonly CST.Token[]): number | undefined {
  const stack: Array<[CST.Token, number]> = tokens.map((t): [CST.Token, number] => [t, 0]).reverse();
  for (let top = stack.pop(); top; top = stack.pop()) {
    const [token, depth] = top;
    if (token.type === 'document') {
      if (token.value) stack.push([token.value, depth]);
    } else if (CST.isCollection(token)) {
      if (depth >= MAX_DEPTH) return token.offset;
      for (let i = token.items.length - 1; i >= 0; i--) {
        const { key, value } = token.items[i];
        if (value) stack.push([value, depth + 1]);
        if (key) stack.push([key, depth + 1]);
      }
    }
  }
  return undefined;
}

/** What a key is looked up by: a scalar's value; any other key (a collection) only equals itself. */
const keyOf = (p: Pair): unknown => (isScalar(p.key) ? p.key.value : p.key);

/** Every mapping's pairs by key (the first of equal keys); each further equal key is reported. */
function indexKeys(root: Node | null, duplicate: (offset: number, key: unknown) => void): Map<YAMLMap, Map<unknown, Pair>> {
  const index = new Map<YAMLMap, Map<unknown, Pair>>();
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const node = stack.pop();
    if (isMap(node)) {
      const byKey = new Map<unknown, Pair>();
      index.set(node, byKey);
      for (const pair of node.items) {
        const k = keyOf(pair);
        if (!byKey.has(k)) byKey.set(k, pair);
        else duplicate((pair.key as Node).range?.[0] ?? 0, k);
        stack.push(pair.key, pair.value);
      }
    } else if (isSeq(node)) {
      for (const item of node.items) stack.push(item);
    }
  }
  return index;
}

function documentPositions(root: Node | null, keys: Map<YAMLMap, Map<unknown, Pair>>, at: (offset: number) => Position): PositionLookup {
  const startOf = (n: Node | null | undefined): Position => (n?.range ? at(n.range[0]) : START);
  const walk = (path: ConfigPath, wantKey: boolean): Position => {
    let node: Node | null | undefined = root;
    let best = startOf(root);
    for (let i = 0; i < path.length; i++) {
      const step = path[i];
      if (isMap(node)) {
        const pair = keys.get(node)?.get(step);
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
