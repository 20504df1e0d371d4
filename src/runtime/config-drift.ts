/**
 * What a reload cannot apply. Policies, file secrets, the broker key, the broker TLS files and the
 * upstream CA files are followed while running; the sidecar configuration file itself (listeners,
 * broker, audit, upstream, the policy paths…) is read at start only. When a reload is asked for, the file is read again and
 * compared with the configuration in service, so an operator who edited it and sent SIGHUP is told
 * which sections wait for a restart (or that the file would not load now) instead of believing the
 * change applied.
 */
import { type LoadedConfig, loadSidecarConfig } from '../config/load.js';
import { ConfigError } from '../errors.js';

export type ConfigDrift =
  /** The file on disk gives the configuration in service. */
  | { kind: 'same' }
  /** Top-level sections whose value on disk differs from the one in service. */
  | { kind: 'changed'; sections: string[] }
  /** The file on disk does not load: a restart would fail with these problems. */
  | { kind: 'invalid'; problems: string[] };

export async function configDrift(running: LoadedConfig, env: NodeJS.ProcessEnv): Promise<ConfigDrift> {
  let now: LoadedConfig;
  try {
    now = await loadSidecarConfig(running.file, env);
  } catch (e) {
    return { kind: 'invalid', problems: e instanceof ConfigError ? e.message.split('\n') : [(e as Error).message] };
  }
  const before = running.config as Record<string, unknown>;
  const after = now.config as Record<string, unknown>;
  const sections = [...new Set([...Object.keys(before), ...Object.keys(after)])].filter((k) => canonical(before[k]) !== canonical(after[k])).sort();
  return sections.length === 0 ? { kind: 'same' } : { kind: 'changed', sections };
}

/** JSON with object keys sorted: the same settings written in another order compare equal. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'undefined';
}
