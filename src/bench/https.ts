/**
 * HTTPS egress benchmark (not a test): in one run, on loopback,
 *   - a direct HTTPS baseline against an intercepted request (CONNECT, TLS terminated by the
 *     sidecar, policy + credential + audit, TLS again to the upstream) over keep-alive at a fixed
 *     rate, and the extra p50/p99 latency interception costs;
 *   - the first request to a new host (new tunnel + leaf mint) against the first request over a
 *     new tunnel to a host already minted, and the mint time itself from the sidecar's metrics.
 * The sidecar runs as `serve` in a child pinned to CPU 1, the upstream in a child pinned to CPU 0.
 * Run alone: node dist/bench/https.js (BENCH_SECONDS, default 10).
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { SignJWT } from 'jose';
import { Pool, ProxyAgent, request } from 'undici';
import { stringify } from 'yaml';
import { generateEphemeralCa } from '../tls/ca.js';
import { LeafCache } from '../tls/leaf.js';
import { fixedRate, freePort, logPipe, pinned, quantile, scratch, waitLine, waitReady } from './load.js';

const here = new URL('.', import.meta.url).pathname;
const MAIN = resolve(here, '../cli/main.js');
const SELF = new URL(import.meta.url).pathname;
const RATE = 1000;
const NEW_HOSTS = 40;
const PATH = '/customers/12345/billing';

export interface HttpsBenchResult {
  seconds: number;
  rate: number;
  directP50: number;
  directP99: number;
  interceptedP50: number;
  interceptedP99: number;
  extraP50: number;
  extraP99: number;
  errors: { direct: number; intercepted: number };
  /** Signing + context set-up of the first leaf minted, a second after start (from the sidecar's metrics). */
  firstMintMs: number;
  /** Median and p90 mint time of the later new hosts. */
  laterNewHostMintMs?: number;
  laterNewHostMintP90Ms?: number;
  /** Median first request to a new host over a new tunnel (CONNECT + mint + handshakes + request). */
  newHostRequestMs: number;
  /** Median first request over a new tunnel to a host whose leaf is cached. */
  knownHostRequestMs: number;
}






async function mintMetrics(adminPort: number): Promise<{ sum: number; count: number }> {
  const r = await request(`http://127.0.0.1:${adminPort}/metrics`);
  const text = await r.body.text();
  const sum = /agentwrit_sidecar_leaf_mint_duration_seconds_sum (\S+)/.exec(text);
  const count = /agentwrit_sidecar_leaf_mint_duration_seconds_count (\S+)/.exec(text);
  return { sum: Number(sum?.[1] ?? 0) * 1000, count: Number(count?.[1] ?? 0) };
}

/** One request over a brand-new tunnel; returns its latency in ms. */
async function coldRequest(proxyUrl: string, token: string, ca: string, url: string): Promise<number> {
  const agent = new ProxyAgent({ uri: proxyUrl, token: `Bearer ${token}`, requestTls: { ca } });
  const t0 = performance.now();
  const r = await request(url, { dispatcher: agent });
  await r.body.dump();
  const ms = performance.now() - t0;
  await agent.close();
  if (r.statusCode !== 200) throw new Error(`${url}: ${r.statusCode}`);
  return ms;
}

export async function runHttpsBench(opts: { seconds: number }): Promise<HttpsBenchResult> {
  const work = scratch('agentwrit-bench-https-');
  const dir = work.dir;
  const upstreamCaFile = join(dir, 'upstream-ca.crt');
  const [ucmd, uargs] = pinned(0, [process.execPath, SELF, '--upstream', upstreamCaFile]);
  const upstream = work.spawn(ucmd, uargs, { stdio: ['ignore', 'pipe', 'inherit'] });
  const closers: (() => void)[] = [];
  try {
    const upPort = Number((await waitLine(upstream, (l) => /^\d+$/.test(l.trim()), 'upstream')).trim());
    const upstreamCa = readFileSync(upstreamCaFile, 'utf8');

    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    writeFileSync(join(dir, 'broker.pem'), publicKey.export({ type: 'spki', format: 'pem' }));
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ sub: 'spiffe://agentwrit.local/agent/bench/task/1', scope: ['read:billing:customer-12345', 'read:bench:*'], task_id: 't', orch_id: 'o', jti: randomBytes(16).toString('hex') })
      .setProtectedHeader({ alg: 'EdDSA', typ: 'JWT' })
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(now + 3600)
      .sign(privateKey);

    const connectTo: Record<string, string> = { 'api.example.com:443': `127.0.0.1:${upPort}` };
    for (let i = 0; i < NEW_HOSTS; i++) connectTo[`h${i}.bench.test:443`] = `127.0.0.1:${upPort}`;
    writeFileSync(
      join(dir, 'policy.yaml'),
      stringify({
        version: 'v1',
        connectors: [{ name: 'billing-api', type: 'static', secret: { env: 'BILLING_API_KEY' }, format: 'Bearer ${secret}' }],
        routes: [
          { id: 'billing-read', host: 'api.example.com', methods: ['GET'], path: '/customers/{customer}/billing', scopes: ['read:billing:customer-{customer}'], connector: 'billing-api', caFile: upstreamCaFile },
          { id: 'bench-hosts', host: '*.bench.test', methods: ['GET'], path: '/', scopes: ['read:bench:*'], connector: 'billing-api', caFile: upstreamCaFile },
        ],
      }),
    );
    const proxyPort = await freePort();
    const adminPort = await freePort();
    const caCertOut = join(dir, 'ca.crt');
    writeFileSync(
      join(dir, 'sidecar.yaml'),
      stringify({
        proxy: { listen: `127.0.0.1:${proxyPort}` },
        admin: { listen: `127.0.0.1:${adminPort}` },
        broker: { verify: 'offline', publicKeyFile: join(dir, 'broker.pem') },
        policies: [join(dir, 'policy.yaml')],
        audit: { path: join(dir, 'audit.jsonl') },
        upstream: { connectTo },
        tls: { caCertOut },
      }),
    );
    const [scmd, sargs] = pinned(1, [process.execPath, MAIN, 'serve', '--config', join(dir, 'sidecar.yaml')]);
    const log = await logPipe(dir); // the log, at the default level, down a pipe read elsewhere
    work.spawn(scmd, sargs, { stdio: ['ignore', log.fd, 'inherit'], env: { ...process.env, BILLING_API_KEY: 'bench-upstream-key' } });
    closers.push(log.close);
    await waitReady(adminPort);
    // Let start-up work (the leaf code warm-up) finish: this measures a sidecar in service.
    await new Promise((r) => setTimeout(r, 1000));
    const sidecarCa = readFileSync(caCertOut, 'utf8');
    const proxyUrl = `http://127.0.0.1:${proxyPort}`;

    // Leaf mint: new hosts one at a time (each mint read from the metrics), then the same hosts
    // again over new tunnels (cached leaves: no mint).
    const mints: number[] = [];
    const newHost: number[] = [];
    let before = await mintMetrics(adminPort);
    for (let i = 0; i < NEW_HOSTS; i++) {
      newHost.push(await coldRequest(proxyUrl, token, sidecarCa, `https://h${i}.bench.test/`));
      const after = await mintMetrics(adminPort);
      if (after.count !== before.count + 1) throw new Error(`expected one mint for h${i}, saw ${after.count - before.count}`);
      mints.push(after.sum - before.sum);
      before = after;
    }
    const knownHost: number[] = [];
    for (let i = 0; i < NEW_HOSTS; i++) knownHost.push(await coldRequest(proxyUrl, token, sidecarCa, `https://h${i}.bench.test/`));
    if ((await mintMetrics(adminPort)).count !== before.count) throw new Error('a cached host was minted again');
    const laterMints = mints.slice(1).sort((a, b) => a - b);
    newHost.sort((a, b) => a - b);
    knownHost.sort((a, b) => a - b);

    const direct = new Pool(`https://127.0.0.1:${upPort}`, { connections: 16, connect: { ca: upstreamCa, servername: 'api.example.com' } });
    const proxied = new ProxyAgent({ uri: proxyUrl, token: `Bearer ${token}`, requestTls: { ca: sidecarCa }, connections: 16 });
    const sendDirect = async () => {
      const r = await direct.request({ method: 'GET', path: PATH, headers: { host: 'api.example.com', authorization: 'Bearer bench-upstream-key' } });
      await r.body.dump();
      return r.statusCode;
    };
    const sendProxied = async () => {
      const r = await request(`https://api.example.com${PATH}`, { dispatcher: proxied });
      await r.body.dump();
      return r.statusCode;
    };
    const warm = Math.min(2, opts.seconds);
    const d = await fixedRate(sendDirect, RATE, opts.seconds, warm);
    const p = await fixedRate(sendProxied, RATE, opts.seconds, warm);
    await direct.close();
    await proxied.close();

    return {
      seconds: opts.seconds,
      rate: RATE,
      directP50: d.p50,
      directP99: d.p99,
      interceptedP50: p.p50,
      interceptedP99: p.p99,
      extraP50: p.p50 - d.p50,
      extraP99: p.p99 - d.p99,
      errors: { direct: d.errors, intercepted: p.errors },
      firstMintMs: mints[0],
      laterNewHostMintMs: laterMints.length > 0 ? quantile(laterMints, 0.5) : undefined,
      laterNewHostMintP90Ms: laterMints.length > 0 ? quantile(laterMints, 0.9) : undefined,
      newHostRequestMs: quantile(newHost, 0.5),
      knownHostRequestMs: quantile(knownHost, 0.5),
    };
  } finally {
    await work.stop(); // the log reader drains the sidecar's last lines, so it is closed after
    for (const close of closers) close();
  }
}

/** The upstream child: HTTPS with its own CA (written to caFile), one leaf per SNI name. */
async function serveUpstream(caFile: string): Promise<void> {
  const ca = await generateEphemeralCa();
  writeFileSync(caFile, ca.certPem);
  const leaves = new LeafCache(ca, { maxEntries: 100, validityMs: 3_600_000 });
  // Minted before the run, so that a new host's first request measures the sidecar, not this.
  for (const h of ['api.example.com', ...Array.from({ length: NEW_HOSTS }, (_, i) => `h${i}.bench.test`)]) await leaves.get(h);
  const body = Buffer.from('{"customer":"12345","balance":42.5,"currency":"USD"}');
  const server = createHttpsServer(
    {
      SNICallback: (name, cb) => {
        leaves.get(name).then(
          (ctx) => cb(null, ctx),
          (e: Error) => cb(e),
        );
      },
    },
    (req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
      res.end(body);
    },
  );
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as AddressInfo).port}\n`));
  process.on('SIGTERM', () => process.exit(0));
}

export function formatHttpsBench(r: HttpsBenchResult): string {
  const ms = (n: number | undefined) => (n === undefined ? 'n/a' : `${n.toFixed(3)} ms`);
  return [
    `HTTPS egress (${r.seconds}s per run at ${r.rate} req/s over keep-alive, sidecar on 1 core, loopback)`,
    `  p50            direct ${ms(r.directP50)}   intercepted ${ms(r.interceptedP50)}   extra ${ms(r.extraP50)}`,
    `  p99            direct ${ms(r.directP99)}   intercepted ${ms(r.interceptedP99)}   extra ${ms(r.extraP99)}   (errors: direct ${r.errors.direct}, intercepted ${r.errors.intercepted})`,
    `  leaf mint      first ${ms(r.firstMintMs)}   later new hosts p50 ${ms(r.laterNewHostMintMs)} p90 ${ms(r.laterNewHostMintP90Ms)}`,
    `  new tunnel     first request to a new host ${ms(r.newHostRequestMs)}   to a cached host ${ms(r.knownHostRequestMs)}   (medians)`,
    '',
  ].join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  if (process.argv[2] === '--upstream') {
    await serveUpstream(process.argv[3]);
  } else {
    const result = await runHttpsBench({ seconds: Number(process.env.BENCH_SECONDS ?? 10) });
    process.stdout.write(`\n${formatHttpsBench(result)}`);
  }
}
