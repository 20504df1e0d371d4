/**
 * `agentwrit-sidecar broker`: runs the AgentWrit-compatible development broker until SIGINT or
 * SIGTERM.
 */
import { DEFAULT_LISTEN, type RunningBroker, startBroker } from '../broker/index.js';
import type { BrokerTls } from '../broker/server.js';
import { readNamedFile } from '../file-identity.js';
import { createLogger } from '../telemetry/logger.js';
import { flagString, noArgsProblem, parseArgs } from './args.js';

const HELP = `Usage: agentwrit-sidecar broker [options]

A DEVELOPMENT AND TEST BROKER - NOT A PRODUCTION BROKER.
It speaks the AgentWrit v1 API (same request/response shapes, status codes and quirks as the real
AgentWrit broker) so the sidecar can be developed, tested, demonstrated and run in CI without
outside services. It has no high availability and keeps state in one local file at most.
For anything real, run an AgentWrit broker and point the sidecar at it.

Options:
  --listen HOST:PORT        listen address (default ${DEFAULT_LISTEN})
  --signing-key FILE        Ed25519 PKCS#8 PEM signing key; created with mode 0600 if missing
                            (default: a new in-memory key, so tokens die with the process)
  --public-key-out FILE     write the public key (SPKI PEM) here for sidecars (broker.publicKeyFile)
  --admin-secret SECRET     admin secret; prefer the environment variable AA_ADMIN_SECRET or
                            AGENTWRIT_ADMIN_SECRET, command lines are visible to other users
  --state FILE              keep apps, agents, revocations and the audit log across restarts
                            (default: memory only)
  --issuer ISS              "iss" of issued tokens, enforced on verification (AA_ISSUER)
  --audience AUD            "aud" of issued tokens, enforced on Bearer endpoints (AA_AUDIENCE)
  --trust-domain DOMAIN     SPIFFE trust domain of agent ids (default agentwrit.local)
  --tls-mode MODE           none (default), tls or mtls, as the broker's AA_TLS_MODE: HTTPS, and
                            with mtls a client certificate is required (AA_TLS_MODE)
  --tls-cert FILE           server certificate chain, PEM (AA_TLS_CERT)
  --tls-key FILE            its private key, PEM (AA_TLS_KEY)
  --tls-client-ca FILE      CA certificates client certificates must chain to, PEM (mtls;
                            AA_TLS_CLIENT_CA)
  --seed-tokens             at startup print SEED_LAUNCH_TOKEN=<hex> (agent "seed-agent", scope
                            *:*:*, valid 1 h, single use) and SEED_ADMIN_TOKEN=<jwt> (admin scopes,
                            1 h, no aud) on stdout, for scripts and tests (AA_SEED_TOKENS=true)
  --log-level LEVEL         request log level: info, warn, silent (default info)
  --help, -h                this help

Extension (not part of AgentWrit): GET /.well-known/jwks.json publishes the signing key as a JWK
Set (OKP/Ed25519, kid = RFC 7638 thumbprint). Real AgentWrit brokers publish no key at all.
Secrets are hashed with scrypt instead of bcrypt.
`;

const OPTIONS = {
  booleans: ['seed-tokens'],
  values: ['listen', 'signing-key', 'public-key-out', 'admin-secret', 'state', 'issuer', 'audience', 'trust-domain', 'log-level', 'tls-mode', 'tls-cert', 'tls-key', 'tls-client-ca'],
};

export interface BrokerCommandIo {
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
  env?: NodeJS.ProcessEnv;
  /** Resolves to stop the broker (tests); by default SIGINT or SIGTERM does. */
  stop?: Promise<unknown>;
  onReady?: (broker: RunningBroker) => void;
}

function waitForSignal(): { promise: Promise<string>; dispose: () => void } {
  let handler: (sig: string) => void = () => {};
  const promise = new Promise<string>((resolve) => {
    handler = resolve;
  });
  process.once('SIGINT', handler);
  process.once('SIGTERM', handler);
  return {
    promise,
    dispose: () => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}

/**
 * The TLS settings from flags or the broker's AA_TLS_* variables. As with the broker, a mode other
 * than tls or mtls serves plain HTTP; unlike it, that is said out loud.
 */
function tlsSettings(get: (flag: string, env: string) => string | undefined, warn: (s: string) => void): BrokerTls | undefined {
  const mode = get('tls-mode', 'AA_TLS_MODE') ?? 'none';
  if (mode !== 'tls' && mode !== 'mtls') {
    if (mode !== 'none' && mode !== '') warn(`TLS mode "${mode}" is not none, tls or mtls: serving plain HTTP, as the broker does`);
    return undefined;
  }
  const read = (flag: string, envName: string, what: string): string => {
    const file = get(flag, envName);
    if (!file) throw new Error(`TLS mode ${mode} needs ${what}: --${flag} FILE (or ${envName})`);
    return readNamedFile(file, what);
  };
  const cert = read('tls-cert', 'AA_TLS_CERT', 'a server certificate');
  const key = read('tls-key', 'AA_TLS_KEY', 'its private key');
  if (mode === 'tls') return { mode, cert, key };
  return { mode, cert, key, clientCa: read('tls-client-ca', 'AA_TLS_CLIENT_CA', 'the CA of client certificates') };
}

export async function runBrokerCommand(argv: string[], io: BrokerCommandIo = {}): Promise<number> {
  const out = io.stdout ?? process.stdout;
  const err = io.stderr ?? process.stderr;
  const env = io.env ?? process.env;
  const args = parseArgs(argv, OPTIONS);
  if (args.flags.has('help')) {
    out.write(HELP);
    return 0;
  }
  const problem = noArgsProblem(args);
  if (problem !== undefined) {
    err.write(`agentwrit-sidecar broker: ${problem}\n\n${HELP}`);
    return 2;
  }
  const adminSecret = flagString(args, 'admin-secret') ?? env.AA_ADMIN_SECRET ?? env.AGENTWRIT_ADMIN_SECRET ?? '';
  if (!adminSecret) {
    err.write('agentwrit-sidecar broker: an admin secret is required (--admin-secret, or AA_ADMIN_SECRET / AGENTWRIT_ADMIN_SECRET)\n');
    return 2;
  }
  let tls: BrokerTls | undefined;
  try {
    tls = tlsSettings(
      (name, envName) => flagString(args, name) ?? env[envName],
      (warning) => err.write(`agentwrit-sidecar broker: ${warning}\n`),
    );
  } catch (e) {
    err.write(`agentwrit-sidecar broker: ${(e as Error).message}\n`);
    return 2;
  }
  const seedEnv = env.AA_SEED_TOKENS;
  if (seedEnv !== undefined && seedEnv !== '' && seedEnv !== 'true' && seedEnv !== 'false') {
    err.write(`agentwrit-sidecar broker: AA_SEED_TOKENS="${seedEnv}" is not true or false: no seed tokens, as the broker does\n`);
  }
  const seed = args.flags.has('seed-tokens') || seedEnv === 'true';
  const level = flagString(args, 'log-level') ?? 'info';
  const logger = createLogger(level, out);
  const signingKeyFile = flagString(args, 'signing-key');
  const stateFile = flagString(args, 'state');
  const publicKeyOut = flagString(args, 'public-key-out');
  const signal = io.stop ? undefined : waitForSignal();
  let broker: RunningBroker;
  try {
    broker = await startBroker({
      listen: flagString(args, 'listen'),
      signingKeyFile,
      publicKeyOut,
      adminSecret,
      stateFile,
      issuer: flagString(args, 'issuer'),
      audience: flagString(args, 'audience'),
      trustDomain: flagString(args, 'trust-domain'),
      tls,
      seedTokens: seed,
      logger,
    });
  } catch (e) {
    signal?.dispose();
    err.write(`agentwrit-sidecar broker: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
  out.write(
    [
      'agentwrit-sidecar broker: DEVELOPMENT/TEST BROKER - NOT FOR PRODUCTION USE',
      `  AgentWrit v1 API on ${broker.url} (extension: ${broker.url}/.well-known/jwks.json)`,
      `  signing key  ${signingKeyFile ?? 'in memory (tokens become unverifiable when this process stops)'}`,
      `  kid          ${broker.kid}`,
      ...(publicKeyOut ? [`  public key   ${publicKeyOut}`] : []),
      `  state        ${stateFile ?? 'in memory'}`,
      `  TLS          ${tls ? (tls.mode === 'mtls' ? 'mtls (client certificates required)' : 'tls') : 'none (plain HTTP)'}`,
      '  Ctrl-C stops the broker.',
      ...(broker.seed ? [`SEED_LAUNCH_TOKEN=${broker.seed.launchToken}`, `SEED_ADMIN_TOKEN=${broker.seed.adminToken}`] : []),
      '',
    ].join('\n'),
  );
  io.onReady?.(broker);
  await (io.stop ?? signal?.promise);
  signal?.dispose();
  await broker.close();
  out.write('agentwrit-sidecar broker: stopped\n');
  return 0;
}
