/**
 * Loading of the sidecar configuration and of policy files: YAML with positions, schema validation,
 * cross-field rules, env overrides and path resolution. Every problem found is reported, each with
 * its file, line and column; nothing half-valid is ever returned.
 */
import { createHash } from 'node:crypto';
import { type FileHandle, open, readdir, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { z } from 'zod';
import { type ConfigProblem, ConfigError } from '../errors.js';
import { fileTooLarge, MAX_FILE_BYTES, NO_POSITIONS, type PositionLookup, parseYaml } from './positions.js';
import { zodProblems } from './problems.js';
import { type PolicyFile, PolicyFileSchema, type SidecarConfig, SidecarConfigSchema } from './schema.js';
import { shownUrl } from '../url-text.js';

export type { PositionLookup } from './positions.js';

export interface LoadedConfig {
  config: SidecarConfig;
  /** Absolute path of the config file (or the name given to resolveSidecarConfig). */
  file: string;
  baseDir: string;
  /** Set when `file` was read from disk (loadSidecarConfig), so it can be read again. */
  fromFile?: true;
}

export const BROKER_URL_ENV = 'AGENTWRIT_BROKER_URL';

/** `text`: the file's content when it was read already (`policy check` reads each path once: a pipe reads once). */
export async function loadSidecarConfig(file: string, env: NodeJS.ProcessEnv = process.env, text?: string): Promise<LoadedConfig> {
  const abs = resolve(file);
  const read = text !== undefined ? { text } : await readText(abs);
  if ('failure' in read) throw new ConfigError([{ file, line: 1, col: 1, message: read.failure }]);
  const parsed = parseYaml(file, read.text);
  if (parsed.problems.length > 0) throw new ConfigError(parsed.problems);
  const loaded = validateConfig(parsed.value, dirname(abs), file, env, parsed.positions);
  return { ...loaded, file: abs, fromFile: true };
}

/** Same validation from an in-memory object (used by `dev` and tests); file name used only in messages. */
export function resolveSidecarConfig(
  input: unknown,
  baseDir: string,
  file = '<config>',
  env: NodeJS.ProcessEnv = process.env,
): LoadedConfig {
  return validateConfig(input, resolve(baseDir), file, env, NO_POSITIONS);
}

function validateConfig(raw: unknown, baseDir: string, file: string, env: NodeJS.ProcessEnv, pos: PositionLookup): LoadedConfig {
  const problems: ConfigProblem[] = [];
  const problem = (at: { line: number; col: number }, message: string) => problems.push({ file, ...at, message });
  // An empty file means "all defaults" (everything may come from the environment).
  let input: unknown = raw ?? {};
  if (typeof input !== 'object' || Array.isArray(input)) {
    throw new ConfigError([{ file, ...pos.value([]), message: 'the configuration must be a mapping of keys' }]);
  }
  const envUrl = env[BROKER_URL_ENV];
  if (envUrl) {
    if (!z.url({ protocol: /^https?$/ }).safeParse(envUrl).success) {
      // The value is not echoed: a URL can carry credentials.
      problem({ line: 1, col: 1 }, `${BROKER_URL_ENV} is not a valid http(s) URL`);
    } else {
      const obj = input as Record<string, unknown>;
      const broker = obj.broker;
      if (broker === undefined || broker === null) input = { ...obj, broker: { url: envUrl } };
      else if (typeof broker === 'object' && !Array.isArray(broker)) input = { ...obj, broker: { ...broker, url: envUrl } };
    }
  }
  const result = SidecarConfigSchema.safeParse(input);
  if (!result.success) {
    // A loop, not push(...): a spread of very many problems overflows the stack.
    for (const p of zodProblems(result.error.issues, input, file, pos, SidecarConfigSchema)) problems.push(p);
    throw new ConfigError(problems);
  }
  const config = result.data;
  checkBroker(config, pos, problem);
  if (problems.length > 0) throw new ConfigError(problems);
  resolvePaths(config, baseDir);
  return { config, file, baseDir };
}

type ProblemAt = (at: { line: number; col: number }, message: string) => void;

function checkBroker(config: SidecarConfig, pos: PositionLookup, problem: ProblemAt): void {
  const b = config.broker;
  const sources = (['publicKeyFile', 'jwksFile', 'jwksUrl'] as const).filter((k) => b[k] !== undefined);
  if (sources.length > 1) {
    problem(pos.key(['broker', sources[1]]), `broker: ${sources.join(', ')} are alternatives; set only one key source`);
  }
  const verify = b.verify ?? (sources.length > 0 ? 'hybrid' : 'online');
  b.verify = verify;
  const verifyAt = pos.value(['broker', 'verify']);
  if ((verify === 'online' || verify === 'hybrid') && !b.url) {
    problem(verifyAt, `broker.url is required when broker.verify is ${verify} (or set ${BROKER_URL_ENV})`);
  }
  if ((verify === 'offline' || verify === 'hybrid') && sources.length === 0) {
    problem(verifyAt, `broker.verify ${verify} needs a key source: broker.publicKeyFile, broker.jwksFile or broker.jwksUrl`);
  }
  if ((b.clientCertFile === undefined) !== (b.clientKeyFile === undefined)) {
    const given = b.clientCertFile === undefined ? 'clientKeyFile' : 'clientCertFile';
    problem(pos.key(['broker', given]), 'broker.clientCertFile and broker.clientKeyFile go together: set both for mTLS, or neither');
  }
  const tlsKey = (['caFile', 'clientCertFile'] as const).find((k) => b[k] !== undefined);
  const urls = [b.url, b.jwksUrl].filter((u): u is string => u !== undefined);
  if (tlsKey && !urls.some((u) => u.startsWith('https:'))) {
    const why = urls.length === 0 ? 'neither is set' : `${urls.map(shownUrl).join(' and ')} ${urls.length > 1 ? 'are' : 'is'} plain HTTP`;
    problem(pos.key(['broker', tlsKey]), `broker.${tlsKey} is for an https broker.url or broker.jwksUrl; ${why}`);
  }
}

function resolvePaths(config: SidecarConfig, baseDir: string): void {
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p));
  const opt = (p: string | undefined) => (p === undefined ? undefined : abs(p));
  config.policies = config.policies.map(abs);
  config.broker.publicKeyFile = opt(config.broker.publicKeyFile);
  config.broker.jwksFile = opt(config.broker.jwksFile);
  config.broker.caFile = opt(config.broker.caFile);
  config.broker.clientCertFile = opt(config.broker.clientCertFile);
  config.broker.clientKeyFile = opt(config.broker.clientKeyFile);
  if (config.audit.path !== '-') config.audit.path = abs(config.audit.path);
  config.upstream.caFile = opt(config.upstream.caFile);
  config.tls.caDir = opt(config.tls.caDir);
  config.tls.caCertOut = opt(config.tls.caCertOut);
  config.tls.bundleOut = opt(config.tls.bundleOut);
}

/**
 * A configuration or policy file's text. One larger than MAX_FILE_BYTES is refused before it is
 * read, as parsing runs on the main thread (also on a hot reload).
 */
export async function readText(file: string): Promise<{ text: string } | { failure: string }> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(file, 'r');
    const st = await fh.stat();
    if (st.isFile() && st.size > MAX_FILE_BYTES) return { failure: fileTooLarge(st.size) };
    // One byte more than allowed is asked for: a file that grew since, or has no size (a pipe), is caught too.
    const buf = Buffer.alloc(MAX_FILE_BYTES + 1);
    let n = 0;
    while (n < buf.length) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, null);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    if (n > MAX_FILE_BYTES) return { failure: fileTooLarge() };
    return { text: buf.toString('utf8', 0, n) };
  } catch (e) {
    return { failure: readFailure(e) };
  } finally {
    await fh?.close();
  }
}

function readFailure(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file or directory';
  if (code === 'EACCES') return 'permission denied';
  if (code === 'EISDIR') return 'is a directory, expected a file';
  return `cannot read: ${code ?? (e as Error).message}`;
}

export interface PolicySource {
  file: string;
  text: string;
  policy: PolicyFile;
  positions: PositionLookup;
}

export interface LoadedPolicies {
  sources: PolicySource[];
  /** sha256 hex over the files sorted by name: name "\0" text "\0" each (names without directory). */
  digest: string;
}

const POLICY_FILE = /\.ya?ml$/;

/**
 * paths: files or directories (every *.yaml/*.yml directly inside, sorted). Directory entries are
 * followed through symlinks, as a Kubernetes ConfigMap mount consists of symlinks into "..data";
 * names starting with "." (that "..data" machinery included) are skipped.
 */
/** `preread`: the text of files already read, by the path as given (see loadSidecarConfig). */
export async function loadPolicies(paths: string[], preread?: ReadonlyMap<string, string>): Promise<LoadedPolicies> {
  const problems: ConfigProblem[] = [];
  const files: string[] = [];
  const seen = new Set<string>();
  const add = (f: string) => {
    const key = resolve(f);
    if (!seen.has(key)) {
      seen.add(key);
      files.push(f);
    }
  };
  for (const p of paths) {
    let st: Awaited<ReturnType<typeof stat>>;
    try {
      st = await stat(p);
    } catch (e) {
      problems.push({ file: p, line: 1, col: 1, message: readFailure(e) });
      continue;
    }
    if (!st.isDirectory()) {
      add(p);
      continue;
    }
    const found = await policyFilesIn(p);
    if (found.length === 0) problems.push({ file: p, line: 1, col: 1, message: 'directory holds no *.yaml or *.yml policy file' });
    for (const f of found) add(f);
  }
  const sources: PolicySource[] = [];
  for (const f of files) {
    const src = await loadPolicyFile(f, problems, preread?.get(f));
    if (src) sources.push(src);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return { sources, digest: policyDigest(sources) };
}

async function policyFilesIn(dir: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((n) => !n.startsWith('.') && POLICY_FILE.test(n)).sort();
  const out: string[] = [];
  for (const n of names) {
    const f = join(dir, n);
    try {
      if ((await stat(f)).isFile()) out.push(f);
    } catch {
      // A dangling symlink, e.g. mid-swap of a ConfigMap: not a policy file.
    }
  }
  return out;
}

async function loadPolicyFile(file: string, problems: ConfigProblem[], text?: string): Promise<PolicySource | undefined> {
  const read = text !== undefined ? { text } : await readText(file);
  if ('failure' in read) {
    problems.push({ file, line: 1, col: 1, message: read.failure });
    return undefined;
  }
  const parsed = parsePolicyText(file, read.text);
  for (const p of parsed.problems) problems.push(p);
  return parsed.source;
}

/** Parses and validates one policy file held in memory. */
export function parsePolicyText(file: string, text: string): { source?: PolicySource; problems: ConfigProblem[] } {
  const parsed = parseYaml(file, text);
  if (parsed.problems.length > 0) return { problems: parsed.problems };
  if (parsed.value === null || parsed.value === undefined) {
    return { problems: [{ file, line: 1, col: 1, message: 'empty policy file (expected at least "version: v1")' }] };
  }
  const result = PolicyFileSchema.safeParse(parsed.value);
  if (!result.success) return { problems: zodProblems(result.error.issues, parsed.value, file, parsed.positions, PolicyFileSchema) };
  return { source: { file, text, policy: result.data, positions: parsed.positions }, problems: [] };
}

export function policyDigest(sources: readonly PolicySource[]): string {
  const entries = sources.map((s) => [basename(s.file), s.text] as const);
  entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  const h = createHash('sha256');
  for (const [name, text] of entries) h.update(name).update('\0').update(text).update('\0');
  return h.digest('hex');
}
