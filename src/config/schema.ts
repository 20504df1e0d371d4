/**
 * The wire schema of the sidecar configuration and of policy files. This is the one contract the
 * loader, `policy check`, the Helm chart's values.schema.json and the docs are built from.
 * Unknown keys are errors everywhere (strictObject). Defaults live here, next to their keys.
 */
import { z } from 'zod';
import { headerCannotCarry } from '../header-text.js';

/** Longest delay a Node.js timer takes (2^31-1 ms, about 24.8 days): a longer one fires after 1 ms. */
export const MAX_DURATION_MS = 2_147_483_647;

/** Milliseconds of a duration; NaN for a value that is not one (zod runs refinements on those too: they let NaN pass). */
function msOf(d: unknown): number {
  if (typeof d === 'number') return d * 1000;
  const m = typeof d === 'string' ? /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(d) : null;
  if (!m) return Number.NaN;
  const n = Number(m[1]);
  const unit = m[2];
  return unit === 'ms' ? n : unit === 's' ? n * 1000 : unit === 'm' ? n * 60_000 : n * 3_600_000;
}

/** "250ms", "2s", "1m", "1h" or a bare number of seconds; at most MAX_DURATION_MS. */
export const Duration = z
  .union([z.number().nonnegative(), z.string().regex(/^\d+(\.\d+)?(ms|s|m|h)$/, 'expected a duration such as 500ms, 2s, 1m or 1h')])
  .refine((d) => !(msOf(d) > MAX_DURATION_MS), `must be at most ${MAX_DURATION_MS}ms (about 24.8 days), the longest a timer can wait`);
export type DurationInput = z.infer<typeof Duration>;

/** An http:// or https:// URL: the only schemes the sidecar speaks to a broker or upstream. */
const HttpUrl = z
  .url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' })
  // Only the origin and path are used: a user name or password here would be dropped unseen.
  .refine((u) => !/^https?:\/\/[^/?#]*@/i.test(u), 'a URL here cannot carry a user name or password (they would not be sent); an upstream credential belongs in a connector');

/** A Duration of at least 1s (a value that is no duration gets Duration's message only). */
const DurationAtLeast1s = Duration.refine((d) => !(msOf(d) < 1000), 'must be at least 1s');
/** A Duration where 0 would not mean "no limit" but break the feature (every broker call timed out at once). */
const PositiveDuration = Duration.refine((d) => !(msOf(d) <= 0), 'must be more than 0');

export function durationMs(d: DurationInput): number {
  const ms = msOf(d);
  if (Number.isNaN(ms)) throw new Error(`bad duration ${d}`);
  return ms;
}

/** The port of "HOST:PORT" (the digits after the last ":"). */
const portOf = (s: string) => Number(s.slice(s.lastIndexOf(':') + 1));

/** "HOST:PORT"; IPv6 hosts in brackets. Port 0 asks the OS for a free port (tests). */
export const ListenAddress = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, { message: 'expected HOST:PORT, e.g. 127.0.0.1:15101', abort: true })
  .refine((s) => portOf(s) <= 65535, 'the port must be at most 65535');

/** "HOST:PORT" of an upstream (upstream.connectTo). */
const UpstreamAddress = (pattern: RegExp) =>
  z
    .string()
    .regex(pattern, { message: 'expected HOST:PORT', abort: true })
    .refine((s) => portOf(s) >= 1 && portOf(s) <= 65535, 'the port must be 1 to 65535');

/** A secret is never written in a file we load: it is named by where it lives. */
export const SecretSource = z.union([
  z.strictObject({ env: z.string().min(1) }),
  z.strictObject({ file: z.string().min(1) }),
]);
export type SecretSourceInput = z.infer<typeof SecretSource>;

export const DEFAULT_PROXY_LISTEN = '127.0.0.1:15101';
export const DEFAULT_ADMIN_LISTEN = '127.0.0.1:15100';

export const SidecarConfigSchema = z.strictObject({
  proxy: z
    .strictObject({
      listen: ListenAddress.default(DEFAULT_PROXY_LISTEN),
      /** Largest request body forwarded upstream, in bytes. */
      maxRequestBodyBytes: z.number().int().positive().default(10 * 1024 * 1024),
      /** Largest total size of request headers, in bytes. */
      maxHeaderBytes: z
        .number()
        .int()
        .positive()
        .max(1024 * 1024)
        .default(32 * 1024),
      /** Idle keep-alive timeout for agent connections. */
      keepAliveTimeout: Duration.default('5s'),
      /** Time allowed to receive a whole request head. */
      headersTimeout: DurationAtLeast1s.default('10s'),
      /** Agent connections open at once (tunnels included); more are closed as they arrive. */
      maxConnections: z.number().int().positive().default(4096),
      /** Longest pause in a request body on its way upstream (the agent sending, or the upstream taking, nothing). */
      requestBodyTimeout: DurationAtLeast1s.default('30s'),
      /**
       * Longest an agent may leave a response unread while its connection is full (0: no limit).
       * Generous: an agent's progress shows only as its kernel buffers (up to a few MB) free up.
       */
      responseReadTimeout: Duration.default('5m'),
    })
    .prefault({}),
  admin: z.strictObject({ listen: ListenAddress.default(DEFAULT_ADMIN_LISTEN) }).prefault({}),
  broker: z
    .strictObject({
      /** Base URL of the AgentWrit broker; env AGENTWRIT_BROKER_URL overrides. */
      url: HttpUrl.optional(),
      /** offline: local signature check only; online: ask the broker every time (cached for revalidateAfter); hybrid: both. */
      verify: z.enum(['offline', 'online', 'hybrid']).optional(),
      /** Ed25519 public key of the broker, PEM (SPKI). */
      publicKeyFile: z.string().min(1).optional(),
      /** JWKS document on disk (alternative to publicKeyFile). */
      jwksFile: z.string().min(1).optional(),
      /** JWKS URL (alternative to publicKeyFile), e.g. the embedded broker's /.well-known/jwks.json. */
      jwksUrl: HttpUrl.optional(),
      /** jwksUrl: fetched again this often; a changed key set drops the cached verifications. */
      jwksRefresh: DurationAtLeast1s.default('60s'),
      /** In online/hybrid mode, a positive broker answer is trusted for this long. */
      revalidateAfter: Duration.default('2s'),
      /** Timeout of one call to the broker's validate endpoint. */
      timeout: PositiveDuration.default('2s'),
      /** Required `iss` claim, when set. */
      issuer: z.string().optional(),
      /** Required `aud` entry, when set (the broker's validate endpoint does not check it). */
      audience: z.string().optional(),
      /** Clock-skew leeway for exp/nbf; the broker itself uses none. */
      leeway: Duration.default(0),
      /** Upper bound on verified tokens kept in memory. */
      cacheSize: z.number().int().positive().default(10_000),
      /** When the key is known, check chain_hash and every delegation record signature. */
      verifyDelegationChain: z.boolean().default(true),
      /** https broker.url or jwksUrl: CA certificates (PEM) trusted besides the system ones (a broker with AA_TLS_MODE tls/mtls). */
      caFile: z.string().min(1).optional(),
      /** Client certificate chain (PEM) presented to a broker with AA_TLS_MODE=mtls; needs clientKeyFile. */
      clientCertFile: z.string().min(1).optional(),
      /** Private key (PEM) of clientCertFile. */
      clientKeyFile: z.string().min(1).optional(),
    })
    .prefault({}),
  /** Policy files or directories (every *.yaml / *.yml inside, not recursive). */
  policies: z.array(z.string().min(1)).min(1).default(['./policies']),
  audit: z
    .strictObject({
      /** JSON Lines file; "-" writes to stdout. */
      path: z.string().min(1).default('./audit.jsonl'),
      /** closed: refuse requests (503) while the audit file cannot be written; open: serve and count the loss. */
      onFailure: z.enum(['closed', 'open']).default('closed'),
      /** Record the raw request path in addition to the route's path template. */
      recordRawPath: z.boolean().default(false),
      /** Longest time a record waits in memory before it is written. */
      flushInterval: Duration.default('50ms'),
      /** Records held in memory at most; beyond this the sink counts as failing. */
      maxQueue: z.number().int().positive().default(10_000),
      /** Start a new file when the current one holds this many bytes (0: never); see sink.ts. */
      rotateBytes: z.number().int().nonnegative().default(0),
      /** Rotated files kept beside the current one (PATH.1 … PATH.N); older ones are deleted. */
      rotateKeep: z.number().int().positive().default(5),
    })
    .refine((a) => a.path !== '-' || a.rotateBytes === 0, { message: 'audit.rotateBytes needs a file path: standard output ("-") is not rotated', path: ['rotateBytes'] })
    .prefault({}),
  upstream: z
    .strictObject({
      /** "host:port" -> "host:port": connect there instead of resolving (TLS still checks the original name). */
      connectTo: z.record(UpstreamAddress(/^[^:\s]+:\d{1,5}$/), UpstreamAddress(/^[^\s]+:\d{1,5}$/)).default({}),
      /** Extra PEM CA bundle trusted for upstream TLS, in addition to the system CAs. */
      caFile: z.string().min(1).optional(),
      connectTimeout: Duration.default('5s'),
      /** Time to wait for the upstream's response head. */
      headersTimeout: Duration.default('30s'),
      /** Longest pause between two body chunks from the upstream. */
      bodyTimeout: Duration.default('60s'),
      /** Keep-alive connections kept per upstream origin. */
      connectionsPerOrigin: z.number().int().positive().default(64),
    })
    .prefault({}),
  tls: z
    .strictObject({
      /** Directory holding ca.crt and ca.key (e.g. a mounted Secret). Absent: an ephemeral CA is generated at start. */
      caDir: z.string().min(1).optional(),
      /** Where the CA certificate (never the key) is written for agents. */
      caCertOut: z.string().min(1).optional(),
      /** Where system CAs + the sidecar CA are written as one bundle. */
      bundleOut: z.string().min(1).optional(),
      /** Ports CONNECT may target. */
      connectPorts: z.array(z.number().int().min(1).max(65535)).default([443]),
      /** Leaf certificate lifetime. */
      leafValidity: PositiveDuration.default('24h'),
      /** Leaf certificates kept in memory at most. */
      leafCacheSize: z.number().int().positive().default(1000),
      /** Close a tunnel idle for this long. */
      tunnelIdleTimeout: Duration.default('60s'),
    })
    .prefault({}),
  log: z
    .strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
    .prefault({}),
  shutdown: z.strictObject({ grace: Duration.default('10s') }).prefault({}),
});
export type SidecarConfigInput = z.input<typeof SidecarConfigSchema>;
export type SidecarConfig = z.output<typeof SidecarConfigSchema>;

const ConnectorName = z.string().regex(/^[a-z0-9][a-z0-9_-]*$/, 'connector names use a-z, 0-9, - and _');

export const StaticHeaderConnector = z.strictObject({
  name: ConnectorName,
  type: z.literal('static'),
  secret: SecretSource,
  /** Header to set; default Authorization. */
  header: z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'not a valid header name').default('Authorization'),
  /** Value template; ${secret} is replaced by the secret. */
  format: z
    .string()
    .includes('${secret}', { message: 'format must contain ${secret}' })
    .refine((f) => !headerCannotCarry(f), 'format holds characters a header cannot carry (control characters, or beyond Latin-1)')
    .default('${secret}'),
});
export const StaticQueryConnector = z.strictObject({
  name: ConnectorName,
  type: z.literal('static'),
  secret: SecretSource,
  /** Query parameter to set (replacing any the agent sent). */
  query: z.string().min(1),
});
export const StaticBasicConnector = z.strictObject({
  name: ConnectorName,
  type: z.literal('static'),
  basic: z.strictObject({ username: SecretSource, password: SecretSource }),
});
export const ConnectorSchema = z.union([StaticQueryConnector, StaticBasicConnector, StaticHeaderConnector]);
export type ConnectorInput = z.infer<typeof ConnectorSchema>;

const Method = z.enum(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', '*']);

export const RouteSchema = z.strictObject({
  id: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'route ids use letters, digits, ".", "_" and "-"')
    // The route label of requests no route matched, in metrics.
    .refine((id) => id !== 'none', 'route id "none" is reserved (it labels requests no route matched); choose another'),
  /** Forward-proxy routes: the upstream host, exact ("api.example.com") or a suffix ("*.example.com"). */
  host: z.string().min(1).optional(),
  /** Port of the forward-proxy host; default: 80 for http, 443 for https. */
  port: z.number().int().min(1).max(65535).optional(),
  /**
   * The scheme requests (and so the injected credential) may use to reach the host: default both
   * (http on 80, https on 443) without `port`; with `port`, http for 80, https for 443, and required
   * for any other port.
   */
  scheme: z.enum(['http', 'https']).optional(),
  /** Reverse routes: a path prefix on the proxy port ("/billing") ... */
  mount: z.string().regex(/^\/[A-Za-z0-9._~-]+(\/[A-Za-z0-9._~-]+)*$/, 'mount is a path prefix such as /billing').optional(),
  /** ... mapped to this upstream origin (http:// or https://, no path). */
  upstream: HttpUrl.optional(),
  /** Extra CA (PEM) trusted for this route's upstream TLS. */
  caFile: z.string().min(1).optional(),
  methods: z.array(Method).min(1).default(['GET', 'HEAD']),
  /** Path template: literal segments, {name} (one segment) and a final {name*} (the rest). */
  path: z.string().startsWith('/'),
  /** Every one of these must be covered by the token's scopes; {name} is filled from the path. */
  scopes: z.array(z.string().min(1)).min(1),
  connector: ConnectorName.optional(),
  /** Refuse tokens whose delegation chain is longer than this. */
  maxDelegationDepth: z.number().int().min(0).max(5).optional(),
});
export type RouteInput = z.infer<typeof RouteSchema>;

/** Hosts reached through CONNECT without interception (blind tunnel). */
export const PassThroughSchema = z.strictObject({
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).default(443),
  scopes: z.array(z.string().min(1)).min(1),
});

export const PolicyFileSchema = z.strictObject({
  version: z.literal('v1'),
  connectors: z.array(ConnectorSchema).default([]),
  routes: z.array(RouteSchema).default([]),
  passThrough: z.array(PassThroughSchema).default([]),
});
export type PolicyFileInput = z.input<typeof PolicyFileSchema>;
export type PolicyFile = z.output<typeof PolicyFileSchema>;
