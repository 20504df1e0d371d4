/**
 * The request pipeline: classify → authenticate → match → authorize → credential → prepare →
 * forward → record. Every exit goes through one error mapper (respond.ts) and one record stage.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AgentIdentity } from '../auth/types.js';
import { firstUncovered } from '../auth/scope.js';
import type { OutboundRequest } from '../connectors/types.js';
import { SidecarError } from '../errors.js';
import { durationMs } from '../config/schema.js';
import { canonicalizeForward, canonicalizeOrigin, checkFraming } from '../ingress/canonical.js';
import { type TunnelContext, tunnelContextOf } from '../ingress/tunnel-context.js';
import { AGENT_CREDENTIAL_HEADERS, extractToken } from '../ingress/token.js';
import type { CanonicalRequest, RouteMatch } from '../policy/types.js';
import type { Generation, Runtime } from '../runtime/types.js';
import { type ForwardResult, stripHopByHop } from '../upstream/forwarder.js';
import { explainFailure } from '../connectors/secrets.js';
import { type ReadingRequest, startReading, stopReading } from './reading.js';
import { recordDecision } from './record.js';
import { sendProblem, toSidecarError } from './respond.js';
import { nextRequestId } from './request-id.js';

export interface RequestState {
  requestId: string;
  started: bigint;
  /** Inside an intercepted tunnel: the CONNECT's request id. */
  tunnelId?: string;
  canon?: CanonicalRequest;
  identity?: AgentIdentity;
  match?: RouteMatch;
  upstreamStatus?: number;
  upstreamSeconds?: number;
  error?: SidecarError;
  /** Past the audit check: from here on the request may reach the upstream, and its record is kept. */
  admitted?: boolean;
}

function authenticateError(kind: CanonicalRequest['kind'] | undefined, malformed: boolean): SidecarError {
  if (malformed) return new SidecarError('token_invalid', 'the presented credential is not an AgentWrit token');
  if (kind === 'forward') {
    return new SidecarError('token_required', 'send your AgentWrit token as Proxy-Authorization (Bearer, or Basic with the token as password)');
  }
  return new SidecarError('token_missing', 'send your AgentWrit token as Authorization: Bearer <token>');
}

/** Decide which scopes are missing; returns an error or undefined when authorized. */
export function authorize(identity: AgentIdentity, match: RouteMatch): SidecarError | undefined {
  if (match.scopeProblem !== undefined) {
    return new SidecarError('scope_violation', 'a value in this request cannot be used in a scope');
  }
  const max = match.route.maxDelegationDepth;
  if (max !== undefined && identity.delegationDepth > max) {
    return new SidecarError('delegation_too_deep', `token delegation depth ${identity.delegationDepth} exceeds what this request allows`);
  }
  const missing = firstUncovered(match.requiredScopes, identity.scopes);
  if (missing !== undefined) return new SidecarError('scope_violation', `token lacks required scope: ${missing}`);
  return undefined;
}

/**
 * The agent's credentials never go upstream; the request id is set anew. Nor do the fields with
 * which many upstream frameworks take another method, path or host than the request line's (the
 * request was authorized, and the credential added, for that one), nor claims of a proxy chain.
 */
const NOT_FORWARDED: ReadonlySet<string> = new Set([
  ...AGENT_CREDENTIAL_HEADERS,
  'x-request-id',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'x-original-url',
  'x-original-uri',
  'x-original-method',
  'x-rewrite-url',
  'forwarded',
]);
/**
 * CGI and WSGI servers (and what runs on them) read `X_Forwarded_Host` as they read
 * `X-Forwarded-Host` (both become HTTP_X_FORWARDED_HOST): names are compared with `_` as `-`.
 */
const notForwarded = (name: string) => {
  const n = name.includes('_') ? name.replaceAll('_', '-') : name;
  return NOT_FORWARDED.has(n) || n.startsWith('x-forwarded-');
};

function buildOutbound(req: IncomingMessage, canon: CanonicalRequest, requestId: string): OutboundRequest {
  const headers = stripHopByHop(req.headers, notForwarded);
  headers['x-request-id'] = requestId;
  return {
    method: canon.method,
    path: canon.query ? `${canon.path}?${canon.query}` : canon.path,
    headers,
    origin: { scheme: canon.scheme, host: canon.host, port: canon.port },
  };
}

function hasBody(req: IncomingMessage, max: number): boolean {
  const te = req.headers['transfer-encoding'];
  if (te !== undefined) return true;
  const cl = req.headers['content-length'];
  if (cl === undefined || cl === '0') return false;
  if (Number(cl) > max) throw new SidecarError('payload_too_large', `request body exceeds ${max} bytes`);
  return true;
}

/** What the decision stages produce: the outbound request with the credential applied. */
export interface PreparedRequest {
  out: OutboundRequest;
  match: RouteMatch;
  withBody: boolean;
}

function canonicalize(req: IncomingMessage, gen: Generation, tunnel: TunnelContext | undefined): CanonicalRequest | undefined {
  const target = req.url ?? '';
  const method = req.method ?? 'GET';
  if (tunnel?.scheme === 'http') return canonicalizePlainTunnel(method, target, req.headers, tunnel);
  if (tunnel) return canonicalizeOrigin(method, target, req.headers, { kind: 'intercepted', host: tunnel.host, port: tunnel.port });
  if (target.startsWith('/')) {
    return canonicalizeOrigin(method, target, req.headers, {
      kind: 'reverse',
      mounts: gen.policy.matcher.mounts(),
      upstreamOf: (m) => gen.mountUpstreams.get(m)!,
    });
  }
  return canonicalizeForward(method, target, req.headers);
}

/**
 * Plain HTTP inside a CONNECT tunnel (clients that tunnel http:// URLs too): read as the absolute
 * URL it stands for, so the Host header is checked against the CONNECT authority with port 80 as
 * the default, exactly as for an absolute-form request.
 */
function canonicalizePlainTunnel(method: string, target: string, headers: IncomingMessage['headers'], t: TunnelContext): CanonicalRequest {
  if (target.charCodeAt(0) !== 47) throw new SidecarError('bad_request', 'expected an origin-form request target (/path)');
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  const canon = canonicalizeForward(method, `http://${host}:${t.port}${target}`, headers);
  canon.kind = 'intercepted';
  return canon;
}

/**
 * The decision stages shared by plain requests and WebSocket upgrades: classify → authenticate →
 * match → authorize → audit check → credential. Fills `st` as it goes; throws (or rejects with) a
 * SidecarError to refuse.
 *
 * Returns synchronously when nothing needs waiting for — a token verified recently and a
 * credential at hand, the common case — and a promise otherwise: each await costs a microtask
 * turn and a promise, which a proxy pays on every request.
 */
export function prepareRequest(rt: Runtime, req: IncomingMessage, st: RequestState): PreparedRequest | Promise<PreparedRequest> {
  const gen = rt.generation();
  if (!gen || !rt.verifier.ready()) throw new SidecarError('not_ready', 'the sidecar is starting; retry shortly');
  checkFraming(req.rawHeaders);
  const expect = req.headers.expect;
  if (expect !== undefined && expect.toLowerCase() !== '100-continue') throw new SidecarError('expectation_failed', 'only Expect: 100-continue is supported');
  const tunnel = tunnelContextOf(req.socket);
  st.tunnelId = tunnel?.connectRequestId;
  const canon = canonicalize(req, gen, tunnel);
  st.canon = canon;

  const intake = extractToken(req.headers, tunnel?.token);
  if (intake.token === undefined) throw authenticateError(canon?.kind ?? 'reverse', intake.malformed);
  const hit = rt.verifier.cached(intake.token);
  if (hit) return afterVerify(rt, gen, req, st, canon, hit.identity);
  return rt.verifier.verify(intake.token).then((verified) => afterVerify(rt, gen, req, st, canon, verified.identity));
}

function afterVerify(
  rt: Runtime,
  gen: Generation,
  req: IncomingMessage,
  st: RequestState,
  canon: CanonicalRequest | undefined,
  identity: AgentIdentity,
): PreparedRequest | Promise<PreparedRequest> {
  st.identity = identity;
  // Routing happens only after authentication so an anonymous caller learns nothing of the policy.
  const match = canon ? gen.policy.matcher.match(canon) : undefined;
  if (!canon || !match) throw new SidecarError('no_route', 'no policy route allows this request');
  st.match = match;
  const denied = authorize(identity, match);
  if (denied) throw denied;

  if (rt.config.audit.onFailure === 'closed' && !rt.audit.healthy()) {
    throw new SidecarError('audit_unavailable', 'the audit log cannot be written; requests are refused until it can');
  }
  st.admitted = true;
  const withBody = hasBody(req, rt.config.proxy.maxRequestBodyBytes);
  const out = buildOutbound(req, canon, st.requestId);
  const prepared: PreparedRequest = { out, match, withBody };
  const connectorName = match.route.connector;
  if (connectorName === undefined) return prepared;
  const connector = gen.connectors.get(connectorName);
  if (!connector) throw new SidecarError('connector_unavailable', 'the credential for this request is not available');
  const ctx = { routeId: match.route.id, sub: identity.sub, taskId: identity.taskId, tokenExp: identity.exp };
  const atHand = connector.credentialNow?.(ctx);
  if (atHand) {
    connector.apply(atHand, out);
    return prepared;
  }
  return connector.getCredential(ctx).then((credential) => {
    connector.apply(credential, out);
    return prepared;
  });
}

const UPSTREAM_PROBLEMS: ReadonlySet<string> = new Set(['upstream_unreachable', 'upstream_tls_error', 'upstream_timeout', 'broker_unavailable']);

/**
 * Why an upstream or the broker failed, as the operator needs it and nothing more: the error's code
 * (ECONNREFUSED, CERT_HAS_EXPIRED, UND_ERR_HEADERS_TIMEOUT, HTTP 500) or its class (TimeoutError).
 * Never a message: those can quote what was sent or answered (a URL, a body with the token).
 */
export function failureReason(err: SidecarError): string {
  const c = err.cause as { code?: unknown; name?: unknown; cause?: unknown } | undefined;
  if (c === undefined || c === null) return 'unknown';
  if (typeof c.code === 'string') return c.code;
  const inner = c.cause as { code?: unknown } | undefined;
  if (inner && typeof inner.code === 'string') return inner.code;
  return typeof c.name === 'string' && c.name !== 'Error' ? c.name : 'unknown';
}

/** How often the same failure is logged again while it lasts. */
const PROBLEM_REPEAT_MS = 60_000;

/**
 * Whether a problem line for `key` (a connector, an upstream host) is due: once per change of its
 * reason, and again every minute while it lasts. Remembers at most 1000 keys.
 */
function problemGate(): (key: string, why: string) => boolean {
  const last = new Map<string, { why: string; at: number }>();
  return (key, why) => {
    const seen = last.get(key);
    const now = Date.now();
    if (seen && seen.why === why && now - seen.at < PROBLEM_REPEAT_MS) return false;
    if (last.size >= 1000 && !seen) last.clear();
    last.set(key, { why, at: now });
    return true;
  };
}

/**
 * The agent gets a stable error code; the operator gets, at warn level, which upstream (host, never
 * the path) or the broker failed and why (failureReason), as problemGate lets it through.
 */
function upstreamProblemLogger(rt: Runtime): (st: RequestState) => void {
  const due = problemGate();
  return (st) => {
    const err = st.error;
    if (!err || !UPSTREAM_PROBLEMS.has(err.code)) return;
    const broker = err.code === 'broker_unavailable';
    const where = broker ? 'broker' : (st.canon?.host ?? 'upstream');
    const why = failureReason(err);
    if (!due(where, why)) return;
    rt.logger.warn({ error_code: err.code, ...(broker ? {} : { host: where }), reason: why, request_id: st.requestId }, broker ? 'the broker cannot be used' : 'an upstream cannot be used');
  };
}

/**
 * The agent gets "the upstream credential is unavailable"; the operator gets which connector and
 * why (never a value), as problemGate lets it through.
 */
function connectorProblemLogger(rt: Runtime): (st: RequestState) => void {
  const due = problemGate();
  return (st) => {
    const name = st.match?.route.connector;
    if (st.error?.code !== 'connector_unavailable' || name === undefined) return;
    const why = explainFailure(st.error);
    if (!due(name, why)) return;
    rt.logger.error({ connector: name, route: st.match?.route.id, reason: why }, 'connector cannot provide its credential; its requests are refused');
  };
}

export function createRequestHandler(rt: Runtime): (req: IncomingMessage, res: ServerResponse) => void {
  const connectorProblem = connectorProblemLogger(rt);
  const upstreamProblem = upstreamProblemLogger(rt);
  const maxBody = rt.config.proxy.maxRequestBodyBytes;
  const bodyIdleMs = durationMs(rt.config.proxy.requestBodyTimeout);

  // Plain callbacks rather than one async function: see prepareRequest.
  return (req, res) => {
    const st: RequestState = { requestId: nextRequestId(req.headers['x-request-id']), started: process.hrtime.bigint() };
    // Only a request with a body can have its body fail to parse after its head (reading.ts).
    const socket = req.socket;
    const reading: ReadingRequest | undefined =
      req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0'
        ? {
            requestId: st.requestId,
            res,
            complete: () => req.complete,
            refuse: (err) => {
              st.error ??= err;
            },
          }
        : undefined;
    if (reading) startReading(socket, reading);
    const done = () => {
      if (reading) stopReading(socket, reading);
      recordDecision(rt, st);
    };
    const fail = (err: unknown) => {
      try {
        st.error = toSidecarError(err);
        if (st.error.code === 'internal_error') rt.logger.error({ err: st.error.cause, request_id: st.requestId }, 'unexpected error');
        else if (st.error.code === 'connector_unavailable') connectorProblem(st);
        else upstreamProblem(st);
        sendProblem(res, st.error, st.requestId);
      } finally {
        done();
      }
    };
    const forwarded = (result: ForwardResult) => {
      st.upstreamStatus = result.status;
      st.upstreamSeconds = result.upstreamSeconds;
      // Refused after the upstream's answer had begun (its body, say): both are recorded.
      if (result.error) st.error ??= result.error;
      done();
    };
    const forward = ({ out, match, withBody }: PreparedRequest) => {
      let sent: Promise<ForwardResult>;
      // Allowed, and its body wanted: now the agent may send it (Expect is not forwarded).
      if (withBody && req.headers.expect !== undefined) res.writeContinue();
      try {
        sent = rt.forwarder.forward(out, req, res, { caFile: match.route.def.caFile, requestId: st.requestId, maxBodyBytes: maxBody, bodyIdleMs, hasBody: withBody });
      } catch (err) {
        fail(err);
        return;
      }
      sent.then(forwarded, fail);
    };
    let prepared: PreparedRequest | Promise<PreparedRequest>;
    try {
      prepared = prepareRequest(rt, req, st);
    } catch (err) {
      fail(err);
      return;
    }
    if (prepared instanceof Promise) prepared.then(forward, fail);
    else forward(prepared);
  };
}
