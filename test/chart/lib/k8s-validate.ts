/**
 * Validation of rendered objects against the Kubernetes API schemas of the kubernetes-models
 * package, in two passes:
 *  - the package's JSON-schema validators (types, enums, required fields);
 *  - the package's TypeScript interfaces, through the compiler's excess-property check, which
 *    catches misspelt or misplaced fields the JSON validators accept (the API server rejects them
 *    under strict field validation).
 * Prometheus Operator kinds are not in kubernetes-models; they are checked field by field.
 */
import { dirname, join } from 'node:path';
import ts from 'typescript';
import type { K8sObject } from './helm.js';

/** kubernetes-models module of an apiVersion/kind ("v1" is the core group). */
export function modelModule(o: K8sObject): string {
  return `kubernetes-models/${o.apiVersion}/${o.kind}`;
}

const PROMETHEUS_KINDS = new Set(['ServiceMonitor', 'PodMonitor']);

export async function validateWithModels(objs: K8sObject[]): Promise<string[]> {
  const problems: string[] = [];
  for (const o of objs) {
    if (PROMETHEUS_KINDS.has(o.kind)) {
      problems.push(...checkMonitor(o));
      continue;
    }
    let Model: new (data: unknown) => { validate(): void };
    try {
      const mod = (await import(modelModule(o))) as Record<string, typeof Model>;
      Model = mod[o.kind];
    } catch {
      problems.push(`${o.kind}/${o.metadata.name}: no Kubernetes model for ${o.apiVersion} ${o.kind}`);
      continue;
    }
    try {
      new Model(o).validate();
    } catch (err) {
      problems.push(`${o.kind}/${o.metadata.name}: ${(err as Error).message}`);
    }
  }
  return problems;
}

/** Excess-property and type check of every object against the kubernetes-models interfaces. */
export function checkFieldsWithTypes(objs: K8sObject[], anchorDir: string): string[] {
  const checked = objs.filter((o) => !PROMETHEUS_KINDS.has(o.kind));
  const lines: string[] = [];
  checked.forEach((o, i) => {
    lines.push(`import type { I${o.kind} as T${i} } from ${JSON.stringify(modelModule(o))};`);
  });
  checked.forEach((o, i) => {
    lines.push(`export const o${i}: T${i} = ${JSON.stringify(o, null, 1)};`);
  });
  const fileName = join(anchorDir, '__rendered_objects__.ts');
  const source = lines.join('\n');
  const options: ts.CompilerOptions = {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  host.getSourceFile = (name, lang, onError, create) =>
    name === fileName ? ts.createSourceFile(name, source, lang, true) : getSourceFile(name, lang, onError, create);
  host.fileExists = (name) => name === fileName || fileExists(name);
  const program = ts.createProgram([fileName], options, host);
  const diagnostics = ts.getPreEmitDiagnostics(program);
  return diagnostics.map((d) => {
    const text = ts.flattenDiagnosticMessageText(d.messageText, '\n');
    if (d.file?.fileName === fileName && d.start !== undefined) {
      const { line } = d.file.getLineAndCharacterOfPosition(d.start);
      const owner = source.slice(0, d.start).lastIndexOf('export const o');
      const idx = Number(/^export const o(\d+)/.exec(source.slice(owner))?.[1]);
      const o = checked[idx];
      return `${o ? `${o.kind}/${o.metadata.name}` : 'rendered objects'} (line ${line + 1}): ${text}`;
    }
    return text;
  });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const DURATION = /^(0|(\d+(ms|s|m|h))+)$/;

/** The fields the chart renders in ServiceMonitor/PodMonitor, checked against the monitoring.coreos.com/v1 CRDs. */
export function checkMonitor(o: K8sObject): string[] {
  const p: string[] = [];
  const at = `${o.kind}/${o.metadata?.name}`;
  if (o.apiVersion !== 'monitoring.coreos.com/v1') p.push(`${at}: apiVersion ${o.apiVersion}`);
  const allowedTop = new Set(['apiVersion', 'kind', 'metadata', 'spec']);
  for (const k of Object.keys(o)) if (!allowedTop.has(k)) p.push(`${at}: unknown field ${k}`);
  const spec = o.spec;
  if (!isRecord(spec)) return [...p, `${at}: spec missing`];
  const listKey = o.kind === 'ServiceMonitor' ? 'endpoints' : 'podMetricsEndpoints';
  for (const k of Object.keys(spec)) if (!['selector', 'namespaceSelector', listKey].includes(k)) p.push(`${at}: unknown spec field ${k}`);
  const sel = spec.selector;
  if (!isRecord(sel) || !isRecord(sel.matchLabels) || Object.keys(sel.matchLabels).length === 0) p.push(`${at}: spec.selector.matchLabels must be a non-empty map`);
  else for (const [k, v] of Object.entries(sel.matchLabels)) if (typeof v !== 'string') p.push(`${at}: label ${k} is not a string`);
  const ns = spec.namespaceSelector;
  if (ns !== undefined && !(isRecord(ns) && Array.isArray(ns.matchNames) && ns.matchNames.every((n) => typeof n === 'string'))) p.push(`${at}: namespaceSelector.matchNames must be strings`);
  const eps = spec[listKey];
  if (!Array.isArray(eps) || eps.length === 0) return [...p, `${at}: spec.${listKey} must be a non-empty list`];
  for (const ep of eps) {
    if (!isRecord(ep)) {
      p.push(`${at}: endpoint is not an object`);
      continue;
    }
    for (const k of Object.keys(ep)) if (!['port', 'path', 'scheme', 'interval', 'scrapeTimeout'].includes(k)) p.push(`${at}: unknown endpoint field ${k}`);
    if (typeof ep.port !== 'string' || ep.port === '') p.push(`${at}: endpoint port must be a port name`);
    if (typeof ep.path !== 'string' || !ep.path.startsWith('/')) p.push(`${at}: endpoint path must start with /`);
    if (ep.scheme !== undefined && !['http', 'https'].includes(ep.scheme as string)) p.push(`${at}: scheme ${String(ep.scheme)}`);
    for (const k of ['interval', 'scrapeTimeout']) if (ep[k] !== undefined && !(typeof ep[k] === 'string' && DURATION.test(ep[k]))) p.push(`${at}: ${k} ${String(ep[k])} is not a Prometheus duration`);
  }
  return p;
}

export const TEST_DIR = dirname(new URL(import.meta.url).pathname);
