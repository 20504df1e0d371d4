/** withoutEchoes: a query credential taken out of the URL fields of a response, or the field dropped. */
import t from 'tap';
import { relayHeaders, withoutEchoes } from '../../src/upstream/forwarder.js';

const pair = 'api_key=s%2Bk';
t.test('URL fields lose the whole parameter; other fields holding it are dropped', async (t) => {
  const cases: Array<[string, string, string | undefined]> = [
    ['Location', `/a?${pair}`, '/a'],
    ['location', `/a?${pair}&b=1`, '/a?b=1'],
    ['location', `/a?b=1&${pair}`, '/a?b=1'],
    ['location', `/a?b=1&${pair}&c=2`, '/a?b=1&c=2'],
    ['location', `/a?b=1&${pair}#frag`, '/a?b=1#frag'],
    ['location', `/a?${pair}&${pair}`, '/a'],
    ['content-location', `http://h/a?${pair}`, 'http://h/a'],
    ['Link', `</a?${pair}>; rel="next"`, '</a>; rel="next"'],
    ['refresh', `0; url=/a?x=1&${pair}`, '0; url=/a?x=1'],
    ['location', `/a?x${pair}`, undefined],
    ['location', `/a?${pair}1`, undefined],
    ['x-debug', `/a?${pair}`, undefined],
    ['location', '/a?b=1', '/a?b=1'],
    ['x-other', 'fine', 'fine'],
  ];
  for (const [name, value, expected] of cases) t.equal(withoutEchoes(name, value, [pair]), expected, `${name}: ${value}`);
});

t.test('relayHeaders applies it, and only when given echoes', async (t) => {
  const raw = ['Location', `/a?${pair}`, 'X-Debug', pair, 'Server', 'x'];
  t.same(relayHeaders(raw, 'rid', [pair]), ['Location', '/a', 'Server', 'x', 'x-request-id', 'rid']);
  t.same(relayHeaders(raw, 'rid'), [...raw, 'x-request-id', 'rid']);
});
