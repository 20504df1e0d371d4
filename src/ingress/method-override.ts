/**
 * Method overrides carried as parameters. Rails (Rack::MethodOverride), Laravel and Symfony take
 * another method than the request line's from a `_method` form field (Laravel and Symfony from the
 * query string too, Laravel from a JSON body's top-level `_method`), Express's method-override
 * wherever it is told to look. A request is authorized for its request line's method: a `_method`
 * parameter in the query, a form body or a JSON body is refused as ambiguous, not forwarded.
 *
 * Names are read as those frameworks read them: percent-decoded, `+` as a space, leading spaces
 * dropped and ` ` or `.` read as `_` (PHP), `[` ending the name (`_method[x]`); and compared
 * without regard to case, which refuses more than any of them would take.
 */

const TARGET = '_method';

/** The refusal's detail, for a `_method` found in the query or the body. */
export const METHOD_OVERRIDE_DETAIL = (where: 'query' | 'body') =>
  `a method override (_method) in the ${where}: the request is authorized for its request line's method`;

const hexValue = (c: number) => (c >= 48 && c <= 57 ? c - 48 : c >= 65 && c <= 70 ? c - 55 : c >= 97 && c <= 102 ? c - 87 : -1);

/**
 * Reads `application/x-www-form-urlencoded` text (a query string or a form body) as it arrives,
 * in pieces cut anywhere, and tells whether a parameter was named `_method`. Holds at most the
 * first eight characters of the current name.
 */
export class FormNameScanner {
  private inName = true;
  /** The current name, decoded and normalised, while it can still be `_method`. */
  private name = '';
  private alive = true;
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
        this.startName();
        continue;
      }
      if (!this.inName) continue;
      if (c === 61) {
        if (this.nameEnds()) return true;
        this.inName = false;
        continue;
      }
      if (this.alive) {
        this.nameByte(c);
        if (this.found) return true;
      }
    }
    return false;
  }

  private startName(): void {
    this.inName = true;
    this.name = '';
    this.alive = true;
    this.escape = 0;
  }

  /** The name is complete: is it `_method`? (An escape cut short counts as its characters.) A name
   * that never ends (`?_method`, no value) overrides nothing. */
  private nameEnds(): boolean {
    if (this.alive && this.escape === 0 && this.name === TARGET) this.found = true;
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
      this.nameChar(37);
      if (this.alive) this.nameByte(c);
      return;
    }
    if (this.escape === 2) {
      const l = hexValue(c);
      this.escape = 0;
      if (l >= 0) {
        this.nameChar(this.high * 16 + l);
        return;
      }
      this.nameChar(37);
      if (this.alive) this.nameChar(this.high < 10 ? 48 + this.high : 55 + this.high);
      if (this.alive) this.nameByte(c);
      return;
    }
    if (c === 37) this.escape = 1;
    else this.nameChar(c === 43 ? 32 : c);
  }

  /** One decoded character of the name. */
  private nameChar(c: number): void {
    if (c === 32 && this.name === '') return; // leading spaces are dropped (PHP)
    if (c === 91) {
      // "_method[...]": the name is what comes before the bracket.
      this.alive = this.name === TARGET;
      if (this.alive) this.found = true;
      return;
    }
    const ch = c === 32 || c === 46 ? '_' : String.fromCharCode(c).toLowerCase();
    this.name += ch;
    if (this.name.length > TARGET.length || !TARGET.startsWith(this.name)) this.alive = false;
  }
}

/** Whether a query string (without '?') names a `_method` parameter. */
export function queryHasMethodOverride(query: string): boolean {
  // Fast path: no name can be `_method` without an 'm' or 'M', literal or escaped ("%6d").
  if (!/[mM]|%[46][dD]/.test(query)) return false;
  return new FormNameScanner().feed(query);
}

/**
 * Reads a `multipart/form-data` body as it arrives and tells whether a part is named `_method`
 * (`Content-Disposition: form-data; name="_method"`). Looks at the text as a whole, parts' content
 * included: a file that holds such a line is refused too, which errs on the safe side.
 */
export class MultipartNameScanner {
  private tail = '';
  found = false;

  feed(piece: Buffer): boolean {
    if (this.found) return true;
    const text = this.tail + piece.toString('latin1');
    // name="_method", name=_method, name*=utf-8''_method; the character after it must have come.
    if (/\bname\*?\s*=\s*(?:[\w-]*'[\w-]*')?"?\s*_method\s*["\s;[]/i.test(text)) this.found = true;
    // Enough to hold a name cut between two pieces.
    this.tail = text.slice(-256);
    return this.found;
  }
}

/**
 * Reads a JSON body as it arrives and tells whether its top-level object has a `_method` key.
 * Laravel reads the method override from its input, which for a JSON request is the JSON body.
 * Keys are decoded (`"\u005fmethod"` is `_method`); strings, escapes and nesting are followed so
 * that a `_method` inside a string or a nested object does not count.
 */
export class JsonKeyScanner {
  private depth = 0;
  /** Object or array at each depth (true: object). */
  private readonly objects: boolean[] = [];
  private expectKey = false;
  private inString = false;
  /** The string under way is a top-level key. */
  private isKey = false;
  private key = '';
  private keyAlive = true;
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
        this.isKey = this.depth === 1 && this.expectKey && this.objects[1] === true;
        this.key = '';
        this.keyAlive = true;
      } else if (c === 123 || c === 91) {
        this.depth++;
        this.objects[this.depth] = c === 123;
        this.expectKey = c === 123;
      } else if (c === 125 || c === 93) {
        this.depth--;
        this.expectKey = false;
      } else if (c === 44) {
        this.expectKey = this.objects[this.depth] === true;
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
      if (this.isKey && this.keyAlive && this.key === TARGET) this.found = true;
      return;
    }
    this.keyChar(c);
  }

  private keyChar(c: number): void {
    if (!this.isKey || !this.keyAlive) return;
    this.key += String.fromCharCode(c).toLowerCase();
    if (this.key.length > TARGET.length || !TARGET.startsWith(this.key)) this.keyAlive = false;
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

/**
 * Which scanners read a request body, if any. The media type is read as Rack and PHP read it (up
 * to the first ";", "," or space, any case): forms (urlencoded, multipart), and a POST without
 * Content-Type, which Rack reads as a form. JSON as Laravel tells it: "/json" or "+json" anywhere in
 * the header, whatever else it says (so a body can be both a form and JSON, each to someone).
 */
export function bodyOverrideScanner(contentType: string | undefined, method: string): { feed(piece: Buffer): boolean } | undefined {
  if (contentType === undefined) return method === 'POST' ? new FormNameScanner() : undefined;
  const lower = contentType.toLowerCase();
  const type = lower.trim().split(/[;, ]/, 1)[0];
  const scanners: Array<{ feed(piece: Buffer): boolean }> = [];
  if (type === 'application/x-www-form-urlencoded') scanners.push(new FormNameScanner());
  else if (type === 'multipart/form-data') scanners.push(new MultipartNameScanner());
  if (lower.includes('/json') || lower.includes('+json')) scanners.push(new JsonKeyScanner());
  return scanners.length > 1 ? new EitherScanner(scanners) : scanners[0];
}
