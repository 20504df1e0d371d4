import type { AuditSink } from '../audit/types.js';
import type { TokenVerifier } from '../auth/types.js';
import type { SidecarConfig } from '../config/schema.js';
import type { ConnectorRegistry } from '../connectors/registry.js';
import type { CompiledPolicy } from '../policy/compile.js';
import type { Logger } from '../telemetry/logger.js';
import type { Metrics } from '../telemetry/metrics.js';
import type { OpenSplices } from '../ingress/raw-socket.js';
import type { Forwarder } from '../upstream/forwarder.js';

/** One configuration generation: built whole, swapped in by one reference assignment. */
export interface Generation {
  id: number;
  policy: CompiledPolicy;
  connectors: ConnectorRegistry;
  /** Reverse mount -> upstream origin. */
  mountUpstreams: Map<string, { scheme: 'http' | 'https'; host: string; port: number }>;
  /** The hot-path derived limits, precomputed once. */
  digest: string;
}

/** Everything the request pipeline needs; long-lived parts outlive generations. */
export interface Runtime {
  config: SidecarConfig;
  generation(): Generation | undefined;
  verifier: TokenVerifier;
  forwarder: Forwarder;
  audit: AuditSink;
  metrics: Metrics;
  logger: Logger;
  /** True once shutdown began: finish in-flight work, accept nothing new. */
  draining: boolean;
  /** Pass-through tunnels and WebSockets open right now (shutdown ends them). */
  splices: OpenSplices;
}
