/**
 * The chart's values contract: values.schema.json is generated from the sidecar's zod schemas and
 * rejects unknown keys and wrong types; values that would break the pod or bypass the sidecar fail
 * at render time with a clear message; every value is documented; secret values cannot be passed.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { parse as parseYaml } from 'yaml';
import { SidecarConfigSchema } from '../../src/config/schema.js';
import { CHART_DIR, CI_VALUES_DIR, findHelm, Helm, parseManifests, REPO_ROOT } from './lib/helm.js';
import { podTemplateOf, sidecarOf } from './lib/pod.js';
import { renderValuesSchema, VALUES_SCHEMA_PATH } from './lib/values-schema.js';

t.test('values.schema.json is the generated one (src/config/schema.ts and the chart agree)', async (t) => {
  t.equal(readFileSync(VALUES_SCHEMA_PATH, 'utf8'), renderValuesSchema(), 'regenerate: node --import @tapjs/typescript/import test/chart/lib/values-schema.ts --write');
});

t.test('versions agree: Chart.yaml appVersion, package.json, the default image tag helper', async (t) => {
  const chart = parseYaml(readFileSync(join(CHART_DIR, 'Chart.yaml'), 'utf8')) as { appVersion: string };
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
  const helpers = readFileSync(join(CHART_DIR, 'templates', '_helpers.tpl'), 'utf8');
  t.equal(chart.appVersion, pkg.version, 'appVersion = package version');
  t.match(helpers, `{{- define "agentwrit-sidecar.appVersion" -}}${chart.appVersion}{{- end }}`, 'helper carries the appVersion');
});

t.test('every value in values.yaml is documented in the chart README', async (t) => {
  const values = parseYaml(readFileSync(join(CHART_DIR, 'values.yaml'), 'utf8')) as Record<string, unknown>;
  const readme = readFileSync(join(CHART_DIR, 'README.md'), 'utf8');
  const leaves: string[] = [];
  const walk = (node: unknown, path: string) => {
    if (node && typeof node === 'object' && !Array.isArray(node) && Object.keys(node).length > 0) {
      for (const [k, v] of Object.entries(node)) walk(v, path ? `${path}.${k}` : k);
    } else leaves.push(path);
  };
  walk(values, '');
  t.ok(leaves.length > 50, 'values walked');
  t.same(
    leaves.filter((p) => !readme.includes(`| \`${p}\` |`)),
    [],
    'README table has a row for every value',
  );
});

const found = findHelm();
if ('error' in found) {
  t.fail(found.error);
} else {
  const helm = new Helm(found.path);
  t.teardown(() => helm.dispose());

  const refused = (t: Test, set: string[], pattern: RegExp, what: string, opts: { valuesFiles?: string[]; kubeVersion?: string } = {}) => {
    const r = helm.template({ set, ...opts });
    t.not(r.status, 0, `${what}: helm template fails`);
    t.match(r.stderr, pattern, `${what}: the error says why`);
    return r;
  };

  t.test('values.schema.json rejects unknown keys and wrong types', async (t) => {
    refused(t, ['bogus=1'], /Additional property bogus is not allowed/, 'unknown top-level key');
    refused(t, ['sidecar.resource.requests.cpu=1'], /Additional property resource is not allowed/, 'misspelt nested key');
    refused(t, ['config.proxy.listen=0.0.0.0:15101'], /Additional property listen is not allowed/, 'chart-owned config key');
    refused(t, ['config.logging.level=debug'], /Additional property logging is not allowed/, 'unknown sidecar config key');
    refused(t, ['sidecar.ports.admin=abc'], /sidecar.ports.admin: Invalid type/, 'string port');
    refused(t, ['workload.replicas=true'], /workload.replicas: Invalid type/, 'boolean replicas');
    refused(t, ['broker.verify=sometimes'], /broker.verify/, 'unknown verification mode');
    refused(t, ['config.audit.flushInterval=soon'], /config.audit.flushInterval/, 'bad duration');
    refused(t, ['policies.files.a\\.yaml.version=v2'], /version/, 'policy document version');
    refused(t, ['policies.files.a\\.txt.version=v1'], /a\.txt/, 'policy file name without .yaml');
    refused(t, ['sidecar.nativeSidecar=maybe'], /nativeSidecar/, 'nativeSidecar mode');
    refused(t, ['agent.image.tag='], /agent\.image\.tag/, 'an empty agent image tag (would render "repo:")');
    refused(t, ['monitors.serviceMonitor.interval=90 seconds'], /interval/, 'not a Prometheus duration');
    t.equal(helm.template({ set: ['monitors.serviceMonitor.interval=1m30s'] }).status, 0, 'a compound Prometheus duration is one');
    refused(t, ['monitors.podMonitor.interval=10s', 'monitors.podMonitor.scrapeTimeout=1m'], /monitors\.podMonitor: scrapeTimeout \(1m\) is longer than interval \(10s\)/, 'a scrape timeout longer than its interval');
    t.equal(helm.template({ set: ['monitors.serviceMonitor.interval=1m30s', 'monitors.serviceMonitor.scrapeTimeout=1m29s900ms'] }).status, 0, 'a timeout just under a compound interval');
    refused(t, ['monitors.serviceMonitor.interval=1m30s', 'monitors.serviceMonitor.scrapeTimeout=1m30s1ms'], /scrapeTimeout \(1m30s1ms\) is longer than interval \(1m30s\)/, 'and just over it');
    refused(t, ['broker.url=agentwrit-broker:8080'], /broker\.url: Does not match pattern/, 'broker URL without http(s)://');
    refused(t, ['broker.jwksUrl=ftp://broker/jwks'], /broker\.jwksUrl: Does not match pattern/, 'JWKS URL of another scheme');
  });

  t.test('secret values cannot be put into values', async (t) => {
    const sentinel = 'sk-live-SENTINEL-9f27c1d4e8';
    const attempts = [
      ['secrets[0].name=billing', 'secrets[0].mountAs=billing', `secrets[0].value=${sentinel}`],
      ['secrets[0].name=billing', 'secrets[0].mountAs=billing', `secrets[0].data.key=${sentinel}`],
      [`sidecar.secretEnv[0].name=KEY`, 'sidecar.secretEnv[0].secretName=s', 'sidecar.secretEnv[0].key=k', `sidecar.secretEnv[0].value=${sentinel}`],
      [`ca.existingSecret.key=${sentinel}`],
      [`broker.publicKey.pem=${sentinel}`],
      ['policies.files.p\\.yaml.version=v1', 'policies.files.p\\.yaml.connectors[0].name=c', 'policies.files.p\\.yaml.connectors[0].type=static', `policies.files.p\\.yaml.connectors[0].secret.value=${sentinel}`],
    ];
    for (const set of attempts) {
      const r = helm.template({ set });
      t.not(r.status, 0, `refused: ${set[set.length - 1].split('=')[0]}`);
      t.notMatch(r.stdout + r.stderr, sentinel, 'the value is not echoed');
    }
    // By reference, the Secret's name is all the chart knows and renders.
    const r = helm.template({ valuesFiles: [join(CI_VALUES_DIR, 'standalone-values.yaml')], set: ['sidecar.secretEnv[0].name=API_KEY', 'sidecar.secretEnv[0].secretName=api-credentials', 'sidecar.secretEnv[0].key=key'] });
    t.equal(r.status, 0, 'references render');
    t.match(r.stdout, /secretKeyRef:\s+name: "api-credentials"\s+key: "key"/, 'env comes from a secretKeyRef');
    t.match(r.stdout, /secretName: "billing-api-credentials"/, 'connector Secret mounted by name');
  });

  t.test('render-time refusals', async (t) => {
    const standalone = [join(CI_VALUES_DIR, 'standalone-values.yaml')];
    refused(t, ['proxyEnv.noProxy.extra[0]=.example.com'], /NO_PROXY entry "\.example\.com" covers "api\.billing\.example\.com"/, 'NO_PROXY covering a governed host', { valuesFiles: standalone });
    refused(t, ['proxyEnv.noProxy.extra[0]=api.weather.example.com'], /covers "api\.weather\.example\.com"/, 'NO_PROXY naming a governed host', { valuesFiles: standalone });
    refused(t, ['proxyEnv.noProxy.extra[0]=*'], /NO_PROXY entry "\*"/, 'NO_PROXY=*', { valuesFiles: standalone });
    refused(t, ['policies.files.svc\\.yaml.version=v1', 'policies.files.svc\\.yaml.passThrough[0].host=ledger.finance.svc.cluster.local', 'policies.files.svc\\.yaml.passThrough[0].scopes[0]=read:ledger:*'], /covers "ledger\.finance\.svc\.cluster\.local"/, 'in-cluster governed host with cluster DNS bypass on');
    // CIDR entries, as curl, Go and Python read them, against IP-literal hosts.
    const ipHost = ['policies.files.ip\\.yaml.version=v1', 'policies.files.ip\\.yaml.passThrough[0].host=10.20.30.40', 'policies.files.ip\\.yaml.passThrough[0].scopes[0]=read:ip:*'];
    refused(t, [...ipHost, 'proxyEnv.noProxy.extra[0]=10.0.0.0/8'], /NO_PROXY entry "10\.0\.0\.0\/8" covers "10\.20\.30\.40"/, 'an IPv4 CIDR holding a governed address');
    refused(t, [...ipHost, 'proxyEnv.noProxy.extra[0]=10.20.30.32/28'], /covers "10\.20\.30\.40"/, 'a narrow CIDR holding it');
    refused(t, [...ipHost, 'proxyEnv.noProxy.extra[0]=0.0.0.0/0'], /covers "10\.20\.30\.40"/, 'every address');
    const beside = helm.template({ set: [...ipHost, 'proxyEnv.noProxy.extra[0]=10.20.31.0/24', 'proxyEnv.noProxy.extra[1]=10.20.30.48/28'] });
    t.equal(beside.status, 0, 'CIDRs beside the governed address render', { stderr: beside.stderr });
    t.match(beside.stdout, /10\.20\.31\.0\/24,10\.20\.30\.48\/28"/);
    refused(t, [...ipHost, 'proxyEnv.noProxy.extra[0]=::ffff:10.0.0.0/104'], /covers "10\.20\.30\.40"/, 'an IPv4-mapped IPv6 CIDR (Go matches it)');
    refused(t, [...ipHost, 'proxyEnv.noProxy.extra[0]=::/0'], /covers "10\.20\.30\.40"/, 'every IPv6 address, IPv4 ones mapped included');
    refused(t, ['policies.files.ip6\\.yaml.version=v1', 'policies.files.ip6\\.yaml.passThrough[0].host=fd00::1', 'policies.files.ip6\\.yaml.passThrough[0].scopes[0]=read:ip:*', 'proxyEnv.noProxy.extra[0]=fd00::/8'], /covers "fd00::1"/, 'an IPv6 CIDR next to an IPv6 host is not taken on trust');
    const ok = helm.template({ set: ['proxyEnv.noProxy.clusterDNS=false', 'policies.files.svc\\.yaml.version=v1', 'policies.files.svc\\.yaml.passThrough[0].host=ledger.finance.svc.cluster.local', 'policies.files.svc\\.yaml.passThrough[0].scopes[0]=read:ledger:*'] });
    t.equal(ok.status, 0, 'in-cluster governed host renders once the cluster DNS bypass is off', { stderr: ok.stderr });
    refused(t, ['sidecar.nativeSidecar=auto'], /workload\.kind=Job needs a native sidecar/, 'Job without native sidecar on 1.28', { valuesFiles: [join(CI_VALUES_DIR, 'job-values.yaml')], kubeVersion: '1.28.0' });
    t.equal(helm.template({ set: ['sidecar.nativeSidecar=auto'], valuesFiles: [join(CI_VALUES_DIR, 'job-values.yaml')], kubeVersion: '1.29.0' }).status, 0, 'Job with auto on 1.29');
    refused(t, ['broker.verify=offline'], /broker\.verify=offline needs the broker's public key/, 'offline without key');
    refused(t, ['broker.verify=hybrid', 'broker.url=null', 'broker.publicKey.secretName=k'], /broker\.verify=hybrid needs broker\.url/, 'hybrid without url');
    refused(t, ['broker.publicKey.secretName=a', 'broker.publicKey.configMapName=b'], /not both/, 'key from two places');
    refused(t, ['policies.existingConfigMap=p', 'policies.files.a\\.yaml.version=v1'], /files or existingConfigMap/, 'two policy sources');
    refused(t, ['secrets[0].name=a', 'secrets[0].mountAs=x', 'secrets[1].name=b', 'secrets[1].mountAs=x'], /mountAs "x" is used twice/, 'duplicate mountAs');
    refused(t, ['sidecar.ports.admin=15101'], /must differ/, 'same port twice');
    refused(t, ['pdb.enabled=true', 'pdb.maxUnavailable=1'], /minAvailable or maxUnavailable, not both/, 'both PDB bounds');
    t.equal(helm.template({ set: ['pdb.enabled=true', 'pdb.minAvailable=null', 'pdb.maxUnavailable=50%'] }).status, 0, 'maxUnavailable alone renders');
    refused(t, ['config.shutdown.grace=2m'], /config\.shutdown\.grace \(2m\) must be shorter than terminationGracePeriodSeconds \(30\)/, 'a drain longer than the pod may take');
    refused(t, ['config.shutdown.grace=30'], /must be shorter than terminationGracePeriodSeconds/, 'a drain as long as the pod may take (seconds)');
    t.equal(helm.template({ set: ['config.shutdown.grace=2m', 'terminationGracePeriodSeconds=150'] }).status, 0, 'a longer drain with a longer grace period renders');
    t.equal(helm.template({ set: ['config.shutdown.grace=29500ms'] }).status, 0, 'just under renders');
    t.equal(helm.template({ set: ['config.shutdown.grace=2m', 'workload.enabled=false'] }).status, 0, "not checked against this chart's grace period when a parent chart owns the pod");
    refused(t, ['extraVolumes[0].name=agentwrit-tmp', 'extraVolumes[0].emptyDir.medium=Memory'], /extraVolumes: the name "agentwrit-tmp" is the chart's own/, 'a volume name the chart uses');
    refused(t, ['broker.publicKey.secretName=k', 'broker.publicKey.key=..'], /broker\.publicKey\.key/, 'a key Kubernetes refuses as an item path');
    t.equal(helm.template({ set: ['broker.publicKey.secretName=k', 'broker.publicKey.key=.broker.pem'] }).status, 0, 'a dot file key renders');
    refused(t, ['agent.name=agentwrit-sidecar'], /agent\.name and sidecar\.name are both "agentwrit-sidecar"/, 'one container name twice');
    refused(t, ['auditLog.existingClaim=audit', 'workload.replicas=2'], /auditLog\.existingClaim holds the audit log of one pod/, 'two replicas on one audit claim');
  });

  t.test('the admin listener binds IPv4 by default, IPv6 (and IPv4) with adminAddress "::"', async (t) => {
    const adminListen = (set: string[]) => {
      const cm = parseManifests(helm.template({ set }).stdout).find((o) => o.kind === 'ConfigMap' && 'config.yaml' in ((o.data as Record<string, string>) ?? {}));
      const config = SidecarConfigSchema.parse(parseYaml((cm?.data as Record<string, string> | undefined)?.['config.yaml'] ?? ''));
      return config.admin.listen;
    };
    t.equal(adminListen([]), '0.0.0.0:15100');
    t.equal(adminListen(['sidecar.adminAddress=::']), '[::]:15100', 'a listen address the sidecar takes');
    refused(t, ['sidecar.adminAddress=10.0.0.1'], /adminAddress/, 'another address');
  });

  t.test('a regular-container sidecar outlasts the agent by stopAfterAgentSeconds (preStop); a native one needs none', async (t) => {
    const sidecarLifecycle = (set: string[], kubeVersion: string) => {
      const objs = parseManifests(helm.template({ set, kubeVersion }).stdout);
      const spec = podTemplateOf(objs.find((o) => o.kind === 'Deployment')!).spec;
      return sidecarOf(spec)?.container.lifecycle as { preStop?: { exec: { command: string[] } }; postStart?: unknown } | undefined;
    };
    t.same(sidecarLifecycle([], '1.28.0')?.preStop?.exec.command, ['node', '-e', 'setTimeout(()=>{},5000)'], 'regular: 5 s by default');
    t.ok(sidecarLifecycle([], '1.28.0')?.postStart, 'next to the postStart hold');
    t.equal(sidecarLifecycle(['sidecar.stopAfterAgentSeconds=0'], '1.28.0')?.preStop, undefined, '0: no preStop');
    t.equal(sidecarLifecycle(['sidecar.stopAfterAgentSeconds=0', 'sidecar.holdAgentUntilReady=false'], '1.28.0'), undefined, 'no hooks at all');
    t.equal(sidecarLifecycle([], '1.30.0'), undefined, 'native: stopped after the agent by the kubelet');
    refused(t, ['sidecar.stopAfterAgentSeconds=25'], /sidecar\.stopAfterAgentSeconds \(25\) plus config\.shutdown\.grace \(10s\) must be shorter than terminationGracePeriodSeconds \(30\)/, 'hold plus drain past the grace period', { kubeVersion: '1.28.0' });
    t.equal(helm.template({ set: ['sidecar.stopAfterAgentSeconds=25'], kubeVersion: '1.30.0' }).status, 0, 'not counted for a native sidecar');
  });

  t.test('an audit log on a claim: the Deployment is replaced, not rolled (the old pod holds the log\'s lock)', async (t) => {
    const deployment = (set: string[]) => parseManifests(helm.template({ set }).stdout).find((o) => o.kind === 'Deployment') as { spec: { strategy?: { type: string } } } | undefined;
    t.same(deployment(['auditLog.existingClaim=audit'])?.spec.strategy, { type: 'Recreate' }, 'Recreate with a claim');
    t.equal(deployment([])?.spec.strategy, undefined, 'the default rolling update with an emptyDir');
    t.equal(deployment(['auditLog.existingClaim=audit', 'auditLog.stdout=true'])?.spec.strategy, undefined, 'nor when the log goes to stdout (the claim is not mounted)');
    t.equal(helm.template({ set: ['auditLog.existingClaim=audit', 'auditLog.stdout=true', 'workload.replicas=2'] }).status, 0, 'and then replicas are free');
  });
}
