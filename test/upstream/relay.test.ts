import t from 'tap';
import { relayHeaders, stripHopByHop } from '../../src/upstream/forwarder.js';

const raw = (...pairs: string[]) => pairs.map((p) => Buffer.from(p, 'latin1'));

t.test('relayHeaders keeps end-to-end fields as sent, with our request id last', async (t) => {
  t.same(relayHeaders(raw('Content-Type', 'text/plain', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2'), 'rid'), [
    'Content-Type',
    'text/plain',
    'Set-Cookie',
    'a=1',
    'Set-Cookie',
    'b=2',
    'x-request-id',
    'rid',
  ]);
  t.same(relayHeaders(null, 'rid'), ['x-request-id', 'rid']);
  t.same(relayHeaders(['X-A', 'é'], 'rid'), ['X-A', 'é', 'x-request-id', 'rid'], 'strings are taken as they are');
  t.same(relayHeaders(raw('X-Latin', '\u00e9'), 'r')[1], '\u00e9', 'values are read as latin1, as on the wire');
});

t.test('relayHeaders drops hop-by-hop fields, the ones Connection names, and the upstream request id', async (t) => {
  const out = relayHeaders(
    raw(
      'X-Early',
      '1',
      'CONNECTION',
      'Keep-Alive, x-early , X-Late,,close',
      'Keep-Alive',
      'timeout=5',
      'Transfer-Encoding',
      'chunked',
      'Proxy-Authenticate',
      'Basic',
      'Upgrade',
      'h2c',
      'Trailer',
      'X-T',
      'X-Request-Id',
      'theirs',
      'X-Late',
      '2',
      'X-Stays',
      '3',
    ),
    'ours',
  );
  t.same(out, ['X-Stays', '3', 'x-request-id', 'ours']);
});

t.test('stripHopByHop removes the same fields from a request head object', async (t) => {
  t.same(
    stripHopByHop({ connection: 'x-a, Close', 'x-a': '1', 'x-b': ['2', '3'], host: 'h', te: 'trailers', 'proxy-authorization': 'p', expect: '100-continue', undefinedValue: undefined }),
    { 'x-b': ['2', '3'] },
  );
});
