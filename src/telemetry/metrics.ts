/**
 * Prometheus metrics. Labels carry only bounded, non-sensitive values: route ids, decisions, error
 * codes, verification sources. Never a token, subject, task id or raw path (unbounded and sensitive).
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { VerifierObserver } from '../auth/types.js';
import { type CounterSeries, type HistogramSeries, HotCounter, HotHistogram } from './hot.js';

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class Metrics {
  readonly registry = new Registry();
  readonly requests = new HotCounter(
    'agentwrit_sidecar_requests_total',
    'Requests handled by the proxy, by route, decision and error code.',
    ['route', 'decision', 'code'],
    this.registry,
  );
  readonly requestDuration = new HotHistogram(
    'agentwrit_sidecar_request_duration_seconds',
    'Time from request head to the end of the response, by route and decision.',
    ['route', 'decision'],
    LATENCY_BUCKETS,
    this.registry,
  );
  readonly upstreamDuration = new HotHistogram(
    'agentwrit_sidecar_upstream_duration_seconds',
    'Time from sending the request upstream to receiving the response head, by route.',
    ['route'],
    LATENCY_BUCKETS,
    this.registry,
  );
  readonly tokenVerifications = new HotCounter(
    'agentwrit_sidecar_token_verifications_total',
    'Token verifications by outcome and source (cache, offline, online).',
    ['outcome', 'source'],
    this.registry,
  );
  readonly brokerRevalidationDuration = new Histogram({
    name: 'agentwrit_sidecar_broker_revalidation_duration_seconds',
    help: 'Latency of calls to the broker validate endpoint, by outcome (valid, invalid, error).',
    labelNames: ['outcome'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly brokerRevalidationFailures = new Counter({
    name: 'agentwrit_sidecar_broker_revalidation_failures_total',
    help: 'Calls to the broker validate endpoint that failed (unreachable, timeout, bad answer).',
    registers: [this.registry],
  });
  readonly tokenCacheEntries = new Gauge({
    name: 'agentwrit_sidecar_token_cache_entries',
    help: 'Verified tokens held in the cache.',
    registers: [this.registry],
  });
  readonly policyReloads = new Counter({
    name: 'agentwrit_sidecar_policy_reloads_total',
    help: 'Configuration generations built, by result (success, failure).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly keyReloads = new Counter({
    name: 'agentwrit_sidecar_key_reloads_total',
    help: 'Changed broker key sets read (a replaced key file, a JWKS URL answering other keys), by result (success: new keys in service; failure: old keys kept).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly upstreamCaReloads = new Counter({
    name: 'agentwrit_sidecar_upstream_ca_reloads_total',
    help: 'Changed upstream CA files read (upstream.caFile, a route caFile), by result (success: new trust in service; failure: current trust kept).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly policyGeneration = new Gauge({
    name: 'agentwrit_sidecar_policy_generation',
    help: 'Number of the configuration generation in service.',
    registers: [this.registry],
  });
  readonly configRestartPending = new Gauge({
    name: 'agentwrit_sidecar_config_restart_pending',
    help: 'As of the last reload asked for: 1 when the sidecar configuration file differs from the configuration in service (or does not load), which only a restart applies.',
    registers: [this.registry],
  });
  readonly policyRoutes = new Gauge({
    name: 'agentwrit_sidecar_policy_routes',
    help: 'Routes in the configuration generation in service.',
    registers: [this.registry],
  });
  readonly auditQueueDepth = new Gauge({
    name: 'agentwrit_sidecar_audit_queue_depth',
    help: 'Audit records waiting to be written.',
    registers: [this.registry],
  });
  readonly auditWriteErrors = new Counter({
    name: 'agentwrit_sidecar_audit_write_errors_total',
    help: 'Failed writes of audit records.',
    registers: [this.registry],
  });
  readonly auditRecordsLost = new Counter({
    name: 'agentwrit_sidecar_audit_records_lost_total',
    help: 'Audit records that will never be written: refusals while the log failed (onFailure closed), records beyond audit.maxQueue (open), records still unwritten at shutdown or when another writer took the log.',
    registers: [this.registry],
  });
  /** Requests between head and the response's close, counted by the server; the gauge reads it at scrape time. */
  readonly connectionsDropped = new Counter({
    name: 'agentwrit_sidecar_connections_dropped_total',
    help: 'Agent connections closed on arrival because proxy.maxConnections were open.',
    registers: [this.registry],
  });
  inflightRequests = 0;
  readonly inflight: Gauge = new Gauge({
    name: 'agentwrit_sidecar_inflight_requests',
    help: 'Requests being handled right now.',
    registers: [this.registry],
    collect: (): void => this.inflight.set(this.inflightRequests),
  });
  readonly tunnels = new Counter({
    name: 'agentwrit_sidecar_tunnels_total',
    help: 'CONNECT tunnels by outcome (intercepted, passed_through, refused).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly activeTunnels = new Gauge({
    name: 'agentwrit_sidecar_active_tunnels',
    help: 'CONNECT tunnels open right now.',
    registers: [this.registry],
  });
  readonly leafMinted = new Counter({
    name: 'agentwrit_sidecar_leaf_certificates_minted_total',
    help: 'TLS leaf certificates minted for intercepted hosts.',
    registers: [this.registry],
  });
  readonly leafMintDuration = new Histogram({
    name: 'agentwrit_sidecar_leaf_mint_duration_seconds',
    help: 'Time to mint one TLS leaf certificate.',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
    registers: [this.registry],
  });

  /** Series per (route, decision, code), resolved once; bounded by routes × codes, both finite per configuration. */
  private readonly requestSeries = new Map<string, { count: CounterSeries; duration: HistogramSeries; upstream: HistogramSeries }>();

  recordRequest(route: string, decision: 'allow' | 'deny', code: string, seconds: number, upstreamSeconds?: number): void {
    const key = `${route}\0${decision}\0${code}`;
    let c = this.requestSeries.get(key);
    if (!c) {
      c = {
        count: this.requests.child(route, decision, code),
        duration: this.requestDuration.child(route, decision),
        upstream: this.upstreamDuration.child(route),
      };
      this.requestSeries.set(key, c);
    }
    c.count.value++;
    c.duration.observe(seconds);
    if (upstreamSeconds !== undefined) c.upstream.observe(upstreamSeconds);
  }

  /**
   * Drops the per-route series of routes not in `routes` (plus 'none', requests no route matched),
   * so a policy that changes over time does not grow the exposition without end.
   */
  retainRoutes(routes: ReadonlySet<string>): void {
    const keep = (route: string) => route === 'none' || routes.has(route);
    this.requests.retain('route', keep);
    this.requestDuration.retain('route', keep);
    this.upstreamDuration.retain('route', keep);
    for (const key of this.requestSeries.keys()) if (!keep(key.slice(0, key.indexOf('\0')))) this.requestSeries.delete(key);
  }

  constructor(opts: { processMetrics?: boolean } = {}) {
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  verifierObserver(): VerifierObserver {
    return {
      verification: (outcome, source) => {
        this.tokenVerifications.child(outcome, source).value++;
      },
      revalidation: (seconds, outcome) => {
        this.brokerRevalidationDuration.observe({ outcome }, seconds);
        if (outcome === 'error') this.brokerRevalidationFailures.inc();
      },
      keyReload: (result) => {
        this.keyReloads.inc({ result });
      },
    };
  }
}
