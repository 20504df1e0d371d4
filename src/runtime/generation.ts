/**
 * Configuration generations: load → validate → compile → provision, all before the swap. A failed
 * build leaves the running generation untouched.
 */
import { loadPolicies } from '../config/load.js';
import { ConnectorRegistry } from '../connectors/registry.js';
import { compilePolicy } from '../policy/compile.js';
import type { Generation } from './types.js';

export async function buildGeneration(id: number, policyPaths: string[], baseDir: string, env: NodeJS.ProcessEnv): Promise<Generation> {
  const loaded = await loadPolicies(policyPaths);
  const policy = compilePolicy(loaded);
  const connectors = await ConnectorRegistry.create(
    policy.connectors.map((c) => c.def),
    { baseDir, env },
  );
  const mountUpstreams = new Map<string, { scheme: 'http' | 'https'; host: string; port: number }>();
  for (const r of policy.routes) {
    if (r.def.mount && r.upstream) mountUpstreams.set(r.def.mount, r.upstream);
  }
  return { id, policy, connectors, mountUpstreams, digest: policy.digest };
}
