/**
 * The broker's Prometheus series (reference §12.4), in a registry of its own so several brokers in
 * one process (tests, `dev`) never collide with each other or with the sidecar's metrics.
 * `agentwrit_request_duration_seconds` and `agentwrit_clock_skew_total` are registered but never
 * fed, as in the real broker.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface BrokerMetrics {
  registry: Registry;
  tokensIssued: Counter<'scope'>;
  tokensRevoked: Counter<'level'>;
  registrations: Counter<'status'>;
  adminAuth: Counter<'status'>;
  launchTokensCreated: Counter;
  activeAgents: Gauge;
  auditEvents: Counter<'event_type'>;
  auditWriteDuration: Histogram;
  dbErrors: Counter<'operation'>;
  auditEventsLoaded: Gauge;
}

export function createBrokerMetrics(): BrokerMetrics {
  const registry = new Registry();
  const registers = [registry];
  const m: BrokerMetrics = {
    registry,
    tokensIssued: new Counter({ name: 'agentwrit_tokens_issued_total', help: 'Tokens issued', labelNames: ['scope'], registers }),
    tokensRevoked: new Counter({ name: 'agentwrit_tokens_revoked_total', help: 'Tokens revoked', labelNames: ['level'], registers }),
    registrations: new Counter({ name: 'agentwrit_registrations_total', help: 'Agent registrations', labelNames: ['status'], registers }),
    adminAuth: new Counter({ name: 'agentwrit_admin_auth_total', help: 'Admin authentications', labelNames: ['status'], registers }),
    launchTokensCreated: new Counter({ name: 'agentwrit_launch_tokens_created_total', help: 'Launch tokens created', registers }),
    activeAgents: new Gauge({ name: 'agentwrit_active_agents', help: 'Agents registered since start', registers }),
    auditEvents: new Counter({ name: 'agentwrit_audit_events_total', help: 'Audit events recorded', labelNames: ['event_type'], registers }),
    auditWriteDuration: new Histogram({
      name: 'agentwrit_audit_write_duration_seconds',
      help: 'State file write duration',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1],
      registers,
    }),
    dbErrors: new Counter({ name: 'agentwrit_db_errors_total', help: 'State storage errors', labelNames: ['operation'], registers }),
    auditEventsLoaded: new Gauge({ name: 'agentwrit_audit_events_loaded', help: 'Audit events loaded at startup', registers }),
  };
  new Histogram({ name: 'agentwrit_request_duration_seconds', help: 'Request duration', labelNames: ['endpoint'], registers });
  new Counter({ name: 'agentwrit_clock_skew_total', help: 'Clock skew events', registers });
  return m;
}
