/**
 * The chart README's "Use from another chart" example, built as a real parent chart with this chart
 * as its dependency: it lints, renders on Kubernetes 1.28 and 1.30, validates, and the pod it renders
 * is wired to the ConfigMaps this chart renders.
 */
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import t from 'tap';
import { CHART_DIR, findHelm, Helm, parseManifests } from './lib/helm.js';
import { checkFieldsWithTypes, TEST_DIR, validateWithModels } from './lib/k8s-validate.js';
import { allContainers, envOf, podTemplateOf, sidecarOf } from './lib/pod.js';

/** Files marked `<!-- parent-chart: PATH -->` before a fenced block in the README. */
function exampleFiles(readme: string): Map<string, string> {
  const files = new Map<string, string>();
  for (const m of readme.matchAll(/<!-- parent-chart: (\S+) -->\n```yaml\n([\s\S]*?)```/g)) files.set(m[1], m[2]);
  return files;
}

const found = findHelm();
if ('error' in found) {
  t.fail(found.error);
} else {
  const helm = new Helm(found.path);
  const dir = mkdtempSync(join(tmpdir(), 'aw-parent-'));
  t.teardown(() => {
    helm.dispose();
    rmSync(dir, { recursive: true, force: true });
  });
  const chart = join(dir, 'research-agent');
  const files = exampleFiles(readFileSync(join(CHART_DIR, 'README.md'), 'utf8'));
  t.same([...files.keys()].sort(), ['Chart.yaml', 'templates/deployment.yaml', 'values.yaml'], 'README carries the parent chart example');
  for (const [path, text] of files) {
    mkdirSync(dirname(join(chart, path)), { recursive: true });
    writeFileSync(join(chart, path), text);
  }
  // What `helm dependency update` would unpack.
  cpSync(CHART_DIR, join(chart, 'charts', 'agentwrit-sidecar'), { recursive: true });

  t.test('helm lint', async (t) => {
    const r = helm.run(['lint', '--strict', chart]);
    t.equal(r.status, 0, 'parent chart lints', { output: r.stdout + r.stderr });
  });

  for (const kubeVersion of ['1.28.0', '1.30.0']) {
    t.test(`helm template on ${kubeVersion}`, async (t) => {
      const r = helm.template({ chart, release: 'research', kubeVersion });
      t.equal(r.status, 0, 'renders', { stderr: r.stderr });
      const objs = parseManifests(r.stdout);
      t.same(await validateWithModels(objs), [], 'objects validate');
      t.same(checkFieldsWithTypes(objs, TEST_DIR), [], 'no unknown fields');
      const deployments = objs.filter((o) => o.kind === 'Deployment');
      t.same(
        deployments.map((d) => d.metadata.name),
        ['research-research-agent'],
        "only the parent's Deployment (the dependency's workload is off)",
      );
      t.notOk(objs.some((o) => o.kind === 'Secret'), 'no Secret rendered');
      const tpl = podTemplateOf(deployments[0]);
      const spec = tpl.spec;
      const sc = sidecarOf(spec);
      t.equal(sc?.native, kubeVersion === '1.30.0', 'native sidecar switch follows the cluster version');
      if (!sc?.native) t.equal(spec.containers[0].name, 'agentwrit-sidecar', 'regular sidecar listed first');

      const configMaps = new Set(objs.filter((o) => o.kind === 'ConfigMap').map((o) => o.metadata.name));
      const cmVolumes = (spec.volumes ?? []).filter((v) => v.configMap).map((v) => v.configMap!.name);
      t.same(cmVolumes.sort(), ['research-agentwrit-sidecar-config', 'research-agentwrit-sidecar-policies'], 'pod mounts the config and policies ConfigMaps');
      for (const name of cmVolumes) t.ok(configMaps.has(name), `ConfigMap ${name} is rendered by the dependency`);
      t.ok(spec.volumes?.some((v) => v.secret?.secretName === 'search-api-credentials'), 'connector Secret mounted by reference');
      const volumeNames = new Set((spec.volumes ?? []).map((v) => v.name));
      for (const c of allContainers(spec)) for (const m of c.volumeMounts ?? []) t.ok(volumeNames.has(m.name), `${c.name} mount ${m.name} resolves`);

      const agent = spec.containers.find((c) => c.name === 'agent')!;
      const env = envOf(agent);
      t.equal(env.get('HTTPS_PROXY')?.value, 'http://127.0.0.1:15101', 'agent proxied through the sidecar');
      t.ok(env.get('NO_PROXY')?.value?.split(',').includes('agentwrit-broker.agentwrit.svc'), 'broker bypasses the proxy');
      t.equal(env.get('NODE_EXTRA_CA_CERTS')?.value, '/var/run/agentwrit/ca/ca.crt', 'CA variables set');
      t.equal(tpl.metadata.labels?.['agentwrit-sidecar/instance'], 'research-agentwrit-sidecar', 'pod carries the monitor label');
      t.match(tpl.metadata.annotations?.['checksum/agentwrit-config'], /^[0-9a-f]{64}$/, 'config checksum annotation');
      t.equal(sc?.container.image, 'registry.example.com/platform/agentwrit-sidecar:0.1.0', "image tag defaults to this chart's appVersion, not the parent's");
    });
  }
}
