/**
 * The record stage: one audit record, one metrics update and one log line per decision. Only
 * identifiers go in (route id, path template, scopes, subject) — never a token or a credential.
 */
import type { AuditEvent } from '../audit/types.js';
import type { AgentIdentity } from '../auth/types.js';
import type { Runtime } from '../runtime/types.js';
import { logRequest } from '../telemetry/logger.js';
import type { RequestState } from './handler.js';

/** Who made the request, as audit fields: identifiers only. */
export function identityFields(id: AgentIdentity | undefined): Pick<AuditEvent, 'sub' | 'jti' | 'task_id' | 'orch_id' | 'deleg_depth' | 'chain_root'> {
  return {
    sub: id?.sub,
    jti: id?.jti,
    task_id: id?.taskId,
    orch_id: id?.orchId,
    deleg_depth: id?.delegationDepth,
    chain_root: id?.chainRoot,
  };
}

let isoMs = 0;
let isoText = '';
/** ISO time of now; at thousands of records a second most share a millisecond, so reuse the text. */
export function isoNow(): string {
  const ms = Date.now();
  if (ms !== isoMs) {
    isoMs = ms;
    isoText = new Date(ms).toISOString();
  }
  return isoText;
}

export function recordDecision(rt: Runtime, st: RequestState): void {
  const seconds = Number(process.hrtime.bigint() - st.started) / 1e9;
  const decision = st.error ? 'deny' : 'allow';
  const routeId = st.match?.route.id ?? 'none';
  const code = st.error?.code ?? 'ok';
  const id = st.identity;
  const canon = st.canon;
  const time = isoNow();
  const ms = Math.round(seconds * 1e6) / 1e3;
  const event: AuditEvent = {
    type: 'request',
    time,
    request_id: st.requestId,
    tunnel_id: st.tunnelId,
    ...identityFields(id),
    route: st.match?.route.id,
    method: canon?.method,
    host: canon?.host,
    path_template: st.match?.route.pathTemplate,
    raw_path: rt.config.audit.recordRawPath ? canon?.path : undefined,
    scopes: st.match?.requiredScopes,
    decision,
    error_code: st.error?.code,
    connector: st.match?.route.connector,
    upstream_status: st.upstreamStatus,
    duration_ms: ms,
  };
  // A failing sink is counted by the sink itself; the next requests are refused in closed mode.
  rt.audit.append(event, st.admitted === true);
  rt.metrics.recordRequest(routeId, decision, code, seconds, st.upstreamSeconds);
  if (!rt.logger.isLevelEnabled('info')) return; // no fields object when the line is not written
  logRequest(
    rt.logger,
    {
      request_id: st.requestId,
      tunnel_id: st.tunnelId,
      decision,
      code,
      route: st.match?.route.id,
      method: canon?.method,
      host: canon?.host,
      path_template: st.match?.route.pathTemplate,
      sub: id?.sub,
      task_id: id?.taskId,
      status: st.error ? st.error.status : st.upstreamStatus,
      ms,
    },
    time,
  );
}
