/**
 * The record stage of tunnels: one audit record, one metric and one log line for every CONNECT
 * decision (type "tunnel") and for the end of every allowed tunnel or WebSocket ("tunnel_closed").
 */
import type { AuditEvent } from '../audit/types.js';
import type { AgentIdentity } from '../auth/types.js';
import type { SidecarError } from '../errors.js';
import { identityFields } from '../pipeline/record.js';
import type { Runtime } from '../runtime/types.js';

export type TunnelOutcome = 'intercepted' | 'passed_through' | 'refused' | 'websocket';

export interface TunnelEvent {
  type: 'tunnel' | 'tunnel_closed';
  requestId: string;
  /** A WebSocket inside an intercepted tunnel: the CONNECT's request id. */
  tunnelId?: string;
  outcome: TunnelOutcome;
  method?: string;
  host?: string;
  port?: number;
  identity?: AgentIdentity;
  /** Present when the tunnel was refused or cut for a policy reason (SNI mismatch). */
  error?: SidecarError;
  route?: string;
  scopes?: string[];
  closeReason?: string;
  bytesIn?: number;
  bytesOut?: number;
  durationMs?: number;
}

export function recordTunnel(rt: Runtime, ev: TunnelEvent): void {
  const id = ev.identity;
  const decision = ev.error ? 'deny' : 'allow';
  const event: AuditEvent = {
    type: ev.type,
    time: new Date().toISOString(),
    request_id: ev.requestId,
    tunnel_id: ev.tunnelId,
    ...identityFields(id),
    route: ev.route,
    method: ev.method ?? 'CONNECT',
    host: ev.host,
    port: ev.port,
    scopes: ev.scopes,
    decision,
    error_code: ev.error?.code,
    outcome: ev.outcome,
    close_reason: ev.closeReason,
    bytes_in: ev.bytesIn,
    bytes_out: ev.bytesOut,
    duration_ms: ev.durationMs,
  };
  // An allowed CONNECT passed the audit check; a tunnel's end follows one that did.
  rt.audit.append(event, decision === 'allow' || ev.type === 'tunnel_closed');
  if (ev.type === 'tunnel' && ev.outcome !== 'websocket') rt.metrics.tunnels.inc({ outcome: ev.outcome });
  rt.logger.info(
    {
      request_id: ev.requestId,
      tunnel_id: ev.tunnelId,
      decision,
      code: ev.error?.code ?? 'ok',
      outcome: ev.outcome,
      host: ev.host,
      port: ev.port,
      sub: id?.sub,
      task_id: id?.taskId,
      close_reason: ev.closeReason,
      bytes_in: ev.bytesIn,
      bytes_out: ev.bytesOut,
      ms: ev.durationMs,
    },
    ev.type === 'tunnel' ? 'tunnel' : 'tunnel closed',
  );
}

export function msSince(started: number): number {
  return Math.round((performance.now() - started) * 1000) / 1000;
}
