/**
 * Real clients configured the way an agent container is: HTTPS_PROXY / HTTP_PROXY carrying the
 * token as proxy password, and each client's own CA variable pointing at what the sidecar wrote.
 * The upstream has its own CA and the name api.example.com (reached through upstream.connectTo),
 * so no client ever resolves or dials it directly. Each client makes four calls: an allowed and a
 * disallowed path, over https:// and over http://.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { SECRET, startHttpsFixture } from '../helpers/https-fixture.js';

const run = promisify(execFile);
const fx = await startHttpsFixture({
  // An AWS JSON API as an SDK calls it (POST /), at an endpoint the sidecar intercepts.
  extraRoutes: (up) => [{ id: 'aws-json', host: 'api.example.com', methods: ['POST'], path: '/', scopes: ['read:billing:customer-12345'], connector: 'billing-api', caFile: up.caFile }],
});
t.teardown(() => fx.close());
const token = await fx.token(['read:billing:customer-12345']);
const proxy = `http://agent:${token}@127.0.0.1:${fx.sc.proxyPort}`;
const PYTHON = '/usr/bin/python3';

const urls = (client: string) => [
  `https://api.example.com/customers/12345/billing?client=${client}`,
  `https://api.example.com/customers/99999/billing?client=${client}`,
  `http://api.example.com/customers/12345/billing?client=${client}-plain`,
  `http://api.example.com/customers/99999/billing?client=${client}-plain`,
];

/** A clean environment: nothing from ours (proxies, CA variables) leaks into the client. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: fx.dir, LANG: 'C.UTF-8', ...extra };
}

type Result = [number, string];

function check(t: Test, client: string, results: Result[]): void {
  t.same(
    results.map((r) => r[0]),
    [200, 403, 200, 403],
    `${client}: allowed, refused, allowed (http), refused (http)`,
  );
  t.equal(JSON.parse(results[1][1]).error_code, 'scope_violation');
  t.equal(JSON.parse(results[3][1]).error_code, 'scope_violation');
  const tls = fx.up.received.filter((r) => r.url.endsWith(`client=${client}`));
  const plain = fx.up.received.filter((r) => r.url.endsWith(`client=${client}-plain`));
  t.equal(tls.length, 1, 'one https call reached the upstream');
  t.equal(plain.length, 1, 'one http call reached the upstream');
  t.equal(tls[0]?.scheme, 'https');
  t.equal(plain[0]?.scheme, 'http');
  for (const seen of [...tls, ...plain]) {
    t.equal(seen.headers.authorization, `Bearer ${SECRET}`, 'credential injected');
    t.notOk(JSON.stringify(seen).includes(token), 'agent token never reaches the upstream');
  }
}

t.test('curl (https_proxy/http_proxy, CURL_CA_BUNDLE = the bundle)', async (t) => {
  const env = cleanEnv({ HTTPS_PROXY: proxy, http_proxy: proxy, CURL_CA_BUNDLE: fx.bundleFile });
  const results: Result[] = [];
  for (const url of urls('curl')) {
    const { stdout } = await run('curl', ['-sS', '-w', '\n%{http_code}', url], { env });
    const i = stdout.lastIndexOf('\n');
    results.push([Number(stdout.slice(i + 1)), stdout.slice(0, i)]);
  }
  check(t, 'curl', results);
});

const pythonScript = (lib: 'requests' | 'httpx') => `
import json, sys
import ${lib}
out = []
for url in sys.argv[1:]:
    r = ${lib}.get(url, timeout=10)
    out.append([r.status_code, r.text])
print(json.dumps(out))
`;

t.test('Python requests (HTTPS_PROXY/HTTP_PROXY, REQUESTS_CA_BUNDLE = the bundle)', async (t) => {
  const env = cleanEnv({ HTTPS_PROXY: proxy, HTTP_PROXY: proxy, REQUESTS_CA_BUNDLE: fx.bundleFile });
  const { stdout } = await run(PYTHON, ['-c', pythonScript('requests'), ...urls('requests')], { env });
  check(t, 'requests', JSON.parse(stdout));
});

t.test('Python httpx (HTTPS_PROXY/HTTP_PROXY, SSL_CERT_FILE = the bundle)', async (t) => {
  const env = cleanEnv({ HTTPS_PROXY: proxy, HTTP_PROXY: proxy, SSL_CERT_FILE: fx.bundleFile });
  const { stdout } = await run(PYTHON, ['-c', pythonScript('httpx'), ...urls('httpx')], { env });
  check(t, 'httpx', JSON.parse(stdout));
});

const nodeScript = `
import { EnvHttpProxyAgent, request, setGlobalDispatcher } from 'undici';
const agent = new EnvHttpProxyAgent();
const [mode, ...urls] = process.argv.slice(1);
const out = [];
if (mode === 'fetch') setGlobalDispatcher(agent);
for (const url of urls) {
  if (mode === 'fetch') {
    const r = await fetch(url);
    out.push([r.status, await r.text()]);
  } else {
    const r = await request(url, { dispatcher: agent });
    out.push([r.statusCode, await r.body.text()]);
  }
}
console.log(JSON.stringify(out));
await agent.close();
`;

t.test("Node: undici's EnvHttpProxyAgent (HTTPS_PROXY/HTTP_PROXY, NODE_EXTRA_CA_CERTS = the CA)", async (t) => {
  const env = cleanEnv({ HTTPS_PROXY: proxy, HTTP_PROXY: proxy, NODE_EXTRA_CA_CERTS: fx.caCertFile });
  const cwd = resolve('.');
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', nodeScript, 'request', ...urls('undici')], { env, cwd });
  check(t, 'undici', JSON.parse(stdout));
});

t.test("Node's built-in fetch with undici's EnvHttpProxyAgent as global dispatcher", async (t) => {
  const env = cleanEnv({ HTTPS_PROXY: proxy, HTTP_PROXY: proxy, NODE_EXTRA_CA_CERTS: fx.caCertFile });
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', nodeScript, 'fetch', ...urls('fetch')], { env, cwd: resolve('.') });
  check(t, 'fetch', JSON.parse(stdout));
});

/** Node's own clients, no undici import: built-in fetch, and node:http / node:https get. */
const builtinScript = `
const [mode, ...urls] = process.argv.slice(1);
const viaGet = (url) =>
  new Promise((resolve, reject) => {
    const lib = url.startsWith('https:') ? require('node:https') : require('node:http');
    lib.get(url, (r) => {
      let b = '';
      r.on('data', (c) => (b += c));
      r.on('end', () => resolve([r.statusCode, b]));
    }).on('error', reject);
  });
(async () => {
  const out = [];
  for (const url of urls) {
    try {
      if (mode === 'fetch') {
        const r = await fetch(url);
        out.push([r.status, await r.text()]);
      } else out.push(await viaGet(url));
    } catch (e) {
      out.push([0, String(e.cause?.code ?? e.code ?? e.message)]);
    }
  }
  console.log(JSON.stringify(out));
})();
`;

const NODE_MAJOR = Number(process.versions.node.split('.')[0]);

for (const mode of ['fetch', 'get'] as const) {
  const what = mode === 'fetch' ? "Node's built-in fetch" : 'node:http and node:https get';
  t.test(`${what} with NODE_USE_ENV_PROXY=1 (HTTPS_PROXY/HTTP_PROXY, NODE_EXTRA_CA_CERTS = the CA): Node ${NODE_MAJOR}`, async (t) => {
    const env = cleanEnv({ NODE_USE_ENV_PROXY: '1', HTTPS_PROXY: proxy, HTTP_PROXY: proxy, NODE_EXTRA_CA_CERTS: fx.caCertFile });
    const client = `builtin-${mode}`;
    const { stdout } = await run(process.execPath, ['-e', builtinScript, mode, ...urls(client)], { env });
    const results = JSON.parse(stdout) as Result[];
    // Node 24 and later read the variables; Node 20 does not; Node 22 gained them in a later minor
    // release, so there either outcome is accepted, each checked in full.
    const proxied = NODE_MAJOR >= 24 || (NODE_MAJOR > 20 && results.some((r) => r[0] !== 0));
    if (proxied) {
      check(t, client, results);
    } else {
      // Every call went direct, to a name that is not there.
      t.same(results.map((r) => r[0]), [0, 0, 0, 0], 'no call went through the sidecar');
      t.same(fx.up.received.filter((r) => r.url.includes(`client=${client}`)), [], 'nothing reached the upstream');
    }
  });
}

const botocoreScript = `
import json, sys
import botocore.session
from botocore.exceptions import ClientError
session = botocore.session.get_session()
out = []
for url in sys.argv[1:]:
    client = session.create_client('dynamodb', region_name='us-east-1', endpoint_url=url,
                                   aws_access_key_id='AKIDEXAMPLE', aws_secret_access_key='agent-side-dummy')
    try:
        r = client.list_tables()
        out.append([r['ResponseMetadata']['HTTPStatusCode'], ''])
    except ClientError as e:
        out.append([e.response['ResponseMetadata']['HTTPStatusCode'], json.dumps(e.response.get('Error', {}))])
print(json.dumps(out))
`;

t.test('AWS SDK for Python (botocore: HTTPS_PROXY, AWS_CA_BUNDLE = the bundle)', async (t) => {
  const env = cleanEnv({ HTTPS_PROXY: proxy, AWS_CA_BUNDLE: fx.bundleFile, AWS_EC2_METADATA_DISABLED: 'true' });
  const before = fx.up.received.length;
  const { stdout } = await run(PYTHON, ['-c', botocoreScript, 'https://api.example.com', 'https://api.example.com/not-routed/'], { env });
  const results = JSON.parse(stdout) as Result[];
  t.same(results.map((r) => r[0]), [200, 403], 'allowed through the intercepted tunnel; a path no route allows is refused');
  const seen = fx.up.received.slice(before);
  t.equal(seen.length, 1, 'only the allowed call reached the upstream');
  t.match(seen[0], { scheme: 'https', method: 'POST', url: '/' });
  t.equal(seen[0].headers['x-amz-target'], 'DynamoDB_20120810.ListTables', 'the SDK request arrives as sent');
  t.equal(seen[0].headers.authorization, `Bearer ${SECRET}`, 'the SDK signature is replaced by the injected credential');
  t.notOk(JSON.stringify(seen[0]).includes(token), 'agent token never reaches the upstream');
});

const goProgram = `package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	client := &http.Client{Timeout: 10 * time.Second}
	out := [][2]interface{}{}
	for _, url := range os.Args[1:] {
		r, err := client.Get(url)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		out = append(out, [2]interface{}{r.StatusCode, string(b)})
	}
	j, _ := json.Marshal(out)
	fmt.Println(string(j))
}
`;

t.test('Go net/http (HTTPS_PROXY/HTTP_PROXY, SSL_CERT_FILE = the bundle)', async (t) => {
  const dir = join(fx.dir, 'go');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'main.go'), goProgram);
  // The build cache is kept between runs: compiling is most of this test's time.
  const goCache = join(tmpdir(), 'agentwrit-sidecar-test-gocache');
  const env = cleanEnv({
    HTTPS_PROXY: proxy,
    HTTP_PROXY: proxy,
    SSL_CERT_FILE: fx.bundleFile,
    SSL_CERT_DIR: join(dir, 'no-certs'),
    GOCACHE: goCache,
    GOPATH: join(dir, 'gopath'),
    GO111MODULE: 'off',
    GOFLAGS: '',
    GOTOOLCHAIN: 'local',
  });
  const { stdout } = await run('go', ['run', join(dir, 'main.go'), ...urls('go')], { env, cwd: dir });
  check(t, 'go', JSON.parse(stdout));
});
