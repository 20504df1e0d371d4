/**
 * The chart's output is a configuration the real binary accepts: config.yaml and the policies are
 * taken from a rendered ConfigMap, only paths and ports are rewritten for loopback, and
 * `node dist/cli/main.js serve` runs with them next to the development broker and a local upstream,
 * with the pod's volumes laid out as the kubelet lays them out. One allowed and one refused request
 * go through it; then a policy ConfigMap update and a Secret rotation are picked up without a restart.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { parse as parseYaml, stringify } from 'yaml';
import { startBroker } from '../../src/broker/index.js';
import { agentToken } from './lib/agent-token.js';
import { CI_VALUES_DIR, findHelm, Helm, type K8sObject, parseManifests, REPO_ROOT } from './lib/helm.js';
import { writeVolume } from './lib/kubelet-volume.js';
import { podTemplateOf, sidecarOf } from './lib/pod.js';

const CLI = join(REPO_ROOT, 'dist', 'cli', 'main.js');
const POD_PREFIXES = ['/etc/agentwrit-sidecar', '/var/run/agentwrit', '/var/lib/agentwrit-sidecar'];
const BILLING_SECRET = 'billing-SENTINEL-7c1e0f9a42';
const ROTATED_SECRET = 'billing-ROTATED-3b8d5e6f10';
const ADMIN_SECRET = 'chart-boot-admin-secret-1234';

type Json = Record<string, unknown>;

/** Rewrites every pod path under root, recursively through the config or policy document. */
function rehome<T>(node: T, root: string): T {
  if (typeof node === 'string') return (POD_PREFIXES.some((p) => node.startsWith(`${p}/`) || node === p) ? join(root, node) : node) as T;
  if (Array.isArray(node)) return node.map((n) => rehome(n, root)) as T;
  if (node && typeof node === 'object') return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, rehome(v, root)])) as T;
  return node;
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function viaProxy(proxyPort: number, url: string, token: string): Promise<Reply> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: proxyPort, method: 'GET', path: url, headers: { host: u.host, 'proxy-authorization': `Bearer ${token}` } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms: number): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface Rendered {
  config: Json;
  policies: Record<string, string>;
  objs: K8sObject[];
}

function render(t: Test, helm: Helm, set: string[] = []): Rendered {
  const r = helm.template({ valuesFiles: [join(CI_VALUES_DIR, 'standalone-values.yaml')], kubeVersion: '1.30.0', set });
  t.equal(r.status, 0, 'chart renders', { stderr: r.stderr });
  const objs = parseManifests(r.stdout);
  const cmData = (suffix: string) => (objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name.endsWith(suffix))?.data ?? {}) as Record<string, string>;
  return { config: parseYaml(cmData('-config')['config.yaml']) as Json, policies: cmData('-policies'), objs };
}

interface Pod {
  configFile: string;
  proxyPort: number;
  adminPort: number;
  policies: Record<string, string>;
}

/**
 * Writes the pod's files under root as the kubelet would mount them. Only paths and ports of the
 * rendered config change (plus connectTo, so governed hosts resolve to the loopback upstream).
 */
async function layOut(root: string, rendered: Rendered, brokerUrl: string, brokerPem: string, upstreamPort: number): Promise<Pod> {
  const [proxyPort, adminPort] = [await freePort(), await freePort()];
  const config = rehome(rendered.config, root) as Json & { broker: Json; upstream?: Json; proxy: Json };
  config.proxy.listen = `127.0.0.1:${proxyPort}`;
  config.admin = { listen: `127.0.0.1:${adminPort}` };
  config.broker.url = brokerUrl;
  const connectTo: Record<string, string> = {};
  for (const text of Object.values(rendered.policies)) {
    for (const r of (parseYaml(text) as { routes?: { host?: string }[] }).routes ?? []) if (r.host) connectTo[`${r.host}:80`] = `127.0.0.1:${upstreamPort}`;
  }
  config.upstream = { ...config.upstream, connectTo };
  const configFile = join(root, '/etc/agentwrit-sidecar/config.yaml');
  mkdirSync(join(root, '/etc/agentwrit-sidecar'), { recursive: true });
  writeFileSync(configFile, stringify(config));
  const policies = Object.fromEntries(Object.entries(rendered.policies).map(([k, v]) => [k, stringify(rehome(parseYaml(v), root))]));
  writeVolume(join(root, '/etc/agentwrit-sidecar/policies'), policies);
  writeVolume(join(root, '/etc/agentwrit-sidecar/broker'), { 'broker-public.pem': brokerPem });
  writeVolume(join(root, '/var/run/agentwrit/secrets/billing-api'), { 'api-key': BILLING_SECRET }, 0o440);
  writeVolume(join(root, '/var/run/agentwrit/secrets/weather'), { key: 'weather-key' }, 0o440);
  for (const d of ['/var/run/agentwrit/ca', '/var/lib/agentwrit-sidecar/audit', '/tmp']) mkdirSync(join(root, d), { recursive: true });
  return { configFile, proxyPort, adminPort, policies };
}

function serve(t: Test, root: string, pod: Pod) {
  const output: string[] = [];
  const child = spawn(process.execPath, [CLI, 'serve', '--config', pod.configFile], {
    cwd: root,
    env: { PATH: process.env.PATH, NODE_ENV: 'production', HOME: join(root, 'tmp'), TMPDIR: join(root, 'tmp') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (c: Buffer) => output.push(c.toString()));
  child.stderr.on('data', (c: Buffer) => output.push(c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const ready = until(
    '/readyz',
    async () => {
      if (child.exitCode !== null) throw new Error('exited');
      const r = await fetch(`http://127.0.0.1:${pod.adminPort}/readyz`);
      return r.status === 200 ? true : undefined;
    },
    20_000,
  ).catch((err: Error) => err);
  return { child, output, exited, ready };
}

const found = findHelm();
if ('error' in found) {
  t.fail(found.error);
} else if (!existsSync(CLI)) {
  t.fail(`${CLI} is missing: run "npm run build" first (npm test does)`);
} else {
  const helm = new Helm(found.path);
  const upstreamSeen: IncomingHttpHeaders[] = [];
  const upstream = createServer((req, res) => {
    upstreamSeen.push(req.headers);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ path: req.url }));
  });
  const roots: string[] = [];
  const newRoot = () => {
    roots.push(mkdtempSync(join(tmpdir(), 'aw-boot-')));
    return roots[roots.length - 1];
  };
  t.teardown(() => {
    helm.dispose();
    upstream.close();
    upstream.closeAllConnections();
    for (const r of roots) rmSync(r, { recursive: true, force: true });
  });
  t.before(() => new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve)));

  t.test('the rendered config and policies boot the real sidecar', async (t) => {
    const rendered = render(t, helm);
    t.ok(Object.keys(rendered.policies).length >= 2, 'policies rendered');
    const broker = await startBroker({ listen: '127.0.0.1:0', adminSecret: ADMIN_SECRET });
    t.teardown(() => broker.close());
    const root = newRoot();
    const pod = await layOut(root, rendered, broker.url, broker.publicKeyPem, (upstream.address() as AddressInfo).port);
    const { proxyPort, adminPort, policies } = pod;
    const { child, output, exited, ready: readyP } = serve(t, root, pod);
    const ready = await readyP;
    if (ready !== true) {
      t.fail(`sidecar did not become ready: ${ready.message}`, { output: output.join('') });
      return;
    }
    t.pass('sidecar is ready on the rendered configuration');

    const token = await agentToken(broker.url, ADMIN_SECRET, ['read:billing:customer-42']);
    const allowed = await viaProxy(proxyPort, 'http://api.billing.example.com/customers/42/billing', token);
    t.equal(allowed.status, 200, 'allowed request forwarded', { body: allowed.body });
    t.equal(upstreamSeen.length, 1, 'upstream reached once');
    t.equal(upstreamSeen[0]?.authorization, `Bearer ${BILLING_SECRET}`, 'credential from the mounted Secret injected');
    t.notOk(JSON.stringify(upstreamSeen[0]).includes(token), "agent's token not forwarded");

    const refused = await viaProxy(proxyPort, 'http://api.billing.example.com/customers/43/billing', token);
    t.equal(refused.status, 403, 'request outside the token scope refused');
    t.match(refused.headers['content-type'], /application\/problem\+json/);
    t.equal((JSON.parse(refused.body) as { error_code: string }).error_code, 'scope_violation');
    t.equal(upstreamSeen.length, 1, 'refused request never reached the upstream');

    await t.test('policy ConfigMap update is hot-reloaded', async (t) => {
      const widened = Object.fromEntries(Object.entries(policies).map(([k, v]) => [k, v.replace('read:billing:customer-{customer}', 'read:billing:*')]));
      writeVolume(join(root, '/etc/agentwrit-sidecar/policies'), widened);
      const token43 = await agentToken(broker.url, ADMIN_SECRET, ['read:billing:*']);
      const r = await until('reload', async () => ((await viaProxy(proxyPort, 'http://api.billing.example.com/customers/43/billing', token43)).status === 200 ? true : undefined), 10_000).catch(
        (e: Error) => e,
      );
      t.equal(r, true, 'the wider policy takes effect without a restart');
      t.equal(child.exitCode, null, 'same process');
    });

    await t.test('Secret rotation is picked up from the mounted file', async (t) => {
      writeVolume(join(root, '/var/run/agentwrit/secrets/billing-api'), { 'api-key': ROTATED_SECRET }, 0o440);
      // The widened policy is in force by now: a token for any customer.
      const anyCustomer = await agentToken(broker.url, ADMIN_SECRET, ['read:billing:*']);
      const r = await until(
        'rotation',
        async () => {
          await viaProxy(proxyPort, 'http://api.billing.example.com/customers/42/billing', anyCustomer);
          return upstreamSeen.at(-1)?.authorization === `Bearer ${ROTATED_SECRET}` ? true : undefined;
        },
        10_000,
      ).catch((e: Error) => e);
      t.equal(r, true, 'the rotated credential is injected');
    });

    await t.test('CA certificate and bundle are written where the agent reads them', async (t) => {
      const caDir = join(root, '/var/run/agentwrit/ca');
      t.ok(existsSync(join(caDir, 'ca.crt')), 'ca.crt written to the shared volume');
      t.ok(existsSync(join(caDir, 'ca-bundle.crt')), 'ca-bundle.crt written to the shared volume');
      if (existsSync(join(caDir, 'ca-bundle.crt'))) t.notMatch(readFileSync(join(caDir, 'ca-bundle.crt'), 'utf8'), /PRIVATE KEY/, 'no key in the bundle');
    });

    const metrics = await fetch(`http://127.0.0.1:${adminPort}/metrics`);
    t.equal(metrics.status, 200, '/metrics served on the admin port');

    child.kill('SIGTERM');
    t.equal(await exited, 0, 'SIGTERM: clean exit');
    const audit = readFileSync(join(root, '/var/lib/agentwrit-sidecar/audit/audit.jsonl'), 'utf8');
    t.match(audit, /scope_violation/, 'audit log written at the rendered path');
    const everything = output.join('') + audit;
    for (const s of [BILLING_SECRET, ROTATED_SECRET, token]) t.notOk(everything.includes(s), 'no secret or token in logs or audit');
  });

  t.test('a CA from an existing Secret (cert-manager key names) is the CA the sidecar uses', async (t) => {
    const rendered = render(t, helm, ['ca.existingSecret.name=interception-ca', 'ca.existingSecret.certKey=tls.crt', 'ca.existingSecret.keyKey=tls.key']);
    const caDir = join(newRoot(), 'made');
    const init = spawnSync(process.execPath, [CLI, 'ca', 'init', '--out', caDir], { encoding: 'utf8' });
    t.equal(init.status, 0, 'agentwrit-sidecar ca init', { stderr: init.stderr });
    // The Secret as cert-manager writes it, projected through the chart's items.
    const secretData: Record<string, string> = { 'tls.crt': readFileSync(join(caDir, 'ca.crt'), 'utf8'), 'tls.key': readFileSync(join(caDir, 'ca.key'), 'utf8') };
    const deployment = rendered.objs.find((o) => o.kind === 'Deployment')!;
    const volume = podTemplateOf(deployment).spec.volumes?.find((v) => v.name === 'agentwrit-ca');
    const mount = sidecarOf(podTemplateOf(deployment).spec)?.container.volumeMounts?.find((m) => m.name === 'agentwrit-ca');
    t.equal(volume?.secret?.secretName, 'interception-ca', 'CA Secret mounted by name');
    if (!volume?.secret?.items || !mount) return;
    const root = newRoot();
    writeVolume(join(root, mount.mountPath), Object.fromEntries(volume.secret.items.map((i) => [i.path, secretData[i.key]])), 0o440);
    t.equal((rendered.config.tls as Json).caDir, mount.mountPath, 'config.yaml points tls.caDir at the mount');

    const broker = await startBroker({ listen: '127.0.0.1:0', adminSecret: ADMIN_SECRET });
    t.teardown(() => broker.close());
    const pod = await layOut(root, rendered, broker.url, broker.publicKeyPem, (upstream.address() as AddressInfo).port);
    const { child, output, exited, ready } = serve(t, root, pod);
    t.equal(await ready, true, 'sidecar is ready with the mounted CA', { output: output.join('') });
    const written = join(root, '/var/run/agentwrit/ca/ca.crt');
    t.equal(existsSync(written) && readFileSync(written, 'utf8').trim(), secretData['tls.crt'].trim(), 'the agent gets the certificate of the mounted CA');
    child.kill('SIGTERM');
    t.equal(await exited, 0, 'SIGTERM: clean exit');
    t.notOk(output.join('').includes('PRIVATE KEY'), 'the CA key is never logged');
  });
}
