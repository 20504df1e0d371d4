/**
 * Method overrides carried as parameters. Rails (Rack::MethodOverride), Laravel and Symfony take
 * another method than the request line's from a `_method` form field (Laravel and Symfony from the
 * query string too), Express's method-override wherever it is told to look. A request is
 * authorized for its request line's method: a `_method` parameter in the query or in a form body
 * is refused as ambiguous, not forwarded.
 *
 * Names are read as those frameworks read them: percent-decoded, `+` as a space, leading spaces
 * dropped and ` ` or `.` read as `_` (PHP), `[` ending the name (`_method[x]`); and compared
 * without regard to case, which refuses more than any of them would take.
 */

const TARGET = '_method';

/** The refusal's detail, for a `_method` found in the query or the body. */
export const METHOD_OVERRIDE_DETAIL = (where: 'query' | 'form body') =>
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

/** Which scanner reads a body of this Content-Type, if any. */
export function bodyOverrideScanner(contentType: string | undefined): { feed(piece: Buffer): boolean } | undefined {
  if (contentType === undefined) return undefined;
  const type = contentType.split(';', 1)[0].trim().toLowerCase();
  if (type === 'application/x-www-form-urlencoded') return new FormNameScanner();
  if (type === 'multipart/form-data') return new MultipartNameScanner();
  return undefined;
}
