/**
 * `agentwrit-sidecar dev` (what `npm start` runs): the embedded default on loopback — the
 * development broker, the sidecar in hybrid mode verifying against it, the shipped policies and a
 * sample upstream standing in for api.example.com. Prints a walkthrough; Ctrl-C stops everything.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startBroker } from '../broker/index.js';
import { resolveSidecarConfig } from '../config/load.js';
import { ConfigError } from '../errors.js';
import { startSidecar } from '../server.js';
import { startSampleUpstream } from '../dev/sample-upstream.js';
import { flagString, noArgsProblem, type ParsedArgs, parseArgs } from './args.js';
import { survivesClosedOutput } from './output.js';

export const DEV_HELP = `Usage: agentwrit-sidecar dev [options]

Starts the embedded default on loopback, for trying the sidecar without any outside service:
  - a development AgentWrit-compatible broker (not a production broker),
  - the sidecar in hybrid verification mode, using the shipped policies/,
  - a sample API standing in for api.example.com (it shows the credential it received).

Options:
  --broker-port N     default 8080
  --proxy-port N      default 15101
  --admin-port N      default 15100
  --upstream-port N   default 9000
  --policies DIR      default: the shipped policies/ directory
  --dir DIR           where keys, audit logs and state go, kept after stop (default: a new
                      temporary directory, removed on stop)
  --admin-secret S    broker admin secret (default: env AGENTWRIT_ADMIN_SECRET or "dev-admin-secret")
  --quiet             do not print request logs
`;

const DEV_OPTIONS = {
  values: ['broker-port', 'proxy-port', 'admin-port', 'upstream-port', 'policies', 'dir', 'admin-secret'],
  booleans: ['quiet'],
};

export interface DevEnvironment {
  brokerUrl: string;
  proxyUrl: string;
  adminUrl: string;
  upstreamPort: number;
  adminSecret: string;
  dir: string;
  /** True when `dir` is a temporary directory of this run's own, removed by close(). */
  dirIsTemporary: boolean;
  auditPath: string;
  brokerStatePath: string;
  close(): Promise<void>;
}

function port(args: ReturnType<typeof parseArgs>, name: string, dflt: number): number {
  const v = flagString(args, name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`--${name} must be a port number, got "${v}"`);
  return n;
}

function portsOf(args: ParsedArgs) {
  return {
    upstream: port(args, 'upstream-port', 9000),
    broker: port(args, 'broker-port', 8080),
    proxy: port(args, 'proxy-port', 15101),
    admin: port(args, 'admin-port', 15100),
  };
}

/** Starts the three services; used by `dev`, `demo` and tests. */
export async function startDevEnvironment(argv: string[], opts: { logLevel?: string } = {}): Promise<DevEnvironment> {
  const args = parseArgs(argv, DEV_OPTIONS);
  const problem = noArgsProblem(args);
  if (problem !== undefined) {
    throw new Error(`${problem} (see --help)`);
  }
  // Every value is checked before anything starts.
  const ports = portsOf(args);
  const given = flagString(args, 'dir');
  const dir = given === undefined ? mkdtempSync(join(tmpdir(), 'agentwrit-dev-')) : resolve(given);
  mkdirSync(dir, { recursive: true });
  // A temporary directory holds the broker's signing key and the logs of this run only: removed on
  // close, and at the latest when the process exits (an error, a closed output).
  const removeTemporary = () => {
    process.off('exit', removeTemporary);
    if (given === undefined) rmSync(dir, { recursive: true, force: true });
  };
  if (given === undefined) process.on('exit', removeTemporary);
  const adminSecret = flagString(args, 'admin-secret') ?? process.env.AGENTWRIT_ADMIN_SECRET ?? 'dev-admin-secret';
  const policies = resolve(flagString(args, 'policies') ?? new URL('../../policies', import.meta.url).pathname);
  const upstreamPort = ports.upstream;
  const brokerStatePath = join(dir, 'broker-state.json');

  let upstream: Awaited<ReturnType<typeof startSampleUpstream>>;
  try {
    upstream = await startSampleUpstream('127.0.0.1', upstreamPort);
  } catch (err) {
    removeTemporary();
    throw err;
  }
  let broker: Awaited<ReturnType<typeof startBroker>>;
  try {
    broker = await startBroker({
      listen: `127.0.0.1:${ports.broker}`,
      signingKeyFile: join(dir, 'broker-signing.key'),
      publicKeyOut: join(dir, 'broker-public.pem'),
      adminSecret,
      stateFile: brokerStatePath,
    });
  } catch (err) {
    await upstream.close();
    removeTemporary();
    throw err;
  }
  // The demo's upstream credential: made up here, handed to the sidecar the way a Secret would be.
  const env = { ...process.env, BILLING_API_KEY: process.env.BILLING_API_KEY ?? 'demo-billing-key-not-a-real-secret' };
  const auditPath = join(dir, 'sidecar-audit.jsonl');
  try {
    const loaded = resolveSidecarConfig(
      {
        proxy: { listen: `127.0.0.1:${ports.proxy}` },
        admin: { listen: `127.0.0.1:${ports.admin}` },
        broker: { url: broker.url, verify: 'hybrid', publicKeyFile: join(dir, 'broker-public.pem'), revalidateAfter: '2s' },
        policies: [policies],
        audit: { path: auditPath },
        upstream: { connectTo: { 'api.example.com:80': `127.0.0.1:${upstream.port}` } },
        log: { level: opts.logLevel ?? (args.flags.has('quiet') ? 'warn' : 'info') },
        shutdown: { grace: '3s' },
      },
      dir,
      '(dev defaults)',
      env,
    );
    const sidecar = await startSidecar(loaded, { env });
    return {
      brokerUrl: broker.url,
      proxyUrl: sidecar.proxyUrl,
      adminUrl: sidecar.adminUrl,
      upstreamPort: upstream.port,
      adminSecret,
      dir,
      dirIsTemporary: given === undefined,
      auditPath,
      brokerStatePath,
      close: async () => {
        try {
          await sidecar.close();
          await broker.close();
          await upstream.close();
        } finally {
          removeTemporary();
        }
      },
    };
  } catch (err) {
    await broker.close();
    await upstream.close();
    removeTemporary();
    throw err;
  }
}

function walkthrough(e: DevEnvironment): string {
  const proxyHost = e.proxyUrl.replace('http://', '');
  return `
agentwrit-sidecar embedded default is running (development only)
  broker    ${e.brokerUrl}   (development AgentWrit-compatible broker, admin secret "${e.adminSecret}")
  sidecar   ${e.proxyUrl}   proxy     |  ${e.adminUrl}  admin (/metrics /healthz /readyz, POST /reload)
  upstream  api.example.com -> 127.0.0.1:${e.upstreamPort}   (sample API; shows the credential it received)
  files     ${e.dir}${e.dirIsTemporary ? '   (removed on stop; --dir DIR keeps them)' : ''}

1. Get an agent token for customer 12345 (admin auth, launch token, challenge, signed registration):

   TOKEN=$(npx agentwrit-sidecar token --broker ${e.brokerUrl} --admin-secret ${e.adminSecret} \\
             --scope read:billing:customer-12345)

2. Call the API through the sidecar, the way an agent with HTTP_PROXY does
   (curl reads only the lower-case http_proxy for plain http):

   http_proxy=http://agent:$TOKEN@${proxyHost} curl -s http://api.example.com/customers/12345/billing

   The answer shows received_credential "Bearer demo-billing-key-..." and agent_token_seen false:
   the sidecar verified the token, checked read:billing:customer-12345, and swapped it for the key.

3. Try what the token does not allow:

   http_proxy=http://agent:$TOKEN@${proxyHost} curl -s http://api.example.com/customers/67890/billing

4. Check the audit trail:   npx agentwrit-sidecar audit verify ${e.auditPath}

Press Ctrl-C to stop.
`;
}

export async function runDevCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv, DEV_OPTIONS);
  if (args.flags.has('help')) {
    process.stdout.write(DEV_HELP);
    return 0;
  }
  let problem = noArgsProblem(args);
  try {
    portsOf(args);
  } catch (e) {
    problem ??= (e as Error).message;
  }
  if (problem !== undefined) {
    process.stderr.write(`agentwrit-sidecar dev: ${problem}\n\n${DEV_HELP}`);
    return 2;
  }
  survivesClosedOutput(process.stdout);
  let env: DevEnvironment;
  try {
    env = await startDevEnvironment(argv);
  } catch (err) {
    const msg = err instanceof ConfigError ? err.message : (err as Error).message;
    process.stderr.write(`agentwrit-sidecar dev: ${msg}\n`);
    return 1;
  }
  process.stdout.write(walkthrough(env));
  return await new Promise<number>((resolveP) => {
    // A closed terminal (SIGHUP) stops it too: the signal's default would leave the files behind.
    const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
    const stop = () => {
      for (const s of signals) process.off(s, stop);
      process.stdout.write('\nstopping...\n');
      env.close().then(
        () => resolveP(0),
        () => resolveP(1),
      );
    };
    for (const s of signals) process.on(s, stop);
  });
}
