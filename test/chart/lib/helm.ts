/**
 * Runs the real `helm` binary ($HELM, else `helm` on PATH) with its cache/config/data in a private
 * temporary directory, and parses rendered manifests.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const CHART_DIR = join(REPO_ROOT, 'charts', 'agentwrit-sidecar');
export const CI_VALUES_DIR = join(CHART_DIR, 'ci');

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Path of the helm binary, or an explanation of how to get one. CI installs helm; a missing one is a failure. */
export function findHelm(): { path: string } | { error: string } {
  const fromEnv = process.env.HELM;
  if (fromEnv) return isExecutable(fromEnv) ? { path: fromEnv } : { error: `HELM=${fromEnv} is not an executable file` };
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && isExecutable(join(dir, 'helm'))) return { path: join(dir, 'helm') };
  }
  return { error: 'helm not found: put helm on PATH or set HELM=/path/to/helm (CI fetches it before running the tests)' };
}

export interface HelmResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export class Helm {
  private readonly home = mkdtempSync(join(tmpdir(), 'aw-helm-'));
  constructor(readonly bin: string) {}

  run(args: string[], cwd = REPO_ROOT): HelmResult {
    const env = { ...process.env, HELM_CACHE_HOME: join(this.home, 'cache'), HELM_CONFIG_HOME: join(this.home, 'config'), HELM_DATA_HOME: join(this.home, 'data') };
    const r = spawnSync(this.bin, args, { cwd, env, encoding: 'utf8', timeout: 60_000 });
    if (r.error) throw r.error;
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  lint(valuesFiles: string[] = [], extra: string[] = []): HelmResult {
    return this.run(['lint', '--strict', CHART_DIR, ...valuesFiles.flatMap((f) => ['-f', f]), ...extra]);
  }

  /** `helm template`; kubeVersion like "1.30.0"; apiVersions e.g. ["monitoring.coreos.com/v1"]. */
  template(opts: { valuesFiles?: string[]; kubeVersion?: string; apiVersions?: string[]; set?: string[]; setString?: string[]; chart?: string; release?: string } = {}): HelmResult {
    const args = ['template', opts.release ?? 'demo', opts.chart ?? CHART_DIR, '--namespace', 'agents'];
    for (const f of opts.valuesFiles ?? []) args.push('-f', f);
    if (opts.kubeVersion) args.push('--kube-version', opts.kubeVersion);
    for (const a of opts.apiVersions ?? []) args.push('--api-versions', a);
    for (const s of opts.set ?? []) args.push('--set', s);
    for (const s of opts.setString ?? []) args.push('--set-string', s);
    return this.run(args);
  }

  dispose(): void {
    rmSync(this.home, { recursive: true, force: true });
  }
}

export function parseManifests(text: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`rendered YAML does not parse: ${doc.errors[0].message}`);
    const obj = doc.toJS() as K8sObject | null;
    if (obj) out.push(obj);
  }
  return out;
}

export function findObject(objs: K8sObject[], kind: string, nameSuffix = ''): K8sObject | undefined {
  return objs.find((o) => o.kind === kind && o.metadata.name.endsWith(nameSuffix));
}
