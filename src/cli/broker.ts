/**
 * `agentwrit-sidecar broker`: runs the AgentWrit-compatible development broker until SIGINT or
 * SIGTERM.
 */
import { DEFAULT_LISTEN, type RunningBroker, startBroker } from '../broker/index.js';
import type { BrokerTls } from '../broker/server.js';
import { readNamedFile } from '../file-identity.js';
import { createLogger } from '../telemetry/logger.js';
import { flagString, noArgsProblem, parseArgs } from './args.js';
import { survivesClosedOutput } from './output.js';

const HELP = `Usage: agentwrit-sidecar broker [options]

A DEVELOPMENT AND TEST BROKER - NOT A PRODUCTION BROKER.
It speaks the AgentWrit v1 API (same request/response shapes, status codes and quirks as the real
AgentWrit broker) so the sidecar can be developed, tested, demonstrated and run in CI without
outside services. It has no high availability and keeps state in one local file at most.
For anything real, run an AgentWrit broker and point the sidecar at it.

Options (the broker's AA_* variable in parentheses; a flag wins over it):
  --listen HOST:PORT        listen address (default ${DEFAULT_LISTEN}; AA_BIND_ADDRESS and AA_PORT)
  --signing-key FILE        Ed25519 PKCS#8 PEM signing key; created with mode 0600 if missing
                            (default: a new in-memory key, so tokens die with the process;
                            AA_SIGNING_KEY_PATH)
  --public-key-out FILE     write the public key (SPKI PEM) here for sidecars (broker.publicKeyFile)
  --admin-secret SECRET     admin secret; prefer the environment variable AA_ADMIN_SECRET or
                            AGENTWRIT_ADMIN_SECRET, command lines are visible to other users
  --state FILE              keep apps, agents, revocations and the audit log across restarts;
                            a change is answered once written (default: memory only)
  --issuer ISS              "iss" of issued tokens, enforced on verification (AA_ISSUER)
  --audience AUD            "aud" of issued tokens, enforced on Bearer endpoints (AA_AUDIENCE)
  --trust-domain DOMAIN     SPIFFE trust domain of agent ids (default agentwrit.local; AA_TRUST_DOMAIN)
  --max-ttl SECONDS         global clamp on token lifetimes, 0 or less: none (default 86400; AA_MAX_TTL)
  --admin-token-ttl SECONDS lifetime of admin tokens (default 300; AA_ADMIN_TOKEN_TTL)
  --app-token-ttl SECONDS   default lifetime of app tokens (default 1800; AA_APP_TOKEN_TTL)
  --default-ttl SECONDS     fallback token lifetime (default 300; AA_DEFAULT_TTL)
  --tls-mode MODE           none (default), tls or mtls, as the broker's AA_TLS_MODE: HTTPS, and
                            with mtls a client certificate is required (AA_TLS_MODE)
  --tls-cert FILE           server certificate chain, PEM (AA_TLS_CERT)
  --tls-key FILE            its private key, PEM (AA_TLS_KEY)
  --tls-client-ca FILE      CA certificates client certificates must chain to, PEM (mtls;
                            AA_TLS_CLIENT_CA)
  --seed-tokens             at startup print SEED_LAUNCH_TOKEN=<hex> (agent "seed-agent", scope
                            *:*:*, valid 1 h, single use) and SEED_ADMIN_TOKEN=<jwt> (admin scopes,
                            1 h, no aud) on stdout, for scripts and tests (AA_SEED_TOKENS=true)
  --log-level LEVEL         request log level: debug, info, warn, error, silent (default info)
  --help, -h                this help

Extension (not part of AgentWrit): GET /.well-known/jwks.json publishes the signing key as a JWK
Set (OKP/Ed25519, kid = RFC 7638 thumbprint). Real AgentWrit brokers publish no key at all.
Secrets are hashed with scrypt instead of bcrypt. Not read: AA_DB_PATH (--state keeps a JSON
file, not SQLite), AA_LOG_LEVEL (--log-level) and AA_CONFIG_PATH.
`;

const OPTIONS = {
  booleans: ['seed-tokens'],
  values: [
    'listen',
    'signing-key',
    'public-key-out',
    'admin-secret',
    'state',
    'issuer',
    'audience',
    'trust-domain',
    'max-ttl',
    'admin-token-ttl',
    'app-token-ttl',
    'default-ttl',
    'log-level',
    'tls-mode',
    'tls-cert',
    'tls-key',
    'tls-client-ca',
  ],
};

/** Whole seconds, as Go's strconv.Atoi reads them (optional sign, digits). */
const SECONDS = /^[+-]?[0-9]{1,15}$/;

const TTL_SETTINGS = [
  ['max-ttl', 'AA_MAX_TTL', 'maxTtl'],
  ['admin-token-ttl', 'AA_ADMIN_TOKEN_TTL', 'adminTokenTtl'],
  ['app-token-ttl', 'AA_APP_TOKEN_TTL', 'appTokenTtl'],
  ['default-ttl', 'AA_DEFAULT_TTL', 'defaultTtl'],
] as const;

type TtlOptions = Partial<Record<(typeof TTL_SETTINGS)[number][2], number>>;

/**
 * The lifetimes from flags or AA_* variables. A flag that is not a number is an error; a variable
 * that is not one falls back to the default, as the broker does, but not silently.
 */
function ttlSettings(flag: (name: string) => string | undefined, env: NodeJS.ProcessEnv, warn: (s: string) => void): TtlOptions {
  const ttls: TtlOptions = {};
  for (const [name, envName, key] of TTL_SETTINGS) {
    const given = flag(name);
    if (given !== undefined) {
      if (!SECONDS.test(given)) throw new Error(`--${name} "${given}" is not a whole number of seconds`);
      ttls[key] = Number(given);
      continue;
    }
    const fromEnv = env[envName];
    if (fromEnv === undefined || fromEnv === '') continue;
    if (SECONDS.test(fromEnv)) ttls[key] = Number(fromEnv);
    else warn(`${envName}="${fromEnv}" is not a whole number of seconds: the default is used, as the broker does`);
  }
  return ttls;
}

/** --listen, else AA_BIND_ADDRESS and AA_PORT (each defaulting as the broker does), else undefined (the default). */
function listenAddress(flag: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  if (flag !== undefined) return flag;
  const host = env.AA_BIND_ADDRESS || undefined;
  const port = env.AA_PORT || undefined;
  if (host === undefined && port === undefined) return undefined;
  const h = host ?? '127.0.0.1';
  return `${h.includes(':') && !h.startsWith('[') ? `[${h}]` : h}:${port ?? '8080'}`;
}

const BROKER_LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'];

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
  let ttls: TtlOptions;
  try {
    ttls = ttlSettings(
      (name) => flagString(args, name),
      env,
      (warning) => err.write(`agentwrit-sidecar broker: ${warning}\n`),
    );
  } catch (e) {
    err.write(`agentwrit-sidecar broker: ${(e as Error).message}\n`);
    return 2;
  }
  const level = flagString(args, 'log-level') ?? 'info';
  if (!BROKER_LOG_LEVELS.includes(level)) {
    err.write(`agentwrit-sidecar broker: --log-level must be one of ${BROKER_LOG_LEVELS.join(', ')}, got "${level}"\n`);
    return 2;
  }
  // The broker keeps serving without its log rather than die with the tokens it holds in memory.
  survivesClosedOutput(out);
  const logger = createLogger(level, out);
  const signingKeyFile = flagString(args, 'signing-key') ?? (env.AA_SIGNING_KEY_PATH || undefined);
  const stateFile = flagString(args, 'state');
  const publicKeyOut = flagString(args, 'public-key-out');
  const signal = io.stop ? undefined : waitForSignal();
  let broker: RunningBroker;
  try {
    broker = await startBroker({
      listen: listenAddress(flagString(args, 'listen'), env),
      signingKeyFile,
      publicKeyOut,
      adminSecret,
      stateFile,
      issuer: flagString(args, 'issuer') ?? (env.AA_ISSUER || undefined),
      audience: flagString(args, 'audience') ?? (env.AA_AUDIENCE || undefined),
      trustDomain: flagString(args, 'trust-domain') ?? (env.AA_TRUST_DOMAIN || undefined),
      ...ttls,
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
