/**
 * Configuration generations: load → validate → compile → provision, all before the swap. A failed
 * build leaves the running generation untouched.
 */
import { readFile } from 'node:fs/promises';
import { loadPolicies } from '../config/load.js';
import { ConnectorRegistry } from '../connectors/registry.js';
import { ConfigError, type ConfigProblem, errorReason } from '../errors.js';
import { compilePolicy } from '../policy/compile.js';
import type { CompiledRoute } from '../policy/types.js';
import { caBundleProblem } from '../upstream/trust.js';
import type { Generation } from './types.js';

/**
 * A route's caFile is read by the forwarder when the route first needs it (and followed from then
 * on, upstream/trust.ts); one that is missing or holds no usable certificate is found here, where the
 * generation can still be refused with the route's position, rather than as a failure on every request.
 */
async function checkRouteCaFiles(routes: readonly CompiledRoute[]): Promise<void> {
  const problems: ConfigProblem[] = [];
  for (const r of routes) {
    const file = r.def.caFile;
    if (file === undefined) continue;
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      problems.push({ ...r.source, message: `route ${r.id}: caFile ${file} cannot be read: ${errorReason(e)}` });
      continue;
    }
    const problem = caBundleProblem(text);
    if (problem) problems.push({ ...r.source, message: `route ${r.id}: caFile ${file} ${problem}` });
  }
  if (problems.length > 0) throw new ConfigError(problems);
}

/** `current`: the generation in service, whose unchanged connectors the new one takes over (registry.ts). */
export async function buildGeneration(id: number, policyPaths: string[], baseDir: string, env: NodeJS.ProcessEnv, current?: Generation): Promise<Generation> {
  const loaded = await loadPolicies(policyPaths);
  const policy = compilePolicy(loaded);
  await checkRouteCaFiles(policy.routes);
  const connectors = await ConnectorRegistry.create(
    policy.connectors.map((c) => c.def),
    { baseDir, env },
    current?.connectors,
  );
  const mountUpstreams = new Map<string, { scheme: 'http' | 'https'; host: string; port: number }>();
  for (const r of policy.routes) {
    if (r.def.mount && r.upstream) mountUpstreams.set(r.def.mount, r.upstream);
  }
  return { id, policy, connectors, mountUpstreams, digest: policy.digest };
}
