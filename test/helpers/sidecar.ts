/** Starts a real sidecar in-process on loopback ports with a config and policies written to a temp dir. */
import { mkdirSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { loadSidecarConfig } from '../../src/config/load.js';
import { type SidecarHandle, startSidecar } from '../../src/server.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { tempDir } from './tmp.js';

export interface TestSidecar extends SidecarHandle {
  dir: string;
  logs: string[];
  auditPath: string;
  /** The proxy port's server, to count its open connections. */
  proxyServer: Server;
  openProxyConnections(): Promise<number>;
}

export const BILLING_POLICY = {
  version: 'v1',
  connectors: [{ name: 'billing-api', type: 'static', secret: { env: 'BILLING_API_KEY' }, header: 'Authorization', format: 'Bearer ${secret}' }],
  routes: [
    {
      id: 'billing-read',
      host: 'api.example.com',
      methods: ['GET'],
      path: '/customers/{customer}/billing',
      scopes: ['read:billing:customer-{customer}'],
      connector: 'billing-api',
    },
  ],
};

export async function startTestSidecar(opts: {
  upstreamPort: number;
  config?: Record<string, unknown>;
  broker?: Record<string, unknown>;
  policies?: Record<string, unknown>[];
  env?: NodeJS.ProcessEnv;
  dir?: string;
}): Promise<TestSidecar> {
  const dir = opts.dir ?? tempDir('aws-sidecar-');
  const policies = opts.policies ?? [BILLING_POLICY];
  const policyDir = join(dir, 'policies');
  mkdirSync(policyDir, { recursive: true });
  for (const [i, p] of policies.entries()) writeFileSync(join(policyDir, `policy-${i}.yaml`), stringify(p));
  const auditPath = join(dir, 'audit.jsonl');
  const defaults: Record<string, unknown> = {
    proxy: { listen: '127.0.0.1:0' },
    admin: { listen: '127.0.0.1:0' },
    broker: opts.broker ?? {},
    policies: [policyDir],
    audit: { path: auditPath, flushInterval: '5ms' },
    upstream: { connectTo: { 'api.example.com:80': `127.0.0.1:${opts.upstreamPort}` } },
    shutdown: { grace: '2s' },
  };
  // A section given in opts.config is merged into the default one (its keys win), so a test names
  // only what it changes: proxy.listen and upstream.connectTo stay unless replaced.
  const config: Record<string, unknown> = { ...defaults };
  for (const [k, v] of Object.entries(opts.config ?? {})) {
    const d = defaults[k];
    const plain = (x: unknown) => typeof x === 'object' && x !== null && !Array.isArray(x);
    config[k] = plain(d) && plain(v) ? { ...(d as object), ...(v as object) } : v;
  }
  const file = join(dir, 'sidecar.yaml');
  writeFileSync(file, stringify(config));
  // One entry per line: request lines reach the destination several to a write.
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(line);
      cb();
    },
  });
  const logger = createLogger('info', sink);
  const env = { ...process.env, BILLING_API_KEY: 'sk-live-billing-SECRET-123', ...opts.env };
  const loaded = await loadSidecarConfig(file, env);
  let proxyServer: Server | undefined;
  const handle = await startSidecar(loaded, {
    env,
    logger,
    processMetrics: false,
    onProxyServer: (s) => {
      proxyServer = s;
    },
  });
  const server = proxyServer as Server;
  const openProxyConnections = () => new Promise<number>((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
  return Object.assign(handle, { dir, logs, auditPath, proxyServer: server, openProxyConnections });
}
