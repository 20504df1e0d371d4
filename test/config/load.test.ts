import { resolve } from 'node:path';
import t from 'tap';
import { loadSidecarConfig, resolveSidecarConfig } from '../../src/config/load.js';
import { ConfigError, type ConfigProblem } from '../../src/errors.js';

const EXAMPLE = new URL('../../examples/sidecar.yaml', import.meta.url).pathname;
const REPO = new URL('../..', import.meta.url).pathname;

async function problems(text: string, env: NodeJS.ProcessEnv = {}): Promise<ConfigProblem[]> {
  const dir = t.testdir({ 'sidecar.yaml': text });
  try {
    await loadSidecarConfig(resolve(dir, 'sidecar.yaml'), env);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems.map((p) => ({ ...p, file: 'sidecar.yaml' }));
    throw e;
  }
  return [];
}

const KEYED = 'broker:\n  publicKeyFile: ./k.pem\n  verify: offline\n';

t.test('the shipped example loads; relative paths become absolute', async (t) => {
  const { config, file, baseDir } = await loadSidecarConfig(EXAMPLE, {});
  t.equal(file, EXAMPLE);
  t.equal(baseDir, resolve(REPO, 'examples'));
  t.equal(config.proxy.listen, '127.0.0.1:15101');
  t.equal(config.admin.listen, '127.0.0.1:15100');
  t.equal(config.broker.url, 'http://127.0.0.1:8080');
  t.equal(config.broker.verify, 'hybrid');
  t.equal(config.broker.publicKeyFile, resolve(REPO, 'examples/broker-public.pem'));
  t.equal(config.broker.revalidateAfter, '2s');
  t.same(config.policies, [resolve(REPO, 'policies')]);
  t.equal(config.audit.path, resolve(REPO, 'examples/audit.jsonl'));
  t.same(config.upstream.connectTo, { 'api.example.com:80': '127.0.0.1:9000' });
  t.equal(config.audit.onFailure, 'closed', 'defaults filled in');
});

t.test('problems carry exact positions', async (t) => {
  const cases: Array<[string, string, Array<[number, number, RegExp]>]> = [
    ['unknown top-level key', `${KEYED}prxy: {}\n`, [[4, 1, /^unknown key "prxy" \(did you mean "proxy"\?\)$/]]],
    ['unknown nested key', `${KEYED}audit:\n  path: "-"\n  flushIntervall: 5ms\n`, [[6, 3, /^audit: unknown key "flushIntervall" \(did you mean "flushInterval"\?\)$/]]],
    ['unknown key in flow mapping', `${KEYED}proxy: { listen: 127.0.0.1:1, bogus: 1 }\n`, [[4, 31, /^proxy: unknown key "bogus" \(known keys: headersTimeout, keepAliveTimeout, listen, maxConnections, maxHeaderBytes, maxRequestBodyBytes, requestBodyTimeout, responseReadTimeout\)$/]]],
    ['wrong type', `${KEYED}proxy:\n  maxHeaderBytes: big\n`, [[5, 19, /^proxy\.maxHeaderBytes: expected number, received string$/]]],
    ['a broker timeout of 0 (every call would time out)', `${KEYED}  timeout: 0\n`, [[4, 12, /^broker\.timeout: must be more than 0$/]]],
    ['leaves valid for 0 s', `${KEYED}tls:\n  leafValidity: 0s\n`, [[5, 17, /^tls\.leafValidity: must be more than 0$/]]],
    ['request heads of more than 1 MiB', `${KEYED}proxy:\n  maxHeaderBytes: 4194304\n`, [[5, 19, /^proxy\.maxHeaderBytes: Too big: expected number to be <=1048576$/]]],
    ['bad duration', `broker:\n  publicKeyFile: ./k.pem\n  verify: offline\n  revalidateAfter: 5 seconds\n`, [[4, 20, /^broker\.revalidateAfter: expected a duration such as 500ms/]]],
    ['duration of the wrong type', `${KEYED}shutdown: { grace: true }\n`, [[4, 20, /^shutdown\.grace: expected number or string, received boolean$/]]],
    ['bad enum', `${KEYED}log: { level: loud }\n`, [[4, 15, /^log\.level: Invalid option/]]],
    ['bad listen address', `${KEYED}admin:\n  listen: localhost\n`, [[5, 11, /^admin\.listen: expected HOST:PORT/]]],
    ['array item', `${KEYED}policies: [./a, 3]\n`, [[4, 17, /^policies\[1\]: expected string, received number/]]],
    ['YAML syntax error', `${KEYED}log: level: info\n`, [[4, 6, /Nested mappings are not allowed/]]],
    ['YAML tab indentation', `${KEYED}log:\n\tlevel: info\n`, [[5, 1, /Tabs are not allowed/]]],
    ['two YAML documents', `${KEYED}log: { level: info }\n---\nlog: { level: warn }\n`, [[5, 1, /^a second YAML document \(after "---"\): a file holds one$/]]],
    ['YAML unclosed quote', `${KEYED}proxy:\n  listen: "127.0.0.1:1\n`, [[6, 1, /Missing closing "quote/]]],
    ['YAML duplicate key', `${KEYED}log: {}\nlog: {}\n`, [[5, 1, /^duplicate key "log": a key may appear once in a mapping; remove or merge the other one$/]]],
    ['not a mapping', '- a\n- b\n', [[1, 1, /must be a mapping/]]],
    ['missing key source (offline)', 'broker:\n  verify: offline\n', [[2, 11, /broker\.verify offline needs a key source/]]],
    ['missing key source and url (hybrid)', 'broker:\n  verify: hybrid\n', [[2, 11, /broker\.url is required/], [2, 11, /needs a key source/]]],
    ['no url for the default online mode', 'proxy: {}\n', [[1, 1, /broker\.url is required when broker\.verify is online \(or set AGENTWRIT_BROKER_URL\)/]]],
    ['two key sources', 'broker:\n  publicKeyFile: a.pem\n  jwksFile: b.json\n  verify: offline\n', [[3, 3, /publicKeyFile, jwksFile are alternatives/]]],
    [
      'record key and value',
      `${KEYED}upstream:\n  connectTo:\n    "api.example.com": "127.0.0.1:9000"\n    "b.example.com:80": nope\n`,
      [
        [6, 5, /^upstream\.connectTo\["api\.example\.com"\]: invalid key: expected HOST:PORT$/],
        [7, 25, /^upstream\.connectTo\["b\.example\.com:80"\]: expected HOST:PORT$/],
      ],
    ],
    ['bad broker url', 'broker:\n  url: not a url\n  publicKeyFile: k.pem\n', [[2, 8, /^broker\.url: expected an http:\/\/ or https:\/\/ URL$/]]],
    [
      'broker urls without an http(s) scheme (host:port reads as a scheme)',
      'broker:\n  url: agentwrit-broker:8080\n  jwksUrl: ftp://b/jwks\n',
      [
        [2, 8, /^broker\.url: expected an http:\/\/ or https:\/\/ URL$/],
        [3, 12, /^broker\.jwksUrl: expected an http:\/\/ or https:\/\/ URL$/],
      ],
    ],
    ['client certificate without its key', 'broker:\n  url: https://broker.example:8443\n  clientCertFile: c.crt\n', [[3, 3, /^broker\.clientCertFile and broker\.clientKeyFile go together/]]],
    ['broker TLS files for a plain HTTP broker', 'broker:\n  url: http://broker.example:8080\n  caFile: ca.crt\n', [[3, 3, /^broker\.caFile is for an https broker\.url or broker\.jwksUrl; http:\/\/broker\.example:8080 is plain HTTP$/]]],
    [
      'broker TLS files with a plain HTTP broker and JWKS URL',
      'broker:\n  url: http://b:8080\n  jwksUrl: http://b:8080/jwks\n  clientCertFile: c.crt\n  clientKeyFile: c.key\n',
      [[4, 3, /^broker\.clientCertFile is for an https broker\.url or broker\.jwksUrl; http:\/\/b:8080 and http:\/\/b:8080\/jwks are plain HTTP$/]],
    ],
    ['broker TLS files without a broker URL', 'broker:\n  verify: offline\n  publicKeyFile: k.pem\n  caFile: ca.crt\n', [[4, 3, /^broker\.caFile is for an https broker\.url or broker\.jwksUrl; neither is set$/]]],
    ['rotating standard output', `${KEYED}audit:\n  path: "-"\n  rotateBytes: 1000000\n`, [[6, 16, /rotateBytes needs a file path: standard output \("-"\) is not rotated$/]]],
    ['negative rotation size', `${KEYED}audit:\n  rotateBytes: -1\n  rotateKeep: 0\n`, [[5, 16, /^audit\.rotateBytes: /], [6, 15, /^audit\.rotateKeep: /]]],
    ['listen port above 65535', `${KEYED}proxy: { listen: "127.0.0.1:99999" }\n`, [[4, 18, /^proxy\.listen: the port must be at most 65535$/]]],
    ['listen port 0 (a free port)', `${KEYED}admin: { listen: "[::1]:0" }\n`, []],
    [
      'connectTo ports out of range',
      `${KEYED}upstream:\n  connectTo:\n    "a.example:70000": "127.0.0.1:1"\n    "b.example:80": "127.0.0.1:0"\n    "c.example:443": "[::1]:65536"\n    "d.example:65535": "[::1]:1"\n`,
      [
        [6, 5, /^upstream\.connectTo\["a\.example:70000"\]: invalid key: the port must be 1 to 65535$/],
        [7, 21, /^upstream\.connectTo\["b\.example:80"\]: the port must be 1 to 65535$/],
        [8, 22, /^upstream\.connectTo\["c\.example:443"\]: the port must be 1 to 65535$/],
      ],
    ],
    ['duration above 2^31-1 ms (seconds)', `${KEYED}shutdown: { grace: 1e9 }\n`, [[4, 20, /^shutdown\.grace: must be at most 2147483647ms \(about 24\.8 days\), the longest a timer can wait$/]]],
    ['duration above 2^31-1 ms (seconds, block)', `${KEYED}audit:\n  flushInterval: 100000000\n`, [[5, 18, /^audit\.flushInterval: must be at most 2147483647ms/]]],
    ['duration above 2^31-1 ms (hours)', `${KEYED}upstream: { connectTimeout: 600h }\n`, [[4, 29, /^upstream\.connectTimeout: must be at most 2147483647ms/]]],
    ['duration above 2^31-1 ms (milliseconds)', `${KEYED}proxy: { requestBodyTimeout: 2147483648ms }\n`, [[4, 30, /^proxy\.requestBodyTimeout: must be at most 2147483647ms/]]],
    ['longest duration', `${KEYED}proxy: { requestBodyTimeout: 2147483647ms }\nshutdown: { grace: 2147483.647 }\n`, []],
    ['a head timeout of 0 (no timeout at all)', `${KEYED}proxy: { headersTimeout: 0 }\n`, [[4, 26, /^proxy\.headersTimeout: must be at least 1s$/]]],
    ['not a duration, where one of at least 1s is expected', `${KEYED}proxy: { requestBodyTimeout: forever }\n`, [[4, 30, /^proxy\.requestBodyTimeout: expected a duration such as 500ms/]]],
  ];
  for (const [name, text, want] of cases) {
    const got = await problems(text);
    t.equal(got.length, want.length, `${name}: ${got.map((p) => `${p.line}:${p.col} ${p.message}`).join(' | ')}`);
    want.forEach(([line, col, re], i) => {
      t.match(got[i], { file: 'sidecar.yaml', line, col, message: re }, name);
    });
  }
});

t.test('every problem of a file is reported', async (t) => {
  const got = await problems('proxy:\n  listen: nope\n  extra: 1\nbroker:\n  timeout: forever\n  publicKeyFile: k.pem\naudit: { onFailure: maybe }\n');
  t.same(
    got.map((p) => `${p.line}:${p.col}`),
    ['2:11', '3:3', '5:12', '7:21'],
  );
});

t.test('AGENTWRIT_BROKER_URL replaces broker.url', async (t) => {
  const dir = t.testdir({
    'a.yaml': 'broker:\n  url: http://file.example:1\n',
    'b.yaml': 'proxy: {}\n',
    'c.yaml': '',
  });
  const env = { AGENTWRIT_BROKER_URL: 'http://127.0.0.1:8080' };
  t.equal((await loadSidecarConfig(resolve(dir, 'a.yaml'), env)).config.broker.url, 'http://127.0.0.1:8080');
  t.equal((await loadSidecarConfig(resolve(dir, 'a.yaml'), {})).config.broker.url, 'http://file.example:1');
  const b = await loadSidecarConfig(resolve(dir, 'b.yaml'), env);
  t.equal(b.config.broker.url, 'http://127.0.0.1:8080');
  t.equal(b.config.broker.verify, 'online');
  t.equal((await loadSidecarConfig(resolve(dir, 'c.yaml'), env)).config.broker.url, 'http://127.0.0.1:8080', 'empty file: all defaults');
  const bad = await loadSidecarConfig(resolve(dir, 'a.yaml'), { AGENTWRIT_BROKER_URL: 'ftp://user:hunter2@x' }).catch((e: ConfigError) => e);
  t.ok(bad instanceof ConfigError);
  t.match((bad as ConfigError).problems, [{ line: 1, col: 1, message: /AGENTWRIT_BROKER_URL is not a valid http\(s\) URL/ }]);
  t.notMatch((bad as ConfigError).message, /hunter2/, 'the value is not echoed');
});

t.test('verify defaults and path resolution', async (t) => {
  const dir = t.testdir({});
  const r = resolveSidecarConfig(
    {
      broker: { jwksUrl: 'http://127.0.0.1:8080/.well-known/jwks.json', url: 'http://127.0.0.1:8080' },
      policies: ['p', '/abs/q'],
      audit: { path: '-' },
      upstream: { caFile: 'ca/extra.pem' },
      tls: { caDir: 'tls', caCertOut: '../out/ca.crt', bundleOut: '/x/bundle.pem' },
    },
    dir,
    'mem.yaml',
    {},
  );
  t.equal(r.config.broker.verify, 'hybrid');
  t.same(r.config.policies, [resolve(dir, 'p'), '/abs/q']);
  t.equal(r.config.audit.path, '-');
  t.equal(r.config.upstream.caFile, resolve(dir, 'ca/extra.pem'));
  t.equal(r.config.tls.caDir, resolve(dir, 'tls'));
  t.equal(r.config.tls.caCertOut, resolve(dir, '../out/ca.crt'));
  t.equal(r.config.tls.bundleOut, '/x/bundle.pem');
  t.equal(r.config.broker.publicKeyFile, undefined);
  const keyed = resolveSidecarConfig({ broker: { publicKeyFile: 'k.pem', verify: 'offline' } }, dir, 'mem.yaml', {});
  t.equal(keyed.config.broker.verify, 'offline');
  t.equal(keyed.config.broker.publicKeyFile, resolve(dir, 'k.pem'));
  t.same(keyed.config.policies, [resolve(dir, 'policies')], 'default ./policies is relative to the config');
  t.equal(keyed.config.audit.path, resolve(dir, 'audit.jsonl'));
  t.throws(() => resolveSidecarConfig({ broker: { verify: 'offline' } }, dir, 'mem.yaml', {}), {
    name: 'ConfigError',
    message: /^mem\.yaml:1:1 broker\.verify offline needs a key source/,
  });
});

t.test('a missing config file is a ConfigError', async (t) => {
  const e = await loadSidecarConfig('/nonexistent/sidecar.yaml', {}).catch((err: unknown) => err);
  t.ok(e instanceof ConfigError);
  t.same((e as ConfigError).problems, [{ file: '/nonexistent/sidecar.yaml', line: 1, col: 1, message: 'no such file or directory' }]);
});

t.test('broker URLs: no user information; messages show them without it or their query', async (t) => {
  const userinfo = await problems('broker: { url: "http://svc:SECRET-pw@127.0.0.1:8080" }\n');
  t.match(userinfo, [{ line: 1, message: /broker\.url: a URL here cannot carry a user name or password/ }]);
  t.notMatch(JSON.stringify(userinfo), /SECRET-pw/);
  const query = await problems('broker: { url: "http://127.0.0.1:8080/?token=SECRET-q", caFile: ./ca.pem }\n');
  t.match(query, [{ message: /http:\/\/127\.0\.0\.1:8080 is plain HTTP$/ }]);
  t.notMatch(JSON.stringify(query), /SECRET-q/, 'the query is not echoed');
});
