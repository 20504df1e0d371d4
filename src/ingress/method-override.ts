/**
 * Method overrides carried as parameters. Rails (Rack::MethodOverride), Laravel and Symfony take
 * another method than the request line's from a `_method` form field (Laravel and Symfony from the
 * query string too, Laravel from a JSON body's top-level `_method`), Express's method-override
 * wherever it is told to look. A request is authorized for its request line's method: a `_method`
 * parameter in the query, a form body or a JSON body is refused as ambiguous, not forwarded.
 *
 * Names are read as the most lenient of those parsers reads them (NameReader), compared without
 * regard to case; which bodies are read, and which cannot be (compressed, or in a charset that is
 * not ASCII-compatible), is bodyOverrideCheck's. Every scanner is linear in its input and holds a
 * bounded amount of it, as bodies stream through.
 */

const TARGET = '_method';

/** The refusal's detail, for a `_method` found in the query or the body. */
export const METHOD_OVERRIDE_DETAIL = (where: 'query' | 'body') =>
  `a method override (_method) in the ${where}: the request is authorized for its request line's method`;

const hexValue = (c: number) => (c >= 48 && c <= 57 ? c - 48 : c >= 65 && c <= 70 ? c - 55 : c >= 97 && c <= 102 ? c - 87 : -1);

/**
 * One parameter name, decoded character by character, as the frameworks normalise it: leading
 * spaces and brackets dropped (PHP; Rack 2 drops leading "[" and "]"), " " and "." read as "_"
 * (PHP), the name ending at "[" or "]" (`_method[x]`, an array of that name; Rack reads `[_method]` as
 * `_method`) or at NUL (PHP). Keeps at most
 * the characters that can still make `_method`.
 */
class NameReader {
  private name = '';
  private alive = true;
  private ended = false;
  /** Set once the name is `_method` and nothing after can change that ("[", NUL). */
  settled = false;

  reset(): void {
    this.name = '';
    this.alive = true;
    this.ended = false;
    this.settled = false;
  }

  char(c: number): void {
    if (!this.alive || this.ended) return;
    if (this.name === '' && (c === 32 || c === 91 || c === 93)) return;
    if (c === 91 || c === 93 || c === 0) {
      this.ended = true;
      this.settled = this.name === TARGET;
      this.alive = this.settled;
      return;
    }
    this.name += c === 32 || c === 46 ? '_' : String.fromCharCode(c).toLowerCase();
    if (this.name.length > TARGET.length || !TARGET.startsWith(this.name)) this.alive = false;
  }

  /** The whole name was read: is it `_method`? */
  is(): boolean {
    return this.alive && this.name === TARGET;
  }
}

/**
 * Reads `application/x-www-form-urlencoded` text (a query string or a form body) as it arrives,
 * in pieces cut anywhere, and tells whether a parameter was named `_method`.
 */
export class FormNameScanner {
  private inName = true;
  private readonly reader = new NameReader();
  /** 0: no escape under way; 1: after '%'; 2: after '%' and one hex digit (in `high`). */
  private escape = 0;
  private high = 0;
  found = false;

  /** Feeds the next piece (bytes or latin1 text); true once a `_method` name was seen. */
  feed(piece: Buffer | string): boolean {
    if (this.found) return true;
    const text = typeof piece === 'string';
    for (let i = 0; i < piece.length; i++) {
      const c = text ? piece.charCodeAt(i) : piece[i];
      // Separators are raw bytes ('%26' is part of a name or value, not a separator).
      if (c === 38 || c === 59) {
        if (this.inName && this.nameEnds()) return true;
        this.inName = true;
        this.reader.reset();
        this.escape = 0;
        continue;
      }
      if (!this.inName) continue;
      if (c === 61) {
        if (this.nameEnds()) return true;
        this.inName = false;
        continue;
      }
      this.nameByte(c);
      if (this.reader.settled) {
        this.found = true;
        return true;
      }
    }
    return false;
  }

  /** The name is complete. One that never ends (`?_method`, no value) overrides nothing. */
  private nameEnds(): boolean {
    if (this.escape === 0 && this.reader.is()) this.found = true;
    return this.found;
  }

  private nameByte(c: number): void {
    if (this.escape === 1) {
      const h = hexValue(c);
      if (h >= 0) {
        this.high = h;
        this.escape = 2;
        return;
      }
      // Not an escape: '%' stands for itself, and so does this byte.
      this.escape = 0;
      this.reader.char(37);
      this.nameByte(c);
      return;
    }
    if (this.escape === 2) {
      const l = hexValue(c);
      this.escape = 0;
      if (l >= 0) {
        this.reader.char(this.high * 16 + l);
        return;
      }
      this.reader.char(37);
      this.reader.char(this.high < 10 ? 48 + this.high : 55 + this.high);
      this.nameByte(c);
      return;
    }
    if (c === 37) this.escape = 1;
    else this.reader.char(c === 43 ? 32 : c);
  }
}

/** Whether a query string (without '?') names a `_method` parameter. */
export function queryHasMethodOverride(query: string): boolean {
  // Fast path: no name can be `_method` without an 'm' or 'M', literal or escaped ("%6d").
  if (!/[mM]|%[46][dD]/.test(query)) return false;
  return new FormNameScanner().feed(query);
}

const lowerByte = (c: number) => (c >= 65 && c <= 90 ? c + 32 : c);
const isSpace = (c: number) => c === 32 || c === 9 || c === 13 || c === 10;
const isWordByte = (c: number) => (c >= 48 && c <= 57) || (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95 || c === 45;

/** Bytes that end a bare parameter value: whitespace and Rack's token delimiters, and quotes. */
const BARE_END = new Set([32, 9, 13, 10, 40, 41, 60, 62, 44, 59, 58, 92, 34, 39, 47, 91, 93, 63, 61, 123, 125]);

/**
 * One candidate name value, after `name=`, `name*=` or `Content-ID:`: quoted with " or ' (backslash
 * escapes undone, to the quote or the line's end), or bare (to a delimiter), `name*=` values with
 * their charset'language' prefix dropped and percent-decoded.
 */
class NameValue {
  private started = false;
  private quote = 0;
  private backslash = false;
  private ticks = 0;
  private escape = 0;
  private high = 0;
  private readonly reader = new NameReader();
  /** 0: reading; 1: ended, not `_method`; 2: `_method`. */
  result = 0;

  constructor(
    private readonly extended: boolean,
    /** Content-ID: the value is the rest of the line (Rack), read to a space or ";" here. */
    private readonly wholeLine: boolean,
  ) {}

  byte(c: number): void {
    if (!this.started) {
      if (c === 32 || c === 9) return;
      this.started = true;
      if (!this.extended && !this.wholeLine && (c === 34 || c === 39)) {
        this.quote = c;
        return;
      }
    }
    if (this.quote !== 0) {
      if (c === 10 || c === 13) this.end();
      else if (this.backslash) {
        this.backslash = false;
        this.char(c);
      } else if (c === 92) this.backslash = true;
      else if (c === this.quote) this.end();
      else this.char(c);
      return;
    }
    const ends = this.wholeLine ? c === 10 || c === 13 || c === 59 || c === 32 || c === 9 : BARE_END.has(c) && !(this.extended && c === 39);
    if (ends) this.end();
    else this.char(c);
  }

  private char(c: number): void {
    if (this.extended && this.ticks < 2) {
      // name*=charset'lang'value: the value starts after the second "'" (none: all of it).
      if (c === 39) {
        if (++this.ticks === 2) this.reader.reset();
      } else if (this.ticks === 0) this.reader.char(c);
      return;
    }
    if (this.extended && (this.escape > 0 || c === 37)) {
      if (this.escape === 0) this.escape = 1;
      else if (this.escape === 1) {
        this.high = Math.max(0, hexValue(c));
        this.escape = 2;
      } else {
        this.escape = 0;
        this.reader.char(this.high * 16 + Math.max(0, hexValue(c)));
      }
    } else this.reader.char(c);
    if (this.reader.settled) this.result = 2;
  }

  end(): void {
    if (this.result === 0) this.result = this.reader.is() || this.reader.settled ? 2 : 1;
  }
}

/** Keywords that start a name value in a multipart body, and whether they must start a word. */
const KEYWORDS = [
  { text: 'name', wordStart: true, extended: true, sep: 61, wholeLine: false },
  { text: 'content-id', wordStart: false, extended: false, sep: 58, wholeLine: true },
];
/** The bytes a keyword starts with, either case. */
const KEYWORD_START = new Uint8Array(256);
for (const { text } of KEYWORDS) {
  KEYWORD_START[text.charCodeAt(0)] = 1;
  KEYWORD_START[text.toUpperCase().charCodeAt(0)] = 1;
}
/** More candidate values alive at once than this is no multipart body: refused. */
const MAX_CANDIDATES = 32;

/**
 * Reads a multipart body as it arrives and tells whether a part may be named `_method`. Parsers
 * differ in where they look (Rack finds `Content-Disposition: …; name=` anywhere in a part's head,
 * across folded lines and inside other parameters' quotes, and names a part by its Content-ID when
 * it has no disposition; PHP and busboy split parameters minding quotes), so every `name=` /
 * `name*=` and every `Content-ID:` in the text starts a candidate value, wherever it stands, even
 * inside another value: whichever way a parser splits the line, the value it reads is among them.
 * A part's content that holds such text is refused too, which errs on the safe side. Linear: each
 * byte goes to the keyword matchers and to the few candidates still alive.
 */
export class MultipartNameScanner {
  /** Per keyword: characters matched so far, then 0 again; -1 while between the keyword and its separator. */
  private readonly matched = KEYWORDS.map(() => 0);
  private readonly star = KEYWORDS.map(() => false);
  private prev = 10;
  private values: NameValue[] = [];
  found = false;

  feed(piece: Buffer): boolean {
    if (this.found) return true;
    for (let i = 0; i < piece.length; i++) {
      // Nothing under way: skip to the next byte that can start a keyword (most of a file's content).
      if (this.values.length === 0 && this.matched[0] === 0 && this.matched[1] === 0) {
        while (i < piece.length && KEYWORD_START[piece[i]] === 0) i++;
        if (i === piece.length) {
          this.prev = piece[i - 1];
          return false;
        }
        if (i > 0) this.prev = piece[i - 1];
      }
      const c = piece[i];
      if (this.values.length > 0) this.valueByte(c);
      for (let k = 0; k < KEYWORDS.length; k++) this.keywordByte(k, c);
      this.prev = c;
      if (this.found) return true;
    }
    return false;
  }

  private valueByte(c: number): void {
    let alive = 0;
    for (const v of this.values) {
      v.byte(c);
      if (v.result === 2) this.found = true;
      if (v.result === 0) this.values[alive++] = v;
    }
    this.values.length = alive;
  }

  private keywordByte(k: number, c: number): void {
    const kw = KEYWORDS[k];
    const at = this.matched[k];
    if (at === -1) {
      // After the keyword: "*" (name*), spaces, then its separator.
      if (c === 42 && kw.extended && !this.star[k]) {
        this.star[k] = true;
        return;
      }
      if (c === kw.sep) {
        this.matched[k] = 0;
        if (this.values.length >= MAX_CANDIDATES) this.found = true;
        else this.values.push(new NameValue(this.star[k], kw.wholeLine));
        return;
      } else if (!isSpace(c)) this.matched[k] = 0;
      else return;
    }
    const l = lowerByte(c);
    const next = this.matched[k];
    if (l === kw.text.charCodeAt(next) && (next > 0 || !kw.wordStart || !isWordByte(this.prev))) {
      this.matched[k] = next + 1 === kw.text.length ? -1 : next + 1;
      this.star[k] = false;
    } else this.matched[k] = l === kw.text.charCodeAt(0) && (!kw.wordStart || !isWordByte(this.prev)) ? 1 : 0;
  }
}

/**
 * Reads a JSON body as it arrives and tells whether its top-level object has a `_method` key.
 * Laravel reads the method override from its input, which for a JSON request is the JSON body.
 * Keys are decoded (`"\u005fmethod"` is `_method`); strings, escapes and nesting are followed so
 * that a `_method` inside a string or a nested object does not count. Holds a depth count only.
 */
export class JsonKeyScanner {
  private depth = 0;
  /** The value at depth 1 is an object (its keys are the top-level keys). */
  private topObject = false;
  private expectKey = false;
  private inString = false;
  /** The string under way is a top-level key. */
  private isKey = false;
  private readonly reader = new NameReader();
  /** 0: none; 1: after a backslash; 2..5: reading the hex digits of a \u escape. */
  private escape = 0;
  private unicode = 0;
  found = false;

  feed(piece: Buffer): boolean {
    if (this.found) return true;
    for (let i = 0; i < piece.length; i++) {
      const c = piece[i];
      if (this.inString) {
        this.stringByte(c);
        if (this.found) return true;
        continue;
      }
      if (c === 34) {
        this.inString = true;
        this.isKey = this.depth === 1 && this.expectKey && this.topObject;
        this.reader.reset();
      } else if (c === 123 || c === 91) {
        this.depth++;
        if (this.depth === 1) this.topObject = c === 123;
        this.expectKey = this.depth === 1 && c === 123;
      } else if (c === 125 || c === 93) {
        this.depth--;
        this.expectKey = false;
      } else if (c === 44) {
        this.expectKey = this.depth === 1 && this.topObject;
      } else if (c === 58) {
        this.expectKey = false;
      }
    }
    return false;
  }

  private stringByte(c: number): void {
    if (this.escape === 1) {
      if (c === 117) {
        this.escape = 2;
        this.unicode = 0;
        return;
      }
      this.escape = 0;
      const map: Record<number, number> = { 98: 8, 102: 12, 110: 10, 114: 13, 116: 9 };
      this.keyChar(map[c] ?? c);
      return;
    }
    if (this.escape >= 2) {
      this.unicode = this.unicode * 16 + Math.max(0, hexValue(c));
      if (++this.escape === 6) {
        this.escape = 0;
        this.keyChar(this.unicode);
      }
      return;
    }
    if (c === 92) {
      this.escape = 1;
      return;
    }
    if (c === 34) {
      this.inString = false;
      if (this.isKey && (this.reader.is() || this.reader.settled)) this.found = true;
      return;
    }
    this.keyChar(c);
  }

  private keyChar(c: number): void {
    if (this.isKey) this.reader.char(c);
  }
}

/** Feeds several scanners: a body one framework reads as a form and another as JSON. */
class EitherScanner {
  constructor(private readonly scanners: ReadonlyArray<{ feed(piece: Buffer): boolean }>) {}
  feed(piece: Buffer): boolean {
    let found = false;
    for (const s of this.scanners) found = s.feed(piece) || found;
    return found;
  }
}

export type BodyScanner = { feed(piece: Buffer): boolean };

/** Charsets whose bytes are not ASCII for ASCII characters: a name is other bytes in them. */
const NOT_ASCII = /^(utf-?16|utf-?32|ucs-?2|ucs-?4|utf-?7|unicode|.*ebcdic|cp0?37$|ibm0?37$|cp500$|ibm500$|cp875$|cp1026$|cp114[0-9]$|ibm114[0-9]$)/;

/**
 * How a request body is read for a method override: not at all (undefined), by a scanner, or not
 * forwarded (a refusal's detail) when it is of a kind that could carry one but cannot be read as
 * it streams. The media type is taken as the most lenient parser takes it, up to the first ";",
 * "," or space, any case; an absent or empty Content-Type is a form to Rack. Forms:
 * `application/x-www-form-urlencoded`, anything naming "form" or "urlencoded"; multipart: any
 * `multipart/*` (Rack reads a multipart body without a boundary as a form, so both ways); JSON:
 * "json" anywhere in the header (Laravel looks for "/json" or "+json" in all of it). A compressed
 * body (Content-Encoding; body-parser inflates it), or one in a charset whose bytes are not ASCII
 * (UTF-16; body-parser decodes it), is refused: its names cannot be read here.
 */
export function bodyOverrideCheck(headers: { 'content-type'?: string; 'content-encoding'?: string }): BodyScanner | string | undefined {
  const header = (headers['content-type'] ?? '').trim().toLowerCase();
  const type = header.split(/[;,\s]/, 1)[0];
  const scanners: BodyScanner[] = [];
  if (type.startsWith('multipart/') || header.includes('multipart')) {
    scanners.push(new MultipartNameScanner());
    // Without a boundary Rack reads it as a form; with one, a file's text is not a form.
    if (!header.includes('boundary')) scanners.push(new FormNameScanner());
  } else if (type === '' || type === 'application/x-www-form-urlencoded' || header.includes('form') || header.includes('urlencoded')) {
    scanners.push(new FormNameScanner());
  }
  if (header.includes('json')) scanners.push(new JsonKeyScanner());
  if (scanners.length === 0) return undefined;
  const encoding = (headers['content-encoding'] ?? '').trim().toLowerCase();
  if (encoding !== '' && encoding !== 'identity') return 'a compressed form or JSON body cannot be checked for a method override (_method); send it uncompressed';
  const charset = /(?:^|[;,\s])charset\s*=\s*"?([^";,\s]*)/.exec(header)?.[1];
  if (charset !== undefined && NOT_ASCII.test(charset)) return `a form or JSON body in ${charset} cannot be checked for a method override (_method); send it in UTF-8`;
  return scanners.length > 1 ? new EitherScanner(scanners) : scanners[0];
}
