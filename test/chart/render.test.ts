/**
 * helm lint and helm template of the chart with its default values and every representative values
 * file, on Kubernetes 1.28 and 1.30, with and without the Prometheus Operator API. Every rendered
 * object is validated against the Kubernetes schemas and checked for the chart's invariants.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { parse as parseYaml } from 'yaml';
import { PolicyFileSchema, SidecarConfigSchema } from '../../src/config/schema.js';
import { CHART_DIR, CI_VALUES_DIR, findHelm, Helm, type K8sObject, parseManifests, REPO_ROOT } from './lib/helm.js';
import { checkFieldsWithTypes, TEST_DIR, validateWithModels } from './lib/k8s-validate.js';
import { allContainers, envOf, type PodSpec, podTemplateOf, sidecarOf, volumeForPath, WORKLOAD_KINDS } from './lib/pod.js';

const found = findHelm();
if ('error' in found) {
  t.fail(found.error);
} else {
  const helm = new Helm(found.path);
  t.teardown(() => helm.dispose());
  const valuesFiles = readdirSync(CI_VALUES_DIR)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => join(CI_VALUES_DIR, f));
  t.ok(valuesFiles.length >= 3, 'representative values files exist');

  t.test('helm lint --strict', async (t) => {
    for (const file of [undefined, ...valuesFiles]) {
      const r = helm.lint(file ? [file] : []);
      t.equal(r.status, 0, `lint ${file ? file.slice(file.lastIndexOf('/') + 1) : 'defaults'}`, { output: r.stdout + r.stderr });
    }
  });

  for (const file of [undefined, ...valuesFiles]) {
    const label = file ? file.slice(file.lastIndexOf('/') + 1) : 'defaults';
    const userValues = (file ? parseYaml(readFileSync(file, 'utf8')) : {}) as UserValues;
    for (const kubeVersion of ['1.28.0', '1.30.0']) {
      for (const withApi of [false, true]) {
        t.test(`${label}, kube ${kubeVersion}, ${withApi ? 'with' : 'without'} monitoring.coreos.com/v1`, async (t) => {
          const r = helm.template({ valuesFiles: file ? [file] : [], kubeVersion, apiVersions: withApi ? ['monitoring.coreos.com/v1'] : [] });
          t.equal(r.status, 0, 'helm template succeeds', { stderr: r.stderr });
          const objs = parseManifests(r.stdout);
          t.same(await validateWithModels(objs), [], 'every object validates against its Kubernetes schema');
          t.same(checkFieldsWithTypes(objs, TEST_DIR), [], 'no unknown or mistyped fields');
          checkInvariants(t, objs, { userValues, kubeVersion, withApi, text: r.stdout });
        });
      }
    }
  }

  t.test('NOTES.txt renders for every values file and warns about missing monitor APIs', async (t) => {
    // helm template skips NOTES.txt: render it as the value of a YAML document in a copy of the chart.
    const copy = mkdtempSync(join(tmpdir(), 'aw-notes-'));
    t.teardown(() => rmSync(copy, { recursive: true, force: true }));
    cpSync(CHART_DIR, copy, { recursive: true });
    const notes = readFileSync(join(copy, 'templates', 'NOTES.txt'), 'utf8');
    writeFileSync(join(copy, 'templates', 'zz-notes.yaml'), `{{- define "test.notes" -}}\n${notes}\n{{- end }}\nnotes: {{ include "test.notes" . | toJson }}\n`);
    rmSync(join(copy, 'templates', 'NOTES.txt'));
    const render = (file: string | undefined, kubeVersion: string, api: boolean) => {
      const r = helm.template({ chart: copy, valuesFiles: file ? [file] : [], kubeVersion, apiVersions: api ? ['monitoring.coreos.com/v1'] : [] });
      t.equal(r.status, 0, 'NOTES render', { stderr: r.stderr });
      return (parseManifests(r.stdout).find((o) => 'notes' in o) as unknown as { notes: string } | undefined)?.notes ?? '';
    };
    for (const file of [undefined, ...valuesFiles]) {
      const monitors = file?.endsWith('standalone-values.yaml') || file?.endsWith('library-values.yaml');
      t.equal(/WARNING: monitors/.test(render(file, '1.28.0', false)), !!monitors, 'warns when monitors are enabled without the API');
      t.notMatch(render(file, '1.30.0', true), /WARNING: monitors/, 'no warning with the API');
    }
    t.match(render(undefined, '1.30.0', false), /native sidecar/, 'names the native sidecar mode');
    t.match(render(undefined, '1.28.0', false), /regular container, listed first/, 'names the regular-container mode');
    t.match(render(undefined, '1.30.0', false), /No policies are configured/, 'says that nothing is allowed without policies');
  });

  t.test('with no policies given, the chart ships one that allows nothing, which the sidecar loads', async (t) => {
    const objs = parseManifests(helm.template({}).stdout);
    const policies = objs.find((o) => o.kind === 'ConfigMap' && !('config.yaml' in ((o.data as Record<string, string>) ?? {})));
    const data = (policies?.data ?? {}) as Record<string, string>;
    t.same(Object.keys(data), ['00-deny-all.yaml'], 'one policy file, not an empty directory the sidecar refuses');
    const dir = mkdtempSync(join(tmpdir(), 'chart-deny-all-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    mkdirSync(join(dir, 'policies'));
    for (const [name, text] of Object.entries(data)) writeFileSync(join(dir, 'policies', name), text);
    writeFileSync(join(dir, 'config.yaml'), `broker: { url: "http://127.0.0.1:1", verify: online }\npolicies: [ ${join(dir, 'policies')} ]\n`);
    const check = spawnSync(process.execPath, [join(REPO_ROOT, 'dist', 'cli', 'main.js'), 'policy', 'check', join(dir, 'config.yaml')], { encoding: 'utf8' });
    t.equal(check.status, 0, 'policy check accepts the rendered directory', { output: check.stdout + check.stderr });
    t.match(check.stdout, /ok: 0 routes, 0 connectors, 0 pass-through hosts/);
  });

  t.test('the config checksum follows config.yaml only: policy edits are hot-reloaded, not rolled out', async (t) => {
    const checksum = (set: string[]) => {
      const objs = parseManifests(helm.template({ set }).stdout);
      return podTemplateOf(objs.find((o) => o.kind === 'Deployment')!).metadata.annotations!['checksum/agentwrit-config'];
    };
    const base = checksum([]);
    t.match(base, /^[0-9a-f]{64}$/);
    t.not(checksum(['config.log.level=debug']), base, 'config change rolls the pods');
    t.equal(checksum(['policies.files.extra\\.yaml.version=v1']), base, 'policy change does not');
  });

  t.test('names that read as numbers in YAML (2024, 0777) render as strings', async (t) => {
    const r = helm.template({
      set: ['secrets[0].mountAs=billing', 'auditLog.existingClaim=0777', 'serviceAccount.create=false'],
      setString: ['secrets[0].name=2024', 'ca.existingSecret.name=0777', 'serviceAccount.name=1e3', 'auditLog.existingClaim=0777'],
    });
    t.equal(r.status, 0, 'helm template succeeds', { stderr: r.stderr });
    const objs = parseManifests(r.stdout);
    t.same(await validateWithModels(objs), [], 'every object validates against its Kubernetes schema');
    const spec = podTemplateOf(objs.find((o) => o.kind === 'Deployment')!).spec as PodSpec & { serviceAccountName?: unknown };
    const names = (spec.volumes ?? []).flatMap((v) => [v.secret?.secretName, v.persistentVolumeClaim?.claimName]).filter((n) => n !== undefined);
    t.ok(names.includes('2024') && names.includes('0777'), `as strings: ${JSON.stringify(names)}`);
    t.equal(spec.serviceAccountName, '1e3');
  });

  t.test('broker.tls.secretName: the client certificate, key and CA come from that TLS Secret, mounted to follow renewals', async (t) => {
    const set = ['broker.url=https://agentwrit-broker.agentwrit.svc:8443', 'broker.tls.secretName=broker-client-tls'];
    const r = helm.template({ set });
    t.equal(r.status, 0, 'helm template succeeds', { stderr: r.stderr });
    const objs = parseManifests(r.stdout);
    t.same(await validateWithModels(objs), [], 'every object validates against its Kubernetes schema');
    const spec = podTemplateOf(objs.find((o) => o.kind === 'Deployment')!).spec;
    const sidecar = sidecarOf(spec)!.container;
    const data = objs.map((o) => (o as { data?: Record<string, string> }).data).find((d) => d?.['config.yaml'] !== undefined);
    const broker = SidecarConfigSchema.parse(parseYaml(data?.['config.yaml'] ?? '')).broker;
    for (const file of [broker.clientCertFile, broker.clientKeyFile, broker.caFile]) {
      const on = volumeForPath(spec, sidecar, file!);
      t.equal(on?.volume.secret?.secretName, 'broker-client-tls', `${file} is in the TLS Secret`);
      t.equal(on?.mount.subPath, undefined, 'mounted without subPath, so renewals reach the sidecar');
      t.equal(on?.mount.readOnly, true);
      t.equal(on?.volume.secret?.defaultMode, 0o440, 'its private key is not world-readable (sidecar.secretFileMode)');
    }
    t.equal(helm.template({ set: [...set, 'broker.tls.caKey='] }).stdout.includes('caFile'), false, 'caKey "" trusts the system CAs only');
    const plain = helm.template({ set: ['broker.url=http://agentwrit-broker:8080', 'broker.tls.secretName=broker-client-tls'] });
    t.not(plain.status, 0);
    t.match(plain.stderr, /broker\.tls\.secretName needs an https:\/\/ broker\.url or broker\.jwksUrl/);
    const jwksOnly = helm.template({
      set: ['broker.verify=offline', 'broker.jwksUrl=https://agentwrit-broker.agentwrit.svc:8443/.well-known/jwks.json', 'broker.tls.secretName=broker-client-tls'],
    });
    t.equal(jwksOnly.status, 0, 'an https JWKS URL alone is enough: the TLS files apply to it', { stderr: jwksOnly.stderr });
    const jwksData = parseManifests(jwksOnly.stdout)
      .map((o) => (o as { data?: Record<string, string> }).data)
      .find((d) => d?.['config.yaml'] !== undefined);
    t.match(SidecarConfigSchema.parse(parseYaml(jwksData?.['config.yaml'] ?? '')).broker, { clientCertFile: /tls\.crt$/, caFile: /ca\.crt$/ });
  });
}

interface UserValues {
  workload?: { enabled?: boolean; kind?: string };
  sidecar?: { nativeSidecar?: string | boolean; ports?: { admin?: number; proxy?: number } };
  monitors?: { podAnnotations?: boolean; serviceMonitor?: { enabled?: boolean }; podMonitor?: { enabled?: boolean } };
  broker?: { url?: string };
  secrets?: { name: string; mountAs: string }[];
  policies?: { existingConfigMap?: string };
}

const COMMON_LABELS = ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/version', 'app.kubernetes.io/managed-by', 'app.kubernetes.io/part-of', 'helm.sh/chart'];

function checkInvariants(t: Test, objs: K8sObject[], ctx: { userValues: UserValues; kubeVersion: string; withApi: boolean; text: string }): void {
  const v = ctx.userValues;
  const kinds = objs.map((o) => o.kind);
  for (const o of objs) t.same(COMMON_LABELS.filter((l) => !o.metadata.labels?.[l]), [], `${o.kind}/${o.metadata.name} has the app.kubernetes.io labels`);

  // Secrets only by reference: nothing the chart renders carries secret material.
  t.notOk(kinds.includes('Secret'), 'no Secret object is rendered');
  t.notMatch(ctx.text, /PRIVATE KEY/, 'no private key in the manifests');

  const monitorsWanted = { ServiceMonitor: !!v.monitors?.serviceMonitor?.enabled, PodMonitor: !!v.monitors?.podMonitor?.enabled };
  for (const kind of ['ServiceMonitor', 'PodMonitor'] as const) {
    t.equal(kinds.includes(kind), ctx.withApi && monitorsWanted[kind], `${kind} rendered only when enabled and the API exists`);
  }
  t.equal(kinds.includes('Service'), ctx.withApi && monitorsWanted.ServiceMonitor, 'metrics Service goes with the ServiceMonitor');
  for (const m of objs.filter((o) => o.kind === 'ServiceMonitor' || o.kind === 'PodMonitor')) {
    const spec = m.spec as { endpoints?: { port: string }[]; podMetricsEndpoints?: { port: string }[]; selector: { matchLabels: Record<string, string> } };
    t.equal((spec.endpoints ?? spec.podMetricsEndpoints)![0].port, 'http-metrics', `${m.kind} scrapes the http-metrics port`);
    t.ok(spec.selector.matchLabels['agentwrit-sidecar/instance'], `${m.kind} selects pods by the sidecar instance label`);
  }

  const configMaps = objs.filter((o) => o.kind === 'ConfigMap');
  const configCm = configMaps.find((o) => o.metadata.name.endsWith('-config'));
  t.ok(configCm, 'config ConfigMap rendered');
  const configText = ((configCm?.data ?? {}) as Record<string, string>)['config.yaml'];
  const config = SidecarConfigSchema.safeParse(parseYaml(configText));
  t.ok(config.success, 'config.yaml is accepted by the sidecar schema', { issues: config.error?.issues });
  const policiesCm = configMaps.find((o) => o.metadata.name.endsWith('-policies'));
  t.equal(!!policiesCm, !v.policies?.existingConfigMap, 'policies ConfigMap rendered unless an existing one is named');
  const policies = Object.entries((policiesCm?.data as Record<string, string> | undefined) ?? {}).map(([name, text]) => {
    const p = PolicyFileSchema.safeParse(parseYaml(text));
    t.ok(p.success, `policy ${name} is accepted by the policy schema`, { issues: p.error?.issues });
    return p.data;
  });

  const workloads = objs.filter((o) => WORKLOAD_KINDS.has(o.kind));
  t.equal(workloads.length, v.workload?.enabled === false ? 0 : 1, 'one workload unless disabled');
  for (const w of workloads) {
    t.equal(w.kind, v.workload?.kind ?? 'Deployment', 'workload kind');
    const tpl = podTemplateOf(w);
    const spec = tpl.spec;
    const mode = String(v.sidecar?.nativeSidecar ?? 'auto');
    const wantNative = mode === 'true' || (mode === 'auto' && ctx.kubeVersion >= '1.29');
    const sc = sidecarOf(spec);
    if (!sc) {
      t.fail('sidecar container present');
      continue;
    }
    const { container: sidecar, native } = sc;
    t.equal(native, wantNative, `native sidecar ${wantNative} for nativeSidecar=${mode} on ${ctx.kubeVersion}`);
    if (native) t.equal(sidecar.restartPolicy, 'Always', 'native sidecar has restartPolicy Always');
    else {
      t.equal(sidecar.restartPolicy, undefined, 'regular container has no restartPolicy');
      t.equal(spec.containers[0].name, sidecar.name, 'regular sidecar is the first container (holds the agent until ready)');
      t.ok(sidecar.lifecycle?.postStart?.exec?.command.join(' ').includes('/readyz'), 'postStart waits for /readyz');
    }
    t.same(sidecar.args, ['serve', '--config', '/etc/agentwrit-sidecar/config.yaml'], 'sidecar serves the mounted config');

    const adminPort = v.sidecar?.ports?.admin ?? 15100;
    t.same(sidecar.ports, [{ name: 'http-metrics', containerPort: adminPort, protocol: 'TCP' }], 'admin port named http-metrics');
    t.same(sidecar.startupProbe?.httpGet, { path: '/readyz', port: 'http-metrics' }, 'startup probe on /readyz');
    t.same(sidecar.livenessProbe?.httpGet, { path: '/healthz', port: 'http-metrics' }, 'liveness probe on /healthz');
    t.same(sidecar.readinessProbe?.httpGet, { path: '/readyz', port: 'http-metrics' }, 'readiness probe on /readyz');
    t.ok(sidecar.resources?.requests?.cpu && sidecar.resources?.requests?.memory && sidecar.resources?.limits?.memory, 'sidecar resources set');
    const sec = sidecar.securityContext;
    t.equal(sec?.runAsNonRoot, true, 'runAsNonRoot');
    t.ok(Number.isInteger(sec?.runAsUser) && (sec?.runAsUser ?? 0) > 0, 'numeric non-root runAsUser');
    t.equal(sec?.readOnlyRootFilesystem, true, 'read-only root filesystem');
    t.equal(sec?.allowPrivilegeEscalation, false, 'no privilege escalation');
    t.same(sec?.capabilities?.drop, ['ALL'], 'all capabilities dropped');
    t.equal(sec?.seccompProfile?.type, 'RuntimeDefault', 'seccomp RuntimeDefault');
    t.equal(spec.securityContext?.seccompProfile?.type, 'RuntimeDefault', 'pod seccomp RuntimeDefault');
    // The kubelet refuses runAsNonRoot for an image whose user is a name (curlimages/curl's is
    // curl_user) unless a numeric runAsUser says who runs it.
    for (const c of allContainers(spec)) {
      if (c.securityContext?.runAsNonRoot ?? spec.securityContext?.runAsNonRoot) {
        const uid = c.securityContext?.runAsUser ?? spec.securityContext?.runAsUser;
        t.ok(Number.isInteger(uid) && (uid ?? 0) > 0, `${c.name}: runAsNonRoot comes with a numeric non-root runAsUser`);
      }
    }

    const ann = tpl.metadata.annotations ?? {};
    if (v.monitors?.podAnnotations === false) t.notOk(ann['prometheus.io/scrape'], 'no prometheus.io annotations when off');
    else t.same([ann['prometheus.io/scrape'], ann['prometheus.io/port'], ann['prometheus.io/path']], ['true', String(adminPort), '/metrics'], 'prometheus.io annotations');
    t.ok(tpl.metadata.labels?.['agentwrit-sidecar/instance'], 'pod carries the instance label monitors select');

    checkMountsResolve(t, spec);
    checkAgentWiring(t, spec, v, policies.flatMap((p) => [...(p?.routes ?? []).map((r) => r.host), ...(p?.passThrough ?? []).map((p) => p.host)]).filter((h): h is string => !!h));
    if (config.success) checkConfigMatchesLayout(t, spec, config.data, policies, v);
  }
}

function checkMountsResolve(t: Test, spec: PodSpec): void {
  const volumes = new Set((spec.volumes ?? []).map((v) => v.name));
  for (const c of allContainers(spec)) {
    for (const m of c.volumeMounts ?? []) t.ok(volumes.has(m.name), `${c.name}: volumeMount ${m.name} has a volume`);
  }
}

function checkAgentWiring(t: Test, spec: PodSpec, v: UserValues, governedHosts: string[]): void {
  const agent = spec.containers.find((c) => c.name !== 'agentwrit-sidecar');
  if (!agent) return void t.fail('agent container present');
  const env = envOf(agent);
  const proxy = `http://127.0.0.1:${v.sidecar?.ports?.proxy ?? 15101}`;
  for (const name of ['HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy']) t.equal(env.get(name)?.value, proxy, `${name} points at the loopback proxy without a token`);
  t.equal(env.get('SSL_CERT_FILE')?.value, '/var/run/agentwrit/ca/ca-bundle.crt', 'SSL_CERT_FILE -> bundle');
  t.equal(env.get('REQUESTS_CA_BUNDLE')?.value, '/var/run/agentwrit/ca/ca-bundle.crt', 'REQUESTS_CA_BUNDLE -> bundle');
  t.equal(env.get('CURL_CA_BUNDLE')?.value, '/var/run/agentwrit/ca/ca-bundle.crt', 'CURL_CA_BUNDLE -> bundle');
  t.equal(env.get('NODE_EXTRA_CA_CERTS')?.value, '/var/run/agentwrit/ca/ca.crt', 'NODE_EXTRA_CA_CERTS -> CA certificate only');
  const noProxy = (env.get('NO_PROXY')?.value ?? '').split(',');
  t.equal(env.get('no_proxy')?.value, env.get('NO_PROXY')?.value, 'no_proxy equals NO_PROXY');
  for (const e of ['.svc', '.cluster.local', 'kubernetes.default.svc', '$(KUBERNETES_SERVICE_HOST)', 'localhost', '127.0.0.1']) t.ok(noProxy.includes(e), `NO_PROXY has ${e}`);
  if (v.broker?.url) t.ok(noProxy.includes(new URL(v.broker.url).hostname), 'NO_PROXY has the broker host');
  for (const host of governedHosts) {
    const h = host.replace(/^\*\./, '');
    const covering = noProxy.filter((e) => {
      const n = e.replace(/^\*?\.?/, '');
      return e === '*' || h === n || h.endsWith(`.${n}`);
    });
    t.same(covering, [], `NO_PROXY does not cover governed host ${host}`);
  }
  const caMount = agent.volumeMounts?.find((m) => m.mountPath === '/var/run/agentwrit/ca');
  t.equal(caMount?.readOnly, true, 'agent mounts the CA directory read-only');
  t.ok(spec.volumes?.find((vol) => vol.name === caMount?.name)?.emptyDir, 'CA directory is an emptyDir');
  t.notOk(agent.volumeMounts?.some((m) => m.mountPath.startsWith('/var/run/agentwrit/secrets') || m.mountPath.startsWith('/etc/agentwrit-sidecar')), 'agent mounts no connector secret, CA key or config');
}

type Config = ReturnType<typeof SidecarConfigSchema.parse>;
type Policy = ReturnType<typeof PolicyFileSchema.parse> | undefined;

/** Every path config.yaml and the policies name is on a volume of the right kind in the sidecar container. */
function checkConfigMatchesLayout(t: Test, spec: PodSpec, config: Config, policies: Policy[], v: UserValues): void {
  const sidecar = sidecarOf(spec)!.container;
  const on = (path: string) => volumeForPath(spec, sidecar, path);
  t.equal(on(config.policies[0])?.volume.configMap?.name.endsWith('-policies') || !!v.policies?.existingConfigMap, true, 'policies directory is the policies ConfigMap');
  t.equal(on(config.policies[0])?.mount.subPath, undefined, 'policies mounted without subPath (updates reach the sidecar)');
  t.ok(on(config.tls.caCertOut!)?.volume.emptyDir && !on(config.tls.caCertOut!)?.mount.readOnly, 'CA certificate written to the shared emptyDir');
  t.ok(on(config.tls.bundleOut!)?.volume.emptyDir, 'CA bundle written to the shared emptyDir');
  if (config.tls.caDir) t.ok(on(`${config.tls.caDir}/ca.key`)?.volume.secret, 'CA key from a Secret');
  if (config.broker.publicKeyFile) {
    const vol = on(config.broker.publicKeyFile)?.volume;
    t.ok(vol?.secret || vol?.configMap, 'broker public key from a Secret or ConfigMap');
  }
  if (config.audit.path !== '-') t.ok(on(config.audit.path) && !on(config.audit.path)?.mount.readOnly, 'audit log on a writable volume');
  t.ok(config.proxy.listen.startsWith('127.0.0.1:'), 'proxy listens on loopback only');
  t.ok(config.admin.listen.startsWith('0.0.0.0:'), 'admin listens on the pod IP for probes and Prometheus');
  const secretNames = new Set((v.secrets ?? []).map((s) => s.name));
  for (const p of policies) {
    for (const c of p?.connectors ?? []) {
      const sources = 'basic' in c ? [c.basic.username, c.basic.password] : [c.secret];
      for (const s of sources) {
        if ('file' in s) t.ok(secretNames.has(on(s.file)?.volume.secret?.secretName ?? ''), `connector ${c.name} reads ${s.file} from a referenced Secret`);
        else t.ok(envOf(sidecar).get(s.env)?.valueFrom?.secretKeyRef, `connector ${c.name} env ${s.env} comes from a Secret`);
      }
    }
  }
}
