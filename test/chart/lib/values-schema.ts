/**
 * Builds charts/agentwrit-sidecar/values.schema.json. The chart's own keys are declared here; the
 * sidecar settings (`config`, `broker`) and inline policy documents are generated from the zod
 * schemas in src/config/schema.ts, so the chart cannot drift from what the binary accepts.
 * Every object is closed (additionalProperties: false) except the few documented pass-through
 * Kubernetes fields (affinity, volume sources).
 *
 *   node --import @tapjs/typescript/import test/chart/lib/values-schema.ts --write
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { PolicyFileSchema, SidecarConfigSchema } from '../../../src/config/schema.js';

type Json = { [k: string]: unknown };

export const VALUES_SCHEMA_PATH = fileURLToPath(new URL('../../../charts/agentwrit-sidecar/values.schema.json', import.meta.url));

const str = (extra: Json = {}): Json => ({ type: 'string', ...extra });
const int = (extra: Json = {}): Json => ({ type: 'integer', ...extra });
const bool = (): Json => ({ type: 'boolean' });
const arr = (items: Json, extra: Json = {}): Json => ({ type: 'array', items, ...extra });
const map = (values: Json): Json => ({ type: 'object', additionalProperties: values });
function obj(properties: Record<string, Json>, required: string[] = []): Json {
  const o: Json = { type: 'object', properties, additionalProperties: false };
  if (required.length > 0) o.required = required;
  return o;
}

const dnsLabel = str({ pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$', maxLength: 63 });
const resourceName = str({ pattern: '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$', maxLength: 253 });
const envName = str({ pattern: '^[-._a-zA-Z][-._a-zA-Z0-9]*$' });
/** A ConfigMap or Secret key, also used as a volume item path: not `.` or `..`, nor starting with `..`. */
const configMapKey = str({ pattern: '^\\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$', maxLength: 253 });
const port = int({ minimum: 1, maximum: 65535 });
const quantity = { anyOf: [str({ pattern: '^[0-9.]+[a-zA-Z]*$' }), { type: 'number', minimum: 0 }] };
const intOrPercent = { anyOf: [int({ minimum: 0 }), str({ pattern: '^[0-9]+%$' })] };
/** A Prometheus duration (units largest first, each at most once: 1m30s), or empty for the operator's default. */
const promDuration = str({ pattern: '^(|0|([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$' });
const labelMap = map(str());
const resourceList = obj({ cpu: quantity, memory: quantity, 'ephemeral-storage': quantity });
const resources = obj({ requests: resourceList, limits: resourceList });
const keyRef = () => obj({ name: str(), key: str(), optional: bool() }, ['key']);
const envVar = obj(
  {
    name: envName,
    value: str(),
    valueFrom: obj({
      secretKeyRef: keyRef(),
      configMapKeyRef: keyRef(),
      fieldRef: obj({ apiVersion: str(), fieldPath: str() }, ['fieldPath']),
      resourceFieldRef: obj({ containerName: str(), resource: str(), divisor: quantity }, ['resource']),
    }),
  },
  ['name'],
);
const volumeMount = obj(
  {
    name: str(),
    mountPath: str(),
    readOnly: bool(),
    subPath: str(),
    subPathExpr: str(),
    mountPropagation: str({ enum: ['None', 'HostToContainer', 'Bidirectional'] }),
    recursiveReadOnly: str({ enum: ['Disabled', 'IfPossible', 'Enabled'] }),
  },
  ['name', 'mountPath'],
);
// A Volume has one of ~30 source types; each is an object, so a misspelt type still cannot be a scalar.
const volume: Json = { type: 'object', properties: { name: dnsLabel }, required: ['name'], additionalProperties: { type: 'object' } };
const seccompProfile = obj({ type: str({ enum: ['RuntimeDefault', 'Localhost', 'Unconfined'] }), localhostProfile: str() }, ['type']);
const containerSecurityContext = obj({
  runAsNonRoot: bool(),
  runAsUser: int({ minimum: 0 }),
  runAsGroup: int({ minimum: 0 }),
  readOnlyRootFilesystem: bool(),
  allowPrivilegeEscalation: bool(),
  privileged: bool(),
  capabilities: obj({ add: arr(str()), drop: arr(str()) }),
  seccompProfile,
});
const toleration = obj({
  key: str(),
  operator: str({ enum: ['Exists', 'Equal'] }),
  value: str(),
  effect: str({ enum: ['', 'NoSchedule', 'PreferNoSchedule', 'NoExecute'] }),
  tolerationSeconds: int(),
});
const probe = obj({
  periodSeconds: int({ minimum: 1 }),
  failureThreshold: int({ minimum: 1 }),
  timeoutSeconds: int({ minimum: 1 }),
});
const monitor = obj({ enabled: bool(), interval: promDuration, scrapeTimeout: promDuration, labels: labelMap });

/** Zod's JSON Schema minus what Helm's validator does not know (custom formats, $schema), plus the URL schemes. */
function fromZod(schema: z.ZodType): Json {
  const out = z.toJSONSchema(schema, { target: 'draft-7', io: 'input' }) as Json;
  delete out.$schema;
  const clean = (node: unknown): void => {
    if (Array.isArray(node)) node.forEach(clean);
    else if (node && typeof node === 'object') {
      const o = node as Json;
      if (o.format === 'includes' || o.format === 'starts_with') delete o.format;
      // Every URL the sidecar takes is http(s) (config/schema.ts HttpUrl), which "uri" alone does not say.
      if (o.format === 'uri') o.pattern = '^https?://';
      for (const v of Object.values(o)) clean(v);
    }
  };
  clean(out);
  return out;
}

function props(node: Json): Record<string, Json> {
  return node.properties as Record<string, Json>;
}

/** `config`: the sidecar configuration without the keys the chart derives from the pod layout. */
function configSchema(): Json {
  const cfg = fromZod(SidecarConfigSchema);
  const p = props(cfg);
  delete p.broker;
  delete p.policies;
  delete p.admin;
  delete props(p.proxy).listen;
  delete props(p.audit).path;
  for (const k of ['caDir', 'caCertOut', 'bundleOut']) delete props(p.tls)[k];
  return cfg;
}

/** `broker`: the sidecar's broker settings, with the key file replaced by a Secret/ConfigMap reference. */
function brokerSchema(): Json {
  const broker = props(fromZod(SidecarConfigSchema)).broker;
  const p = props(broker);
  delete p.publicKeyFile;
  delete p.jwksFile;
  p.publicKey = obj({ secretName: str(), configMapName: str(), key: configMapKey });
  p.tls = obj({ secretName: str(), caKey: str({ pattern: '^(|[-._a-zA-Z0-9]+)$' }) });
  return broker;
}

export function buildValuesSchema(): Json {
  const image = obj({ repository: str({ minLength: 1 }), tag: str(), digest: str({ pattern: '^(|sha256:[a-f0-9]{64})$' }), pullPolicy: str({ enum: ['Always', 'IfNotPresent', 'Never'] }) });
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'agentwrit-sidecar chart values',
    type: 'object',
    additionalProperties: false,
    properties: {
      global: { type: 'object', description: 'Global values passed down by a parent chart.' },
      nameOverride: str({ maxLength: 63 }),
      fullnameOverride: str({ maxLength: 63 }),
      image,
      imagePullSecrets: arr(obj({ name: str({ minLength: 1 }) }, ['name'])),
      workload: obj({
        enabled: bool(),
        kind: str({ enum: ['Deployment', 'Job'] }),
        replicas: int({ minimum: 0 }),
        backoffLimit: int({ minimum: 0 }),
        ttlSecondsAfterFinished: int({ minimum: 0 }),
      }),
      agent: obj({
        name: dnsLabel,
        image: obj({ repository: str({ minLength: 1 }), tag: str({ minLength: 1 }), pullPolicy: str({ enum: ['Always', 'IfNotPresent', 'Never'] }) }),
        command: arr(str()),
        args: arr(str()),
        env: arr(envVar),
        resources,
        securityContext: containerSecurityContext,
        extraVolumeMounts: arr(volumeMount),
      }),
      proxyEnv: obj({
        proxy: bool(),
        nodeUseEnvProxy: bool(),
        caBundleVars: arr(envName),
        caCertVars: arr(envName),
        noProxy: obj({
          clusterDomain: str({ pattern: '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$' }),
          clusterDNS: bool(),
          kubernetesAPI: bool(),
          broker: bool(),
          loopback: bool(),
          extra: arr(str({ pattern: '^[^,\\s]+$' })),
        }),
      }),
      sidecar: obj({
        name: dnsLabel,
        nativeSidecar: { enum: ['auto', true, false, 'true', 'false'] },
        holdAgentUntilReady: bool(),
        stopAfterAgentSeconds: int({ minimum: 0 }),
        ports: obj({ proxy: port, admin: port }),
        adminAddress: str({ enum: ['0.0.0.0', '::'] }),
        resources,
        runAsUser: int({ minimum: 1 }),
        runAsGroup: int({ minimum: 1 }),
        secretFileMode: int({ minimum: 0, maximum: 511 }),
        env: arr(envVar),
        secretEnv: arr(obj({ name: envName, secretName: resourceName, key: configMapKey }, ['name', 'secretName', 'key'])),
        probes: obj({ startup: probe, liveness: probe, readiness: probe }),
        extraVolumeMounts: arr(volumeMount),
      }),
      config: configSchema(),
      broker: brokerSchema(),
      ca: obj({ existingSecret: obj({ name: str(), certKey: configMapKey, keyKey: configMapKey }) }),
      policies: obj({
        files: {
          type: 'object',
          propertyNames: { pattern: '^[A-Za-z0-9][-._A-Za-z0-9]*\\.ya?ml$', maxLength: 253 },
          additionalProperties: fromZod(PolicyFileSchema),
        },
        existingConfigMap: str(),
      }),
      secrets: arr(obj({ name: resourceName, mountAs: str({ pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$', maxLength: 40 }), optional: bool() }, ['name', 'mountAs'])),
      auditLog: obj({ stdout: bool(), sizeLimit: quantity, existingClaim: str() }),
      monitors: obj({ podAnnotations: bool(), serviceMonitor: monitor, podMonitor: monitor }),
      pdb: obj({ enabled: bool(), minAvailable: intOrPercent, maxUnavailable: intOrPercent }),
      serviceAccount: obj({ create: bool(), name: str(), annotations: labelMap, automountToken: bool() }),
      podAnnotations: labelMap,
      podLabels: labelMap,
      podSecurityContext: obj({
        runAsNonRoot: bool(),
        runAsUser: int({ minimum: 0 }),
        runAsGroup: int({ minimum: 0 }),
        fsGroup: int({ minimum: 0 }),
        fsGroupChangePolicy: str({ enum: ['OnRootMismatch', 'Always'] }),
        supplementalGroups: arr(int({ minimum: 0 })),
        seccompProfile,
      }),
      terminationGracePeriodSeconds: int({ minimum: 0 }),
      priorityClassName: str(),
      nodeSelector: labelMap,
      tolerations: arr(toleration),
      // Affinity terms are deep and rarely mistyped at the top level; their inside is passed through.
      affinity: obj({ nodeAffinity: { type: 'object' }, podAffinity: { type: 'object' }, podAntiAffinity: { type: 'object' } }),
      extraVolumes: arr(volume),
    },
  };
}

export function renderValuesSchema(): string {
  return `${JSON.stringify(buildValuesSchema(), null, 2)}\n`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  if (process.argv.includes('--write')) writeFileSync(VALUES_SCHEMA_PATH, renderValuesSchema());
  else process.stdout.write(readFileSync(VALUES_SCHEMA_PATH, 'utf8') === renderValuesSchema() ? 'up to date\n' : 'stale: run with --write\n');
}
