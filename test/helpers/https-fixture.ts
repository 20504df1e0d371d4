/**
 * A sidecar set up for HTTPS egress tests: offline verification with a key on disk, echo upstreams
 * (HTTPS with their own CA, and plain HTTP) reached through upstream.connectTo under real-looking
 * names, and the interception CA written where agents would read it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { ProxyAgent, WebSocket } from 'undici';
import { type EchoUpstreams, startEchoUpstreams } from './https-upstream.js';
import { startTestSidecar, type TestSidecar } from './sidecar.js';
import { makeKey, signToken, type TestKey } from './tokens.js';
import { tempDir } from './tmp.js';

export const SECRET = 'sk-live-billing-SECRET-123';
export const ALL_SCOPES = ['read:billing:customer-12345', 'read:chat:lobby', 'read:any:*', 'read:many:*', 'tunnel:pass:any'];

export interface HttpsFixture {
  sc: TestSidecar;
  up: EchoUpstreams;
  key: TestKey;
  dir: string;
  /** The sidecar's CA certificate and the system-plus-sidecar bundle, as written for agents. */
  caCertFile: string;
  bundleFile: string;
  caPem: string;
  token(scopes?: string[]): Promise<string>;
  audit(): Promise<Array<Record<string, unknown>>>;
  metrics(): Promise<string>;
  close(): Promise<void>;
}

type Routes = Record<string, unknown>[];

export async function startHttpsFixture(
  opts: {
    tls?: Record<string, unknown>;
    broker?: Record<string, unknown>;
    upstream?: Record<string, unknown>;
    extraRoutes?: Routes | ((up: EchoUpstreams) => Routes);
  } = {},
): Promise<HttpsFixture> {
  const dir = tempDir('aws-https-');
  const up = await startEchoUpstreams(dir);
  const key = await makeKey();
  const keyFile = join(dir, 'broker.pem');
  writeFileSync(keyFile, key.publicPem);
  const caCertFile = join(dir, 'out', 'ca.crt');
  const bundleFile = join(dir, 'out', 'ca-bundle.crt');
  const billing = { connector: 'billing-api', caFile: up.caFile };
  const sc = await startTestSidecar({
    upstreamPort: up.httpPort,
    dir,
    broker: { verify: 'offline', publicKeyFile: keyFile, ...opts.broker },
    policies: [
      {
        version: 'v1',
        connectors: [{ name: 'billing-api', type: 'static', secret: { env: 'BILLING_API_KEY' }, header: 'Authorization', format: 'Bearer ${secret}' }],
        routes: [
          { id: 'billing-read', host: 'api.example.com', methods: ['GET'], path: '/customers/{customer}/billing', scopes: ['read:billing:customer-{customer}'], ...billing },
          { id: 'chat', host: 'api.example.com', methods: ['GET'], path: '/ws/{room}', scopes: ['read:chat:{room}'], ...billing },
          { id: 'chat-refused', host: 'api.example.com', methods: ['GET'], path: '/ws-refuse', scopes: ['read:chat:lobby'], ...billing },
          { id: 'chat-rev', mount: '/chat', upstream: 'https://api.example.com', methods: ['GET'], path: '/ws/{room}', scopes: ['read:chat:{room}'], ...billing },
          { id: 'chat-rev-plain', mount: '/chat-plain', upstream: 'http://api.example.com', methods: ['GET'], path: '/ws/{room}', scopes: ['read:chat:{room}'], connector: 'billing-api' },
          { id: 'untrusted', host: 'untrusted.example.com', methods: ['GET'], path: '/{rest*}', scopes: ['read:any:*'] },
          { id: 'many', host: '*.many.test', methods: ['GET'], path: '/', scopes: ['read:many:*'] },
          ...(typeof opts.extraRoutes === 'function' ? opts.extraRoutes(up) : (opts.extraRoutes ?? [])),
        ],
        passThrough: [{ host: 'pass.example.com', port: 443, scopes: ['tunnel:pass:any'] }],
      },
    ],
    config: {
      upstream: {
        connectTo: {
          'api.example.com:443': `127.0.0.1:${up.httpsPort}`,
          'api.example.com:80': `127.0.0.1:${up.httpPort}`,
          'untrusted.example.com:443': `127.0.0.1:${up.httpsPort}`,
          'pass.example.com:443': `127.0.0.1:${up.httpsPort}`,
        },
        ...opts.upstream,
      },
      tls: { caCertOut: caCertFile, bundleOut: bundleFile, connectPorts: [443, 80], tunnelIdleTimeout: '3s', leafCacheSize: 64, ...opts.tls },
    },
  });
  return {
    sc,
    up,
    key,
    dir,
    caCertFile,
    bundleFile,
    caPem: readFileSync(caCertFile, 'utf8'),
    token: (scopes = ALL_SCOPES) => signToken(key, { scope: scopes }),
    async audit() {
      await sc.runtime.audit.flush();
      return readFileSync(sc.auditPath, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    async metrics() {
      const r = await fetch(`${sc.adminUrl}/metrics`);
      return r.text();
    },
    async close() {
      await sc.close();
      await up.close();
    },
  };
}

export interface RawAnswer {
  status: number;
  head: string;
  body: string;
  socket: Socket;
}

/** Sends `request` on a fresh connection to the proxy and reads the answer head (and, when the server closes, the body). */
export function rawRequest(port: number, request: string, opts: { untilClose?: boolean } = {}): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(request));
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = () => {
      if (done) return;
      const text = buf.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return reject(new Error(`no response head: ${JSON.stringify(text)}`));
      done = true;
      socket.off('data', onData);
      const head = text.slice(0, end);
      resolve({ status: Number(head.split(' ')[1]), head, body: text.slice(end + 4), socket });
    };
    const onData = (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (!opts.untilClose && buf.includes('\r\n\r\n')) {
        const rest = buf.subarray(buf.indexOf('\r\n\r\n') + 4);
        buf = buf.subarray(0, buf.indexOf('\r\n\r\n') + 4);
        finish();
        if (rest.length > 0) socket.unshift(rest);
      }
    };
    socket.on('data', onData);
    socket.on('error', (e) => (done ? undefined : reject(e)));
    socket.on('close', finish);
  });
}

export function connectRequest(target: string, token?: string, extra = ''): string {
  const auth = token ? `Proxy-Authorization: Bearer ${token}\r\n` : '';
  return `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${auth}${extra}\r\n`;
}

/** Resolves once `pred` holds, polling briefly; rejects after `ms`. */
export async function eventually(pred: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A wss:// WebSocket to api.example.com through the fixture's sidecar (intercepted), open; closed at teardown. */
export async function openWss(t: { teardown(fn: () => unknown): void }, fx: HttpsFixture, token: string, path = '/ws/lobby'): Promise<WebSocket> {
  const agent = new ProxyAgent({ uri: fx.sc.proxyUrl, token: `Bearer ${token}`, requestTls: { ca: fx.caPem } });
  t.teardown(() => agent.close());
  const ws = new WebSocket(`wss://api.example.com${path}`, { dispatcher: agent });
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  return ws;
}
