/**
 * Prometheus metrics. Labels carry only bounded, non-sensitive values: route ids, decisions, error
 * codes, verification sources. Never a token, subject, task id or raw path (unbounded and sensitive).
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { VerifierObserver } from '../auth/types.js';

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class Metrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'agentwrit_sidecar_requests_total',
    help: 'Requests handled by the proxy, by route, decision and error code.',
    labelNames: ['route', 'decision', 'code'] as const,
    registers: [this.registry],
  });
  readonly requestDuration = new Histogram({
    name: 'agentwrit_sidecar_request_duration_seconds',
    help: 'Time from request head to the end of the response, by route and decision.',
    labelNames: ['route', 'decision'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly upstreamDuration = new Histogram({
    name: 'agentwrit_sidecar_upstream_duration_seconds',
    help: 'Time from sending the request upstream to receiving the response head, by route.',
    labelNames: ['route'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly tokenVerifications = new Counter({
    name: 'agentwrit_sidecar_token_verifications_total',
    help: 'Token verifications by outcome and source (cache, offline, online).',
    labelNames: ['outcome', 'source'] as const,
    registers: [this.registry],
  });
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
  readonly policyGeneration = new Gauge({
    name: 'agentwrit_sidecar_policy_generation',
    help: 'Number of the configuration generation in service.',
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
  readonly inflight = new Gauge({
    name: 'agentwrit_sidecar_inflight_requests',
    help: 'Requests being handled right now.',
    registers: [this.registry],
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

  /**
   * Labelled children per (route, decision, code), resolved once: prom-client hashes the label
   * object on every call otherwise, which costs more than the increment itself on the hot path.
   * Bounded by routes × codes, both finite per configuration.
   */
  private readonly requestChildren = new Map<string, { count: { inc(): void }; duration: { observe(v: number): void }; upstream: { observe(v: number): void } }>();

  recordRequest(route: string, decision: 'allow' | 'deny', code: string, seconds: number, upstreamSeconds?: number): void {
    const key = `${route}\0${decision}\0${code}`;
    let c = this.requestChildren.get(key);
    if (!c) {
      c = {
        count: this.requests.labels(route, decision, code),
        duration: this.requestDuration.labels(route, decision),
        upstream: this.upstreamDuration.labels(route),
      };
      this.requestChildren.set(key, c);
    }
    c.count.inc();
    c.duration.observe(seconds);
    if (upstreamSeconds !== undefined) c.upstream.observe(upstreamSeconds);
  }

  constructor(opts: { processMetrics?: boolean } = {}) {
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  verifierObserver(): VerifierObserver {
    return {
      verification: (outcome, source) => this.tokenVerifications.inc({ outcome, source }),
      revalidation: (seconds, outcome) => {
        this.brokerRevalidationDuration.observe({ outcome }, seconds);
        if (outcome === 'error') this.brokerRevalidationFailures.inc();
      },
    };
  }
}
