import { execFileSync } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import t from 'tap';
import { runPolicyCommand } from '../../src/cli/policy.js';
import { makeKey, signToken } from '../helpers/tokens.js';

const REPO = new URL('../..', import.meta.url).pathname;
const POLICIES = resolve(REPO, 'policies');
const EXAMPLE = resolve(REPO, 'examples/sidecar.yaml');

async function run(argv: string[], env: NodeJS.ProcessEnv = {}) {
  let out = '';
  let err = '';
  const code = await runPolicyCommand(argv, { out: (s) => (out += s), err: (s) => (err += s), env });
  return { code, out, err };
}

t.test('help and usage errors', async (t) => {
  const cases: Array<[string[], number, RegExp, 'out' | 'err']> = [
    [['--help'], 0, /Usage: agentwrit-sidecar policy <command>/, 'out'],
    [[], 2, /Usage: agentwrit-sidecar policy <command>/, 'err'],
    [['frobnicate'], 2, /unknown command "frobnicate"/, 'err'],
    [['check', '--help'], 0, /Usage: agentwrit-sidecar policy check PATH\.\.\./, 'out'],
    [['check'], 2, /no PATH given/, 'err'],
    [['check', POLICIES, '--strict'], 2, /unknown option --strict/, 'err'],
    [['check', '--strict', POLICIES], 2, /unknown option --strict/, 'err'],
    [['explain', '--help'], 0, /Usage: agentwrit-sidecar policy explain --config FILE/, 'out'],
    [['explain', 'GET', 'http://x/'], 2, /no configuration/, 'err'],
    [['explain', '--config', EXAMPLE, 'GET'], 2, /expected METHOD URL/, 'err'],
    [['explain', '--config', EXAMPLE, '--verbose', 'GET', 'http://x/'], 2, /unknown option --verbose/, 'err'],
    [['explain', '--config', EXAMPLE, '--token', 'a', '--token-file', 'b', 'GET', 'http://x/'], 2, /not both/, 'err'],
  ];
  for (const [argv, code, re, stream] of cases) {
    const r = await run(argv);
    t.equal(r.code, code, argv.join(' '));
    t.match(r[stream], re, argv.join(' '));
  }
});

t.test('check: the shipped policies and example configuration are valid', async (t) => {
  const p = await run(['check', POLICIES]);
  t.equal(p.code, 0);
  t.match(p.out, /^ok: 5 routes, 1 connector, 0 pass-through hosts, policy digest [0-9a-f]{64}\n$/);
  const c = await run(['check', EXAMPLE]);
  t.equal(c.code, 0, c.out);
  t.equal(c.out, `${EXAMPLE}: ${p.out}`, 'the config is detected and its policies compiled');
  const both = await run(['check', EXAMPLE, resolve(POLICIES, 'billing.yaml')]);
  t.equal(both.code, 0);
  t.match(both.out, /examples\/sidecar\.yaml: ok: 5 routes.*\nok: 1 route, 1 connector, /);
});

t.test('check: every problem as file:line:col message, exit 1', async (t) => {
  const dir = t.testdir({
    'sidecar.yaml': 'proxy: { listen: nowhere }\nbroker: { url: "http://127.0.0.1:1" }\npolicies: [ ./pol ]\n',
    pol: {
      'a.yaml': 'version: v1\nroutes:\n  - id: a\n    host: h\n    path: /a/{x}\n    scopes: ["read:a:{y}"]\n',
    },
    'loose.yaml': 'version: v1\nroutes:\n  - id: b\n    host: h\n    path: /b\n    scopes: ["read:b"]\n    connector: nope\n',
  });
  const r = await run(['check', resolve(dir, 'sidecar.yaml'), resolve(dir, 'loose.yaml'), resolve(dir, 'pol')]);
  t.equal(r.code, 1);
  t.equal(
    r.out,
    [
      `${resolve(dir, 'sidecar.yaml')}:1:18 proxy.listen: expected HOST:PORT, e.g. 127.0.0.1:15101`,
      `${resolve(dir, 'loose.yaml')}:6:14 route "b": scope "read:b" is not of the form action:resource:identifier (three non-empty parts)`,
      `${resolve(dir, 'loose.yaml')}:7:16 route "b": connector "nope" is not defined in any policy file`,
      `${resolve(dir, 'pol/a.yaml')}:6:14 route "a": scope "read:a:{y}": {y} is not a parameter of the route's path`,
      '',
    ].join('\n'),
  );
  t.equal(r.err, '4 problems found\n');
  const fixedConfig = t.testdir({
    'sidecar.yaml': 'broker: { url: "http://127.0.0.1:1" }\npolicies: [ ./pol ]\n',
    pol: { 'a.yaml': 'version: v1\nroutes:\n  - id: a\n    host: h\n    path: /a/{x}\n    scopes: ["read:a:{y}"]\n' },
  });
  const viaConfig = await run(['check', resolve(fixedConfig, 'sidecar.yaml')]);
  t.equal(viaConfig.code, 1);
  t.match(viaConfig.out, /pol\/a\.yaml:6:14 route "a": scope "read:a:\{y\}"/, "the config's policies are checked");
});

t.test('check: a connector format a header cannot carry is reported at the format', async (t) => {
  const dir = t.testdir({
    'p.yaml': 'version: v1\nconnectors:\n  - name: k\n    type: static\n    secret: { env: K }\n    format: "Bearer \u20ac\\n${secret}"\n',
  });
  const r = await run(['check', resolve(dir, 'p.yaml')]);
  t.equal(r.code, 1);
  t.equal(r.out, `${resolve(dir, 'p.yaml')}:6:13 connectors[0].format: format holds characters a header cannot carry (control characters, or beyond Latin-1)\n`);
  t.equal(r.err, '1 problem found\n');
});

t.test('explain', async (t) => {
  const key = await makeKey();
  const other = await makeKey();
  const dir = t.testdir({
    'pub.pem': key.publicPem,
    'sidecar.yaml': `broker:\n  verify: offline\n  publicKeyFile: ./pub.pem\npolicies: [ ${POLICIES}, ./extra ]\naudit: { path: "-" }\n`,
    extra: {
      'reverse.yaml':
        'version: v1\nroutes:\n  - id: items\n    mount: /billing\n    upstream: http://127.0.0.1:9000\n    path: /items/{item}\n    scopes: ["read:items:{item}"]\n',
    },
  });
  const config = resolve(dir, 'sidecar.yaml');
  const billing = 'http://api.example.com/customers/12345/billing';

  await t.test('without a token', async (t) => {
    const r = await run(['explain', '--config', config, 'get', billing]);
    t.equal(r.code, 0, r.err);
    t.match(r.out, new RegExp(`^route: +billing-read \\(${POLICIES}/billing\\.yaml:9:5\\)$`, 'm'));
    t.match(r.out, /^scopes: +read:billing:customer-12345$/m);
    t.match(r.out, /^connector: +billing-api$/m);
    const viaEnv = await run(['explain', 'GET', 'https://api.example.com/customers/42'], { AGENTWRIT_SIDECAR_CONFIG: config });
    t.equal(viaEnv.code, 0);
    t.match(viaEnv.out, /route: +customer-read .*\nscopes: +read:customers:customer-42/);
    const reverse = await run(['explain', '--config', config, 'GET', '/billing/items/7?x=1']);
    t.equal(reverse.code, 0);
    t.match(reverse.out, /route: +items .*\nscopes: +read:items:7\nconnector: +\(none\)/);
  });

  await t.test('no route, unknown mount, ambiguous request', async (t) => {
    const none = await run(['explain', '--config', config, 'DELETE', billing]);
    t.equal(none.code, 1);
    t.match(none.out, /route: +\(none\)\ndecision: +deny \(no_route\)\n +the path matches, but method DELETE is not allowed/);
    const mount = await run(['explain', '--config', config, 'GET', '/elsewhere/x']);
    t.equal(mount.code, 1);
    t.match(mount.out, /\/elsewhere\/x is under no mount \(mounts: \/billing\)/);
    const amb = await run(['explain', '--config', config, 'GET', 'http://api.example.com/customers/%2e%2e/billing']);
    t.equal(amb.code, 1);
    t.equal(amb.out, 'request refused before matching: ambiguous_request: dot segment in the path\n');
  });

  await t.test('with a token: allow, deny, invalid; the token is never printed', async (t) => {
    const good = await signToken(key, { scope: ['read:billing:customer-12345'] });
    const narrow = await signToken(key, { scope: ['read:billing:customer-99'] });
    const forged = await signToken(other, { scope: ['read:billing:customer-12345'] });
    const cases: Array<[string, number, RegExp]> = [
      [good, 0, /decision: +allow\n/],
      [narrow, 1, /decision: +deny \(scope_violation\)\n.*\n.*\n +the token's scopes do not cover read:billing:customer-12345/],
      [forged, 1, /decision: +deny \(token_invalid\)\n +token refused: /],
      ['not-a-jwt-secret-value', 1, /decision: +deny \(token_invalid\)/],
    ];
    for (const [token, code, re] of cases) {
      const r = await run(['explain', '--config', config, '--token', token, 'GET', billing]);
      t.equal(r.code, code);
      t.match(r.out, re);
      t.notOk(r.out.includes(token) || r.err.includes(token), 'token not printed');
      t.notOk(r.out.includes(token.split('.')[2] ?? token), 'signature not printed');
    }
    const file = resolve(dir, 'token.txt');
    const { writeFile } = await import('node:fs/promises');
    await writeFile(file, `${good}\n`);
    const viaFile = await run(['explain', '--config', config, '--token-file', file, 'GET', billing]);
    t.equal(viaFile.code, 0);
    t.match(viaFile.out, /token verified: sub spiffe:\/\/agentwrit\.local\/agent\/orch-1\/task-1\/0123456789abcdef, scopes read:billing:customer-12345/);
    const absent = await run(['explain', '--config', config, '--token-file', resolve(dir, 'no-such-token'), 'GET', billing]);
    t.equal(absent.code, 1);
    t.match(absent.err, /^policy explain: cannot read --token-file .*no-such-token: /, 'names the flag and the file');
  });

  await t.test('configuration problems', async (t) => {
    const bad = resolve(dir, 'missing.yaml');
    const r = await run(['explain', '--config', bad, 'GET', billing]);
    t.equal(r.code, 1);
    t.equal(r.err, `${bad}:1:1 no such file or directory\n`);
  });
});

t.test('check: a path that can be read only once (a pipe, <(...)) is read once', async (t) => {
  const dir = t.testdir({});
  const text = readFileSync(resolve(POLICIES, 'billing.yaml'), 'utf8');
  for (const [name, content, expected] of [
    ['policy.fifo', text, /^ok: 1 route/],
    ['config.fifo', `broker: { url: "http://127.0.0.1:8080" }\npolicies: [${JSON.stringify(POLICIES)}]\n`, /config\.fifo: ok: \d+ routes/],
  ] as const) {
    const fifo = resolve(dir, name);
    execFileSync('mkfifo', [fifo]);
    const writer = createWriteStream(fifo);
    writer.on('error', () => {});
    writer.end(content);
    const r = await run(['check', fifo]);
    t.equal(r.code, 0, `${name}: ${r.out}${r.err}`);
    t.match(r.out, expected);
  }
});

t.test('check: the route id "none" is reserved (the metrics label of requests no route matched)', async (t) => {
  const dir = t.testdir({ 'p.yaml': 'version: v1\nroutes:\n  - id: none\n    host: h\n    path: /a\n    scopes: ["read:a:b"]\n' });
  const r = await run(['check', resolve(dir, 'p.yaml')]);
  t.equal(r.code, 1);
  t.equal(r.out, `${resolve(dir, 'p.yaml')}:3:9 routes[0].id: route id "none" is reserved (it labels requests no route matched); choose another\n`);
});
