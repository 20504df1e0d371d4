/**
 * `agentwrit-sidecar policy check|explain`: validate configuration and policies, and show what the
 * policy does with one request. Output is for people; the token given to explain is never printed.
 */
import { readFile, stat } from 'node:fs/promises';
import { loadPolicies, loadSidecarConfig, readText } from '../config/load.js';
import { parseYaml } from '../config/positions.js';
import { SidecarConfigSchema } from '../config/schema.js';
import { ConfigError, type ConfigProblem, errorReason, formatProblem, isSidecarError } from '../errors.js';
import { canonicalizeForward, canonicalizeOrigin } from '../ingress/canonical.js';
import { type CompiledPolicy, compilePolicy } from '../policy/compile.js';
import { type Explanation, explainRequest, formatExplanation } from '../policy/explain.js';
import type { CanonicalRequest } from '../policy/types.js';
import { flagString, parseArgs } from './args.js';

export interface PolicyIo {
  out(s: string): void;
  err(s: string): void;
  env?: NodeJS.ProcessEnv;
}

const stdio: PolicyIo = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

export const POLICY_HELP = `Usage: agentwrit-sidecar policy <command>

Commands:
  check PATH...                                  validate configuration and policy files
  explain --config FILE [--token JWT | --token-file F] METHOD URL
                                                 show which route matches a request

Run "agentwrit-sidecar policy <command> --help" for details.
`;

export const CHECK_HELP = `Usage: agentwrit-sidecar policy check PATH...

Validates sidecar configuration files and policy files or directories (every *.yaml / *.yml
directly inside). A file with any of the configuration's top-level keys (proxy, broker,
policies, ...) is read as a sidecar configuration, and the policies it names are checked too.
Policy files and directories given directly are compiled together as one set.

Every problem is printed as "file:line:col message". Without problems, one summary line per set
(routes, connectors, pass-through hosts, policy digest).

Exit status: 0 valid, 1 problems found, 2 usage error.
`;

export const EXPLAIN_HELP = `Usage: agentwrit-sidecar policy explain --config FILE [--token JWT | --token-file FILE] METHOD URL

Shows which route a request matches (or why none does), the scopes it requires with the path
parameters filled in, and the connector that supplies the upstream credential. With a token, the
token is verified as the sidecar would (broker.verify of the configuration) and the answer is
allow or deny with the reason. The token itself is never printed.

URL forms:
  http://HOST[:PORT]/PATH     forward-proxy request
  https://HOST[:PORT]/PATH    HTTPS request through an intercepted CONNECT tunnel
  /MOUNT/PATH                 reverse route on the proxy port

Options:
  --config FILE      sidecar configuration (default: $AGENTWRIT_SIDECAR_CONFIG)
  --token JWT        AgentWrit token to check against the route
  --token-file FILE  read the token from a file (keeps it out of the process list)
  --help             show this help

Exit status: 0 matched (and allowed, with a token), 1 denied, no route or invalid configuration,
2 usage error.
`;

export async function runPolicyCommand(argv: string[], io: PolicyIo = stdio): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'check':
      return runCheck(rest, io);
    case 'explain':
      return runExplain(rest, io);
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      (sub === undefined ? io.err : io.out)(POLICY_HELP);
      return sub === undefined ? 2 : 0;
    default:
      io.err(`agentwrit-sidecar policy: unknown command "${sub}"\n\n${POLICY_HELP}`);
      return 2;
  }
}

const CONFIG_KEYS = new Set(Object.keys(SidecarConfigSchema.shape));

/**
 * A path's text, read once (a pipe or process substitution can only be read once) and within the
 * size limit; undefined for a directory or a file that cannot be read (the loader says why).
 */
async function readOnce(path: string): Promise<string | undefined> {
  try {
    if ((await stat(path)).isDirectory()) return undefined;
  } catch {
    return undefined;
  }
  const read = await readText(path);
  return 'text' in read ? read.text : undefined;
}

/** A sidecar configuration is recognised by its top-level keys; anything else is a policy file. */
function isSidecarConfig(path: string, text: string): boolean {
  try {
    const { value } = parseYaml(path, text);
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
    const keys = Object.keys(value);
    return !keys.includes('version') && keys.some((k) => CONFIG_KEYS.has(k));
  } catch {
    return false;
  }
}

function summary(p: CompiledPolicy): string {
  const n = (count: number, word: string) => `${count} ${word}${count === 1 ? '' : 's'}`;
  return `ok: ${n(p.routes.length, 'route')}, ${n(p.connectors.length, 'connector')}, ${n(p.passThrough.length, 'pass-through host')}, policy digest ${p.digest}`;
}

async function compileSet(paths: string[], problems: ConfigProblem[], others: string[], preread?: ReadonlyMap<string, string>): Promise<CompiledPolicy | undefined> {
  try {
    return compilePolicy(await loadPolicies(paths, preread));
  } catch (e) {
    if (e instanceof ConfigError) for (const p of e.problems) problems.push(p);
    else others.push((e as Error).message);
    return undefined;
  }
}

async function runCheck(argv: string[], io: PolicyIo): Promise<number> {
  const args = parseArgs(argv);
  if (args.flags.has('help')) {
    io.out(CHECK_HELP);
    return 0;
  }
  if (args.error !== undefined || args.positionals.length === 0) {
    io.err(`policy check: ${args.error ?? 'no PATH given'}\n\n${CHECK_HELP}`);
    return 2;
  }
  const problems: ConfigProblem[] = [];
  const others: string[] = [];
  const lines: string[] = [];
  const policyPaths: string[] = [];
  const preread = new Map<string, string>();
  for (const path of args.positionals) {
    const text = await readOnce(path);
    if (text === undefined || !isSidecarConfig(path, text)) {
      if (text !== undefined) preread.set(path, text);
      policyPaths.push(path);
      continue;
    }
    try {
      const loaded = await loadSidecarConfig(path, io.env ?? process.env, text);
      const compiled = await compileSet(loaded.config.policies, problems, others);
      if (compiled) lines.push(`${path}: ${summary(compiled)}`);
    } catch (e) {
      if (e instanceof ConfigError) for (const p of e.problems) problems.push(p);
      else others.push(`${path}: ${(e as Error).message}`);
    }
  }
  if (policyPaths.length > 0) {
    const compiled = await compileSet(policyPaths, problems, others, preread);
    if (compiled) lines.push(summary(compiled));
  }
  if (problems.length > 0 || others.length > 0) {
    for (const p of problems) io.out(`${formatProblem(p)}\n`);
    for (const o of others) io.out(`${o}\n`);
    const n = problems.length + others.length;
    io.err(`${n} problem${n === 1 ? '' : 's'} found\n`);
    return 1;
  }
  for (const l of lines) io.out(`${l}\n`);
  return 0;
}

/** The request the sidecar would build for METHOD URL, or undefined for a path under no mount. */
function requestFor(method: string, url: string, policy: CompiledPolicy): CanonicalRequest | undefined {
  const lower = url.slice(0, 8).toLowerCase();
  if (lower.startsWith('http://')) return canonicalizeForward(method, url, {});
  if (lower === 'https://') {
    const end = url.slice(8).search(/[/?#]/);
    const authority = end < 0 ? url.slice(8) : url.slice(8, 8 + end);
    const target = end < 0 ? '/' : url.slice(8 + end);
    // Reuse the forward parser for the authority so both forms accept the same hosts.
    const { host, port } = canonicalizeForward(method, `http://${authority}/`, {});
    const explicitPort = /:\d+$/.test(authority.replace(/^\[.*\]/, ''));
    return canonicalizeOrigin(method, target.startsWith('/') ? target : `/${target}`, {}, { kind: 'intercepted', host, port: explicitPort ? port : 443 });
  }
  return canonicalizeOrigin(method, url, {}, {
    kind: 'reverse',
    mounts: policy.matcher.mounts(),
    upstreamOf: (m) => policy.mountUpstream(m)!,
  });
}

async function runExplain(argv: string[], io: PolicyIo): Promise<number> {
  const args = parseArgs(argv, { values: ['config', 'token', 'token-file'] });
  if (args.flags.has('help')) {
    io.out(EXPLAIN_HELP);
    return 0;
  }
  const env = io.env ?? process.env;
  const file = flagString(args, 'config') ?? env.AGENTWRIT_SIDECAR_CONFIG;
  const usage = (msg: string) => {
    io.err(`policy explain: ${msg}\n\n${EXPLAIN_HELP}`);
    return 2;
  };
  if (args.error) return usage(args.error);
  if (!file) return usage('no configuration; pass --config FILE or set AGENTWRIT_SIDECAR_CONFIG');
  if (args.positionals.length !== 2) return usage('expected METHOD URL');
  let token = flagString(args, 'token');
  const tokenFile = flagString(args, 'token-file');
  if (token !== undefined && tokenFile !== undefined) return usage('give --token or --token-file, not both');
  const [methodArg, url] = args.positionals;
  const method = methodArg.toUpperCase();

  let loaded: Awaited<ReturnType<typeof loadSidecarConfig>>;
  let policy: CompiledPolicy;
  try {
    loaded = await loadSidecarConfig(file, env);
    policy = compilePolicy(await loadPolicies(loaded.config.policies));
    if (tokenFile !== undefined) {
      token = (
        await readFile(tokenFile, 'utf8').catch((e: unknown) => {
          throw new Error(`cannot read --token-file ${tokenFile}: ${errorReason(e)}`);
        })
      ).trim();
    }
  } catch (e) {
    io.err(e instanceof ConfigError ? `${e.message}\n` : `policy explain: ${(e as Error).message}\n`);
    return 1;
  }

  let req: CanonicalRequest | undefined;
  try {
    req = requestFor(method, url, policy);
  } catch (e) {
    if (!isSidecarError(e)) throw e;
    io.out(`request refused before matching: ${e.code}: ${e.detail}\n`);
    return 1;
  }
  if (!req) {
    const mounts = policy.matcher.mounts();
    io.out(
      formatExplanation({
        matched: false,
        requiredScopes: [],
        decision: 'deny',
        errorCode: 'no_route',
        reasons: [url.startsWith('/') ? `${url.split('?')[0]} is under no mount${mounts.length ? ` (mounts: ${mounts.join(', ')})` : ' (no reverse routes)'}` : 'URL must be http://..., https://... or /mount/...'],
      }),
    );
    return 1;
  }

  let explanation: Explanation;
  if (token === undefined) {
    explanation = explainRequest(policy, req);
  } else {
    const { createTokenVerifier } = await import('../auth/verifier.js');
    let verifier: Awaited<ReturnType<typeof createTokenVerifier>> | undefined;
    try {
      verifier = await createTokenVerifier(loaded.config.broker);
      const { identity } = await verifier.verify(token);
      explanation = explainRequest(policy, req, identity);
      explanation.reasons.unshift(`token verified: sub ${identity.sub}, scopes ${identity.scopes.join(' ') || '(none)'}`);
    } catch (e) {
      explanation = explainRequest(policy, req);
      explanation.decision = 'deny';
      explanation.errorCode = isSidecarError(e) ? e.code : 'token_invalid';
      // SidecarError details never contain the token; other errors come from setting up keys or the broker client.
      explanation.reasons.unshift(`token refused: ${isSidecarError(e) ? e.detail : `verifier error (${(e as Error).message})`}`);
    } finally {
      await verifier?.close();
    }
  }
  io.out(formatExplanation(explanation));
  return explanation.matched && explanation.decision !== 'deny' ? 0 : 1;
}
