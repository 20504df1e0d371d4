/**
 * A JSON reader that behaves like Go's encoding/json where clients can tell the difference:
 * - `parseFirstValue` reads only the first value of a request body and ignores whatever follows,
 *   as a `json.Decoder.Decode` call does; `parseOnlyValue` demands the whole text, as
 *   `json.Unmarshal` does.
 * - numbers keep their literal text, so an integer field can refuse `1.5` or `1e3` like Go;
 * - objects keep every member in order, duplicates included (the last one wins when decoded);
 * - lone surrogate escapes become U+FFFD, as Go decodes them.
 */

export class JsonNumber {
  constructor(readonly raw: string) {}
}

export class JsonObject {
  constructor(readonly entries: Array<[string, JsonValue]>) {}
}

export type JsonValue = null | boolean | string | JsonNumber | JsonValue[] | JsonObject;

export class JsonSyntaxError extends Error {
  override name = 'JsonSyntaxError';
}

const MAX_DEPTH = 1000;
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const SIMPLE_ESCAPES: Record<string, string> = {
  '"': '"',
  '\\': '\\',
  '/': '/',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
};

class Reader {
  pos = 0;
  constructor(private readonly text: string) {}

  fail(what: string): never {
    throw new JsonSyntaxError(`${what} at offset ${this.pos}`);
  }

  skipSpace(): void {
    const s = this.text;
    while (this.pos < s.length) {
      const c = s.charCodeAt(this.pos);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
      this.pos++;
    }
  }

  atEnd(): boolean {
    return this.pos >= this.text.length;
  }

  value(depth: number): JsonValue {
    if (depth > MAX_DEPTH) this.fail('nesting too deep');
    this.skipSpace();
    const c = this.text[this.pos];
    switch (c) {
      case '{':
        return this.object(depth);
      case '[':
        return this.array(depth);
      case '"':
        return this.string();
      case 't':
        return this.literal('true', true);
      case 'f':
        return this.literal('false', false);
      case 'n':
        return this.literal('null', null);
      case undefined:
        return this.fail('unexpected end of input');
      default:
        return this.number();
    }
  }

  private literal<T>(word: string, v: T): T {
    if (!this.text.startsWith(word, this.pos)) this.fail('invalid literal');
    this.pos += word.length;
    return v;
  }

  private number(): JsonNumber {
    NUMBER.lastIndex = this.pos;
    const m = NUMBER.exec(this.text);
    if (!m || m[0].length === 0) this.fail('invalid character');
    this.pos += m[0].length;
    return new JsonNumber(m[0]);
  }

  private object(depth: number): JsonObject {
    this.pos++;
    const entries: Array<[string, JsonValue]> = [];
    this.skipSpace();
    if (this.text[this.pos] === '}') {
      this.pos++;
      return new JsonObject(entries);
    }
    for (;;) {
      this.skipSpace();
      if (this.text[this.pos] !== '"') this.fail('expected object key');
      const key = this.string();
      this.skipSpace();
      if (this.text[this.pos] !== ':') this.fail("expected ':'");
      this.pos++;
      entries.push([key, this.value(depth + 1)]);
      this.skipSpace();
      const c = this.text[this.pos++];
      if (c === '}') return new JsonObject(entries);
      if (c !== ',') this.fail("expected ',' or '}'");
    }
  }

  private array(depth: number): JsonValue[] {
    this.pos++;
    const items: JsonValue[] = [];
    this.skipSpace();
    if (this.text[this.pos] === ']') {
      this.pos++;
      return items;
    }
    for (;;) {
      items.push(this.value(depth + 1));
      this.skipSpace();
      const c = this.text[this.pos++];
      if (c === ']') return items;
      if (c !== ',') this.fail("expected ',' or ']'");
    }
  }

  private hex4(): number {
    const h = this.text.slice(this.pos, this.pos + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) this.fail('invalid unicode escape');
    this.pos += 4;
    return Number.parseInt(h, 16);
  }

  private string(): string {
    const s = this.text;
    this.pos++;
    let out = '';
    let start = this.pos;
    for (;;) {
      if (this.pos >= s.length) this.fail('unterminated string');
      const c = s.charCodeAt(this.pos);
      if (c === 0x22) {
        out += s.slice(start, this.pos);
        this.pos++;
        return out;
      }
      if (c < 0x20) this.fail('control character in string');
      if (c !== 0x5c) {
        this.pos++;
        continue;
      }
      out += s.slice(start, this.pos);
      this.pos++;
      const e = s[this.pos];
      if (e !== undefined && e in SIMPLE_ESCAPES) {
        out += SIMPLE_ESCAPES[e];
        this.pos++;
      } else if (e === 'u') {
        this.pos++;
        out += this.unicodeEscape();
      } else {
        this.fail('invalid escape');
      }
      start = this.pos;
    }
  }

  private unicodeEscape(): string {
    const hi = this.hex4();
    if (hi < 0xd800 || hi > 0xdfff) return String.fromCharCode(hi);
    if (hi <= 0xdbff && this.text.startsWith('\\u', this.pos)) {
      const save = this.pos;
      this.pos += 2;
      const lo = this.hex4();
      if (lo >= 0xdc00 && lo <= 0xdfff) return String.fromCharCode(hi, lo);
      // Not a pair: Go replaces the first half and decodes the second escape on its own.
      this.pos = save;
    }
    return '\ufffd';
  }
}

/** The first JSON value of `text`; anything after it is ignored (Go's json.Decoder). */
export function parseFirstValue(text: string): JsonValue {
  return new Reader(text).value(0);
}

/** Exactly one JSON value, surrounded only by whitespace (Go's json.Unmarshal). */
export function parseOnlyValue(text: string): JsonValue {
  const r = new Reader(text);
  const v = r.value(0);
  r.skipSpace();
  if (!r.atEnd()) r.fail('invalid character after top-level value');
  return v;
}
