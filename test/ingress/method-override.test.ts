/**
 * `_method` parameters (method overrides of Rails, Laravel, Symfony, Express's method-override):
 * the scanners as a table, pieces cut at every byte, and the query refusal through canonicalization.
 */
import t from 'tap';
import { SidecarError } from '../../src/errors.js';
import { canonicalizeForward, canonicalizeOrigin } from '../../src/ingress/canonical.js';
import { bodyOverrideCheck, FormNameScanner, JsonKeyScanner, MultipartNameScanner, queryHasMethodOverride } from '../../src/ingress/method-override.js';

const FORM: Array<[string, boolean]> = [
  ['_method=DELETE', true],
  ['a=1&_method=PUT', true],
  ['a=1;_method=PUT', true],
  ['a=1&&_method=PUT&b=2', true],
  ['_method=', true],
  ['%5Fmethod=DELETE', true],
  ['%5fMETHOD=DELETE', true],
  ['_%6Dethod=DELETE', true],
  ['_%6dethod=DELETE', true],
  ['_METHOD=DELETE', true],
  ['+_method=DELETE', true], // PHP drops leading spaces
  ['%20%20_method=DELETE', true],
  ['.method=DELETE', true], // PHP reads '.' as '_'
  ['+method=DELETE', false], // the space is leading: "method"
  ['_method[x]=DELETE', true],
  ['_method%5Bx%5D=DELETE', true],
  ['method=DELETE', false],
  ['__method=DELETE', false],
  ['x_method=DELETE', false],
  ['_methods=DELETE', false],
  ['_metho=DELETE', false],
  ['_method%00=DELETE', true], // PHP ends a name at NUL
  ['_method%00x=DELETE', true],
  ['[_method]=DELETE', true], // Rack 2 drops leading brackets
  [']]_method=DELETE', true],
  ['_method%=DELETE', false],
  ['_method%4=DELETE', false],
  ['a=_method', false],
  ['a=_method=1', false],
  ['a=1%26_method%3D1', false], // an encoded '&' does not start a name
  ['_method', false], // no value: nothing to override with
  ['', false],
  ['q=search&page=2', false],
  ['%zz_method=1', false],
  ['%_method=1', false],
];

t.test('form text: which names are `_method`', async (t) => {
  for (const [text, expected] of FORM) {
    t.equal(new FormNameScanner().feed(text), expected, JSON.stringify(text));
    t.equal(queryHasMethodOverride(text), expected, `query ${JSON.stringify(text)}`);
    // The same text as bytes, cut at every place: the answer does not depend on where pieces end.
    for (let cut = 1; cut < text.length; cut++) {
      const s = new FormNameScanner();
      const found = s.feed(Buffer.from(text.slice(0, cut))) || s.feed(Buffer.from(text.slice(cut)));
      if (found !== expected) t.fail(`${JSON.stringify(text)} cut at ${cut}: ${found}`);
    }
  }
  // One byte at a time.
  const s = new FormNameScanner();
  let found = false;
  for (const b of Buffer.from('a=1&b=%5F&%5F%6D%65%74%68%6F%64=PATCH')) found = s.feed(Buffer.from([b])) || found;
  t.ok(found, 'fully escaped, one byte per piece');
});

t.test('multipart bodies: a part named `_method`', async (t) => {
  const part = (disposition: string, value = 'DELETE') =>
    `--b\r\nContent-Disposition: ${disposition}\r\n\r\n${value}\r\n--b--\r\n`;
  const cases: Array<[string, boolean]> = [
    [part('form-data; name="_method"'), true],
    [part('form-data; NAME="_METHOD"'), true],
    [part('form-data; name=_method'), true],
    [part('form-data; name="_method"; filename="x"'), true],
    [part("form-data; name*=utf-8''_method"), true],
    [part('form-data; name="_method[x]"'), true],
    [part('form-data; name="other"'), false],
    [part('form-data; name="_methods"'), false],
    [part('form-data; name="other"; filename="_method"'), false],
    [part('form-data; name="x_method"'), false],
    [part("form-data; name='_method'"), true],
    [part('form-data; name=".method"'), true],
    [part('form-data; name="_me\\thod"'), true],
    [part('form-data; name="[_method]"'), true],
    [part('form-data; name="_method\u0000x"'), true],
    [part(`form-data; name="${' '.repeat(300)}_method"`), true],
    [part('form-data;\r\n name="_method"'), true],
    [part('form-data; name = _method'), true],
    [`--b\r\nContent-ID: _method\r\n\r\nDELETE\r\n--b--\r\n`, true],
    [`--b\r\nX-Note: Content-Disposition: form-data; name="_method"\r\n\r\nx\r\n--b--\r\n`, true],
    [part('form-data; name="x'), false],
    [`${part('form-data; name="x')}${part('form-data; name="_method"')}`, true],
    [part('form-data; name="payment_method"'), false],
    [part('form-data; name="method"'), false],
    [part('form-data; username="_method"'), false],
    // Found by running real parsers: Rack takes the last ";\s*name=", even after another parameter's quote.
    [part('form-data; x=" name=";name=_method'), true],
    [part('form-data; name=;name=_method'), true],
    [part('form-data; name=_method/'), true],
    [part('form-data; name=_method('), true],
    [part('form-data; name=_method?'), true],
    [`--b\r\nContent-Disposition: form-data\r\nX-Note: name=zContent-ID:_method\r\n\r\nx\r\n--b--\r\n`, true],
    [part('form-data; name="a"; filename="name=x.txt"'), false],
  ];
  for (const [body, expected] of cases) {
    t.equal(new MultipartNameScanner().feed(Buffer.from(body)), expected, JSON.stringify(body));
    for (let cut = 1; cut < body.length; cut++) {
      const s = new MultipartNameScanner();
      const found = s.feed(Buffer.from(body.slice(0, cut))) || s.feed(Buffer.from(body.slice(cut)));
      if (found !== expected) t.fail(`${JSON.stringify(body)} cut at ${cut}: ${found}`);
    }
  }
});

t.test('JSON bodies: a top-level `_method` key', async (t) => {
  const cases: Array<[string, boolean]> = [
    ['{"_method":"DELETE"}', true],
    ['{ "a": 1, "_method" : "PUT" }', true],
    ['{"a":[1,{"b":2}],"_method":"PUT"}', true],
    ['{"\\u005fmethod":"DELETE"}', true],
    ['{"\\u005Fmethod":"DELETE"}', true],
    ['{"_METHOD":"DELETE"}', true],
    ['{"_method":null}', true],
    ['{"a":"_method"}', false],
    ['{"a":{"_method":"DELETE"}}', false],
    ['[{"_method":"DELETE"}]', false],
    ['{"a":"x\\"_method\\":1"}', false],
    ['{"a":"\\\\","b":{"_method":1}}', false],
    ['{"_methods":1}', false],
    ['{"x_method":1}', false],
    ['{"a":["_method"],"b":1}', false],
    ['"_method"', false],
    ['{}', false],
  ];
  for (const [body, expected] of cases) {
    t.equal(new JsonKeyScanner().feed(Buffer.from(body)), expected, body);
    for (let cut = 1; cut < body.length; cut++) {
      const s = new JsonKeyScanner();
      const found = s.feed(Buffer.from(body.slice(0, cut))) || s.feed(Buffer.from(body.slice(cut)));
      if (found !== expected) t.fail(`${body} cut at ${cut}: ${found}`);
    }
  }
});

t.test('which bodies are read for `_method`, and which are refused as unreadable', async (t) => {
  const check = (ct?: string, ce?: string) => bodyOverrideCheck({ 'content-type': ct, 'content-encoding': ce });
  const finds = (ct: string | undefined, body: string) => {
    const c = check(ct);
    return typeof c === 'object' && c.feed(Buffer.from(body));
  };
  t.ok(finds('application/x-www-form-urlencoded', 'a=1&_method=PUT'));
  t.ok(finds('Application/X-WWW-Form-Urlencoded; charset=UTF-8', '_method=PUT'));
  t.ok(finds('application/x-www-form-urlencoded, text/plain', '_method=PUT'), 'the media type ends at "," (Rack, PHP)');
  t.ok(finds('application/x-www-form-urlencoded x', '_method=PUT'), 'and at a space (PHP)');
  t.ok(finds(undefined, '_method=PUT'), 'no Content-Type: a form to Rack');
  t.ok(finds('', '_method=PUT'), 'an empty one too');
  t.ok(finds('multipart/form-data; boundary=b', '--b\r\nContent-Disposition: form-data; name="_method"\r\n\r\nX\r\n--b--'));
  t.ok(finds('multipart/mixed', '_method=PUT'), 'multipart without a boundary: a form to Rack');
  t.notOk(finds('multipart/form-data; boundary=b', '--b\r\nContent-Disposition: form-data; name="f"; filename="t.txt"\r\n\r\na=1&_method=delete\r\n--b--'), 'with a boundary, a file holding form text is not read as a form');
  t.ok(finds('multipart/related; boundary=b', '--b\r\nContent-Disposition: form-data; name="_method"\r\n\r\nX\r\n--b--'));
  t.ok(finds('multipart/form-data,boundary=b', '--b\r\nContent-Disposition: form-data; name="_method"\r\n\r\nX\r\n--b--'));
  t.ok(finds('application/json', '{"_method":"PUT"}'));
  t.ok(finds('application/vnd.api+json; charset=utf-8', '{"_method":"PUT"}'));
  t.ok(finds('text/plain; x=/json', '{"_method":"PUT"}'), '"json" anywhere in the header (Laravel)');
  t.ok(finds('application/x-www-form-urlencoded; profile=a+json', 'a=1&_method=PUT'), 'a form to one, JSON to another: both ways');
  t.ok(finds('application/x-www-form-urlencoded; profile=a+json', '{"_method":"PUT"}'));
  t.equal(check('application/octet-stream'), undefined);
  t.equal(check('text/plain'), undefined);
  t.match(check('application/json', 'gzip'), /compressed form or JSON body cannot be checked/);
  t.match(check('application/x-www-form-urlencoded', 'deflate'), /compressed/);
  t.match(check('application/json; charset=utf-16le'), /in utf-16le cannot be checked/);
  t.match(check('application/json; charset=UTF-32'), /cannot be checked/);
  for (const ascii of ['Shift_JIS', 'ISO-8859-15', 'windows-1251', 'euc-jp', 'gbk', 'koi8-r']) t.type(check(`application/x-www-form-urlencoded; charset=${ascii}`), 'object', `${ascii}: ASCII names are the same bytes, read`);
  t.type(check('application/json', 'identity'), 'object');
  t.equal(check('application/octet-stream', 'gzip'), undefined, 'other bodies: not our concern');
});

t.test('scanners stay linear on hostile input: four times the bytes, about four times the work', async (t) => {
  // A run of spaces after "name=" (a regex that backtracked took seconds on it), quotes opening
  // candidate values, and deep JSON nesting (which once grew an array per level).
  const inputs: Array<[string, (n: number) => Buffer, () => { feed(b: Buffer): boolean }]> = [
    ['spaces after name=', (n) => Buffer.from(`name=${' '.repeat(n)};`), () => new MultipartNameScanner()],
    ['name=" over and over', (n) => Buffer.from('name="x '.repeat(n / 8)), () => new MultipartNameScanner()],
    ['JSON nesting', (n) => Buffer.from('['.repeat(n)), () => new JsonKeyScanner()],
    ['form names', (n) => Buffer.from('%5F'.repeat(n / 3)), () => new FormNameScanner()],
  ];
  for (const [what, make, scanner] of inputs) {
    const time = (n: number) => {
      const body = make(n);
      let best = Number.POSITIVE_INFINITY;
      for (let i = 0; i < 3; i++) {
        const started = performance.now();
        const s = scanner();
        for (let at = 0; at < body.length; at += 65536) s.feed(body.subarray(at, at + 65536));
        best = Math.min(best, performance.now() - started);
      }
      return best;
    };
    time(250_000);
    const small = time(1_000_000);
    const large = time(4_000_000);
    t.ok(large / Math.max(small, 3) < 9, `${what}: 4x the bytes took ${(large / small).toFixed(1)}x the time (${small.toFixed(0)} ms, ${large.toFixed(0)} ms)`);
  }
});

t.test('a `_method` query parameter is refused as ambiguous, in every request form', async (t) => {
  const refused = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      return e instanceof SidecarError ? `${e.code}: ${e.message}` : String(e);
    }
    return 'accepted';
  };
  t.match(refused(() => canonicalizeForward('POST', 'http://h/x?_method=DELETE', { host: 'h' })), /^ambiguous_request: .*a method override \(_method\) in the query/);
  t.match(refused(() => canonicalizeForward('GET', 'http://h/x?a=1&%5Fmethod=DELETE', { host: 'h' })), /^ambiguous_request/);
  t.match(
    refused(() => canonicalizeOrigin('POST', '/x?_method=PUT', { host: 'h' }, { kind: 'intercepted', host: 'h', port: 443 })),
    /^ambiguous_request/,
  );
  t.equal(refused(() => canonicalizeForward('POST', 'http://h/x?method=DELETE&q=_method', { host: 'h' })), 'accepted');
});
