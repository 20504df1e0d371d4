/**
 * CONNECT on the proxy port. The CONNECT itself is authenticated and decided before any byte of
 * the tunnel moves:
 *   a route governs host:port                        → intercept (intercept.ts);
 *   a passThrough entry names it and the token covers its scopes → blind tunnel, audited with
 *                                                       bytes each way and duration;
 *   anything else (unknown hosts, IP literals nobody named, ports outside tls.connectPorts)
 *                                                     → refused with problem+json, before TLS.
 */
import type { IncomingMessage } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import { firstUncovered } from '../auth/scope.js';
import type { AgentIdentity } from '../auth/types.js';
import { durationMs } from '../config/schema.js';
import { isSidecarError, SidecarError } from '../errors.js';
import { nextRequestId } from '../pipeline/request-id.js';
import { toSidecarError } from '../pipeline/respond.js';
import type { CompiledPolicy } from '../policy/compile.js';
import { type HostPattern, hostMatches, parseHostPattern } from '../policy/template.js';
import type { Runtime } from '../runtime/types.js';
import type { TlsRuntime } from '../tls/runtime.js';
import { upstreamErrorToSidecar } from '../upstream/forwarder.js';
import type { Interceptor } from './intercept.js';
import { isIpLiteral, parseConnectAuthority, splice, writeRawProblem } from './raw-socket.js';
import { extractToken } from './token.js';
import { tokenWatchFor } from './token-watch.js';
import { msSince, recordTunnel } from './tunnel-record.js';

export interface ConnectDeps {
  rt: Runtime;
  tls: TlsRuntime;
  interceptor: Interceptor;
}

export type TunnelVerdict = { kind: 'intercept' } | { kind: 'pass'; scopes: string[] };

interface HostIndex {
  passThrough: Array<{ pattern: HostPattern; port: number; scopes: string[] }>;
}

/** Per policy generation, built on first use. */
const indexes = new WeakMap<CompiledPolicy, HostIndex>();

function indexOf(policy: CompiledPolicy): HostIndex {
  let ix = indexes.get(policy);
  if (ix) return ix;
  ix = { passThrough: [] };
  for (const pt of policy.passThrough) {
    const p = parseHostPattern(pt.host);
    if (typeof p !== 'string') ix.passThrough.push({ pattern: p, port: pt.port, scopes: pt.scopes });
  }
  indexes.set(policy, ix);
  return ix;
}

/**
 * Which policy applies to a CONNECT to host:port, for an authenticated identity. Throws the
 * refusal. A route governs the host when it could match a request inside the tunnel, TLS or
 * plain HTTP (the client's first byte tells which, after this decision).
 */
export function decideTunnel(policy: CompiledPolicy, identity: AgentIdentity, host: string, port: number, connectPorts: readonly number[]): TunnelVerdict {
  if (!connectPorts.includes(port)) throw new SidecarError('tunnel_refused', 'CONNECT to this port is not allowed');
  const ix = indexOf(policy);
  if (policy.matcher.governsHost(host, port)) {
    return { kind: 'intercept' };
  }
  const pt = ix.passThrough.find((e) => e.port === port && hostMatches(e.pattern, host));
  if (pt) {
    const missing = firstUncovered(pt.scopes, identity.scopes);
    if (missing !== undefined) throw new SidecarError('scope_violation', `token lacks required scope: ${missing}`);
    return { kind: 'pass', scopes: pt.scopes };
  }
  throw new SidecarError('tunnel_refused', isIpLiteral(host) ? 'CONNECT to an IP address is not allowed' : 'no policy allows a tunnel to this host');
}

interface Attempt {
  requestId: string;
  started: number;
  host?: string;
  port?: number;
  identity?: AgentIdentity;
  scopes?: string[];
}

export function createConnectHandler(deps: ConnectDeps): (req: IncomingMessage, socket: Socket, head: Buffer) => void {
  const { rt } = deps;
  return (req, socket, head) => {
    // node removed its own listeners from this socket: without one, an error would kill the process.
    socket.on('error', () => socket.destroy());
    const a: Attempt = { requestId: nextRequestId(req.headers['x-request-id']), started: performance.now() };
    handleConnect(deps, req, socket, head, a).catch((err: unknown) => {
      const error = toSidecarError(err);
      if (error.code === 'internal_error') rt.logger.error({ err: error.cause, request_id: a.requestId }, 'unexpected error on CONNECT');
      writeRawProblem(socket, error, a.requestId);
      recordTunnel(rt, {
        type: 'tunnel',
        requestId: a.requestId,
        outcome: 'refused',
        host: a.host,
        port: a.port,
        identity: a.identity,
        scopes: a.scopes,
        error,
        durationMs: msSince(a.started),
      });
    });
  };
}

async function handleConnect(deps: ConnectDeps, req: IncomingMessage, socket: Socket, head: Buffer, a: Attempt): Promise<void> {
  const { rt } = deps;
  if (rt.draining) throw new SidecarError('shutting_down', 'the sidecar is shutting down');
  const gen = rt.generation();
  if (!gen || !rt.verifier.ready()) throw new SidecarError('not_ready', 'the sidecar is starting; retry shortly');
  const { host, port } = parseConnectAuthority(req.url);
  a.host = host;
  a.port = port;
  const intake = extractToken(req.headers);
  if (intake.token === undefined) {
    if (intake.malformed) throw new SidecarError('token_invalid', 'the presented credential is not an AgentWrit token');
    throw new SidecarError('token_required', 'send your AgentWrit token as Proxy-Authorization (Bearer, or Basic with the token as password)');
  }
  const { identity } = await rt.verifier.verify(intake.token);
  a.identity = identity;
  const verdict = decideTunnel(gen.policy, identity, host, port, rt.config.tls.connectPorts);
  if (verdict.kind === 'pass') a.scopes = verdict.scopes;
  if (rt.config.audit.onFailure === 'closed' && !rt.audit.healthy()) {
    throw new SidecarError('audit_unavailable', 'the audit log cannot be written; requests are refused until it can');
  }
  if (verdict.kind === 'intercept') await intercept(deps, socket, head, a, intake.token);
  else await passThrough(rt, socket, head, a, intake.token);
}

const ESTABLISHED = (requestId: string) => `HTTP/1.1 200 Connection Established\r\nx-request-id: ${requestId}\r\n\r\n`;

async function intercept(deps: ConnectDeps, socket: Socket, head: Buffer, a: Attempt, token: string): Promise<void> {
  const host = a.host!;
  let secureContext: Awaited<ReturnType<TlsRuntime['leafContext']>>;
  try {
    // Minted only now, after the policy allowed the tunnel: a refused host never costs a signature.
    secureContext = await deps.tls.leafContext(host);
  } catch (err) {
    throw new SidecarError('tunnel_refused', 'no certificate can be issued for this host name', { cause: err });
  }
  if (socket.destroyed) throw new SidecarError('bad_request', 'the client closed the connection before the tunnel opened');
  socket.write(ESTABLISHED(a.requestId));
  recordTunnel(deps.rt, { type: 'tunnel', requestId: a.requestId, outcome: 'intercepted', host, port: a.port, identity: a.identity });
  deps.interceptor.start({
    socket,
    head,
    host,
    port: a.port!,
    token,
    identity: a.identity!,
    requestId: a.requestId,
    secureContext,
    started: a.started,
  });
}

function dialUpstream(rt: Runtime, host: string, port: number): Promise<Socket> {
  const dial = rt.forwarder.dialOptions({ scheme: 'http', host, port });
  const timeoutMs = durationMs(rt.config.upstream.connectTimeout);
  return new Promise((resolve, reject) => {
    const upstream = netConnect({ host: dial.host, port: dial.port });
    const timer = setTimeout(() => {
      upstream.destroy();
      reject(new SidecarError('upstream_timeout', 'the upstream did not accept the connection in time'));
    }, timeoutMs);
    upstream.once('connect', () => {
      clearTimeout(timer);
      upstream.removeAllListeners('error');
      resolve(upstream);
    });
    upstream.once('error', (err) => {
      clearTimeout(timer);
      upstream.destroy();
      reject(isSidecarError(err) ? err : upstreamErrorToSidecar(err));
    });
  });
}

async function passThrough(rt: Runtime, socket: Socket, head: Buffer, a: Attempt, token: string): Promise<void> {
  const identity = a.identity!;
  // A reload that drops the entry, or no longer lets this token through it, ends the tunnel.
  const stillAllowed = (policy: CompiledPolicy) => {
    try {
      return decideTunnel(policy, identity, a.host!, a.port!, rt.config.tls.connectPorts).kind === 'pass';
    } catch {
      return false;
    }
  };
  const upstream = await dialUpstream(rt, a.host!, a.port!);
  if (socket.destroyed) {
    upstream.destroy();
    throw new SidecarError('bad_request', 'the client closed the connection before the tunnel opened');
  }
  // A reload while the token was checked or the upstream dialled: decided again under the policy in
  // service now. From here to the splice's registration nothing waits, so no reload slips between.
  const now = rt.generation();
  if (now && !stillAllowed(now.policy)) {
    upstream.destroy();
    throw new SidecarError('tunnel_refused', 'the policy changed while the tunnel was opened; it does not allow this tunnel now');
  }
  socket.write(ESTABLISHED(a.requestId));
  recordTunnel(rt, { type: 'tunnel', requestId: a.requestId, outcome: 'passed_through', host: a.host, port: a.port, identity: a.identity, scopes: a.scopes });
  rt.metrics.activeTunnels.inc();
  if (head.length > 0) upstream.write(head);
  splice(socket, upstream, {
    idleMs: durationMs(rt.config.tls.tunnelIdleTimeout),
    watch: tokenWatchFor(rt, token, identity),
    registry: rt.splices,
    stillAllowed,
  }).then(
    (r) => {
      rt.metrics.activeTunnels.dec();
      recordTunnel(rt, {
        type: 'tunnel_closed',
        requestId: a.requestId,
        outcome: 'passed_through',
        host: a.host,
        port: a.port,
        identity: a.identity,
        scopes: a.scopes,
        closeReason: r.reason,
        bytesIn: r.bytesIn + head.length,
        bytesOut: r.bytesOut,
        durationMs: msSince(a.started),
      });
    },
    () => rt.metrics.activeTunnels.dec(),
  );
}
