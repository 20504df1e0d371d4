/**
 * WebSocket upgrades on the proxy port (absolute-form, reverse routes) and inside intercepted
 * tunnels. The upgrade request runs the same decision stages as any request (authentication,
 * route, scopes, credential injection, agent credentials stripped); then the upstream is dialed
 * with the forwarder's dialing and TLS rules, its answer relayed, and on 101 both sockets spliced.
 */
import { createHash } from 'node:crypto';
import { request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { OutboundRequest } from '../connectors/types.js';
import { durationMs } from '../config/schema.js';
import { isSidecarError, SidecarError } from '../errors.js';
import { authorize, prepareRequest, type RequestState } from '../pipeline/handler.js';
import { recordDecision } from '../pipeline/record.js';
import { nextRequestId } from '../pipeline/request-id.js';
import { toSidecarError } from '../pipeline/respond.js';
import type { CompiledPolicy } from '../policy/compile.js';
import type { Runtime } from '../runtime/types.js';
import { stripHopByHop, upstreamErrorToSidecar, withoutEchoes } from '../upstream/forwarder.js';
import { closeAfterEnd, splice, writeRawProblem } from './raw-socket.js';
import { extractToken } from './token.js';
import { tokenWatchFor } from './token-watch.js';
import { tunnelContextOf } from './tunnel-context.js';
import { msSince, recordTunnel } from './tunnel-record.js';

type UpstreamAnswer = { kind: 'upgrade'; res: IncomingMessage; socket: Socket; head: Buffer } | { kind: 'response'; res: IncomingMessage };

function authority(o: OutboundRequest['origin']): string {
  const host = o.host.includes(':') ? `[${o.host}]` : o.host;
  const dflt = o.scheme === 'https' ? 443 : 80;
  return o.port === dflt ? host : `${host}:${o.port}`;
}

/** Most an agent may send ahead of the 101; past it, its socket is not read until the splice. */
const EARLY_BYTES_MAX = 64 * 1024;

/**
 * Node stops reading a socket once it hands it to the upgrade event, so an agent that left while
 * its upgrade was checked (a broker call, a credential fetch, the upstream's answer) would go
 * unseen until the splice, and the upgrade be sent upstream for nobody. Until the splice this
 * reads it: an end or a close marks the agent gone, and what it sent early is kept for the
 * upstream, as node's own `head` is.
 */
class AgentWatch {
  gone = false;
  private early: Buffer[] | undefined = [];
  private size = 0;
  private stopped = false;
  private onGone: (() => void) | undefined;
  private readonly onData = (chunk: Buffer) => {
    if (!this.early) return;
    this.early.push(chunk);
    this.size += chunk.length;
    if (this.size >= EARLY_BYTES_MAX) this.socket.pause();
  };
  private readonly onLeave = () => {
    if (this.gone) return;
    this.gone = true;
    this.onGone?.();
  };

  constructor(private readonly socket: Duplex) {
    socket.on('data', this.onData);
    socket.once('end', this.onLeave);
    socket.once('close', this.onLeave);
  }

  /** `cb` runs when the agent leaves (at once if it has); until `stop`. */
  whenGone(cb: (() => void) | undefined): void {
    this.onGone = cb;
    if (cb && this.gone) cb();
  }

  /** The splice reads from here on: stops reading, and returns what came early. */
  stop(): Buffer {
    this.stopped = true;
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onLeave);
    this.socket.off('close', this.onLeave);
    this.onGone = undefined;
    this.socket.pause();
    const early = Buffer.concat(this.early ?? []);
    this.early = undefined;
    return early;
  }

  /** Refused: nothing it sends is wanted, but it is still read, so its close is seen and the socket freed. */
  discard(): void {
    if (this.stopped) return;
    this.early = undefined;
    this.socket.resume();
  }
}

/** Sends the upgrade request upstream; resolves with a 101 (and its socket) or any other answer. */
function requestUpgrade(rt: Runtime, out: OutboundRequest, caFile: string | undefined, agent: AgentWatch): Promise<UpstreamAnswer> {
  const dial = rt.forwarder.dialOptions(out.origin, caFile);
  const timeoutMs = durationMs(rt.config.upstream.connectTimeout) + durationMs(rt.config.upstream.headersTimeout);
  const opts = { host: dial.host, port: dial.port, method: out.method, path: out.path, headers: out.headers as OutgoingHttpHeaders, agent: false as const };
  return new Promise((resolve, reject) => {
    const ureq = dial.tls ? httpsRequest({ ...opts, ...dial.tls }) : httpRequest(opts);
    const timer = setTimeout(() => ureq.destroy(new SidecarError('upstream_timeout', 'the upstream did not answer in time')), timeoutMs);
    agent.whenGone(() => ureq.destroy());
    const settle = () => {
      clearTimeout(timer);
      agent.whenGone(undefined);
    };
    ureq.once('upgrade', (res, socket: Socket, head: Buffer) => {
      settle();
      resolve({ kind: 'upgrade', res, socket, head });
    });
    ureq.once('response', (res) => {
      settle();
      resolve({ kind: 'response', res });
    });
    ureq.once('error', (err) => {
      settle();
      reject(isSidecarError(err) ? err : upstreamErrorToSidecar(err));
    });
    ureq.end();
  });
}

/** RFC 6455 §4.1: a client's Sec-WebSocket-Key is the base64 of 16 bytes. */
const WS_KEY = /^[A-Za-z0-9+/]{22}==$/;

/** RFC 6455 §4.2.2: the Sec-WebSocket-Accept a server that took the handshake answers with. */
function wsAccept(key: string): string {
  return createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
}

/**
 * A 101 that does not answer the key (or does not name websocket) is no WebSocket server's: the
 * connection would become a raw pipe to something that never switched protocols, where the
 * agent's later bytes could be read as requests the sidecar never authorized.
 */
function completesHandshake(res: IncomingMessage, key: string): boolean {
  const upgrade = res.headers.upgrade;
  return typeof upgrade === 'string' && upgrade.toLowerCase() === 'websocket' && res.headers['sec-websocket-accept'] === wsAccept(key);
}

function headLines(status: number, message: string, headers: Array<[string, string]>): string {
  let head = `HTTP/1.1 ${status} ${message}\r\n`;
  for (const [k, v] of headers) head += `${k}: ${v}\r\n`;
  return `${head}\r\n`;
}

/**
 * A non-101 answer (the upstream refused the upgrade) is relayed as is, then the connection closed.
 * A body that stops for `idleMs`, or an agent that goes away, ends both connections.
 */
function relayRefusal(res: IncomingMessage, client: Duplex, requestId: string, idleMs: number, echoes: readonly string[] | undefined): void {
  const h = stripHopByHop(res.headers as Record<string, string | string[] | undefined>);
  const pairs: Array<[string, string]> = [];
  for (const k in h) {
    if (k === 'x-request-id') continue;
    const v = h[k];
    for (const one of Array.isArray(v) ? v : [v]) {
      const kept = echoes === undefined ? one : withoutEchoes(k, one, echoes);
      if (kept !== undefined) pairs.push([k, kept]);
    }
  }
  pairs.push(['x-request-id', requestId], ['connection', 'close']);
  client.write(headLines(res.statusCode ?? 502, res.statusMessage ?? '', pairs));
  const cut = () => {
    res.destroy();
    client.destroy();
  };
  res.socket.setTimeout(idleMs, cut);
  res.on('error', cut);
  res.once('close', () => {
    if (!res.complete) client.destroy();
  });
  client.once('close', () => res.destroy());
  // Relayed to its end: then the agent's connection closes, as the Connection: close above says.
  client.once('finish', () => closeAfterEnd(client));
  res.pipe(client);
}

/**
 * `inflight`: told when an upgrade begins and when it is decided (101 sent, or refused), so that an
 * upgrade being made counts as a request in flight (gauge, and the shutdown drain waits for it).
 */
export function createUpgradeHandler(
  rt: Runtime,
  inflight?: { started(): void; decided(): void },
): (req: IncomingMessage, socket: Duplex, head: Buffer) => void {
  const idleMs = durationMs(rt.config.tls.tunnelIdleTimeout);

  async function upgrade(req: IncomingMessage, client: Duplex, head: Buffer, st: RequestState, agent: AgentWatch, record: () => void): Promise<void> {
    const proto = req.headers.upgrade;
    if (typeof proto !== 'string' || proto.toLowerCase() !== 'websocket') {
      throw new SidecarError('bad_request', 'only WebSocket upgrades are supported');
    }
    const key = req.headers['sec-websocket-key'];
    if (typeof key !== 'string' || !WS_KEY.test(key)) {
      throw new SidecarError('bad_request', 'a WebSocket upgrade needs a Sec-WebSocket-Key of 16 bytes in base64 (RFC 6455)');
    }
    if (rt.draining) throw new SidecarError('shutting_down', 'the sidecar is shutting down');
    const { out, match } = await prepareRequest(rt, req, st);
    // Allowed, but the agent is no longer there to use it: nothing goes upstream (499, as for a request).
    const abandoned = (upstreamStatus: number) => {
      st.upstreamStatus = upstreamStatus;
      client.destroy();
      record();
    };
    // A due look at the upstream CA files first, as for any request (forwarder.ts).
    const look = rt.forwarder.trustLook(out.origin, match.route.def.caFile);
    if (look) await look;
    if (agent.gone) return abandoned(499);
    out.headers.host = authority(out.origin);
    out.headers.connection = 'Upgrade';
    out.headers.upgrade = proto;
    let answer: UpstreamAnswer;
    try {
      answer = await requestUpgrade(rt, out, match.route.def.caFile, agent);
    } catch (err) {
      if (agent.gone) return abandoned(499);
      throw err;
    }
    if (agent.gone) {
      (answer.kind === 'upgrade' ? answer.socket : answer.res).destroy();
      return abandoned(answer.res.statusCode ?? 499);
    }
    st.upstreamStatus = answer.res.statusCode;
    if (answer.kind === 'response') {
      agent.discard();
      relayRefusal(answer.res, client, st.requestId, durationMs(rt.config.upstream.bodyTimeout), out.echoes);
      record();
      return;
    }
    const upstream = answer.socket;
    if (!completesHandshake(answer.res, key)) {
      upstream.destroy();
      throw new SidecarError('upstream_unreachable', 'the upstream answered 101 but did not complete the WebSocket handshake');
    }
    const identity = st.identity!;
    const canon = st.canon!;
    // A reload after which no route allows this upgrade for this token ends the WebSocket; one that
    // came while the upgrade was checked or answered is applied now, before the agent has its 101
    // (from here to the splice's registration nothing waits).
    const stillAllowed = (policy: CompiledPolicy) => {
      const m = policy.matcher.match(canon);
      return m !== undefined && authorize(identity, m) === undefined;
    };
    const now = rt.generation();
    if (now && !stillAllowed(now.policy)) {
      upstream.destroy();
      throw new SidecarError('scope_violation', 'the policy changed while the upgrade was made; it does not allow this request now');
    }
    const early = agent.stop();
    const pairs: Array<[string, string]> = [];
    const raw = answer.res.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i].toLowerCase() === 'x-request-id') continue;
      const kept = out.echoes === undefined ? raw[i + 1] : withoutEchoes(raw[i], raw[i + 1], out.echoes);
      if (kept !== undefined) pairs.push([raw[i], kept]);
    }
    pairs.push(['x-request-id', st.requestId]);
    client.write(headLines(101, answer.res.statusMessage || 'Switching Protocols', pairs));
    if (answer.head.length > 0) client.write(answer.head);
    if (head.length > 0) upstream.write(head);
    if (early.length > 0) upstream.write(early);
    record();
    const started = performance.now();
    // The token the upgrade was allowed with (prepareRequest found one): the WebSocket ends with it.
    const token = extractToken(req.headers, tunnelContextOf(req.socket)?.token).token as string;
    const r = await splice(client, upstream, { idleMs, startedAt: started, watch: tokenWatchFor(rt, token, identity), registry: rt.splices, stillAllowed });
    recordTunnel(rt, {
      type: 'tunnel_closed',
      requestId: st.requestId,
      tunnelId: st.tunnelId,
      outcome: 'websocket',
      method: out.method,
      host: out.origin.host,
      port: out.origin.port,
      identity: st.identity,
      route: match.route.id,
      closeReason: r.reason,
      bytesIn: r.bytesIn + head.length + early.length,
      bytesOut: r.bytesOut + answer.head.length,
      durationMs: msSince(started),
    });
  }

  return (req, socket, head) => {
    // node removed its own listeners from this socket: without one, an error would kill the process.
    socket.on('error', () => socket.destroy());
    const st: RequestState = { requestId: nextRequestId(req.headers['x-request-id']), started: process.hrtime.bigint() };
    let recorded = false;
    inflight?.started();
    const record = () => {
      if (recorded) return;
      recorded = true;
      inflight?.decided();
      recordDecision(rt, st);
    };
    const agent = new AgentWatch(socket);
    upgrade(req, socket, head, st, agent, record).catch((err: unknown) => {
      agent.discard();
      if (recorded) return;
      st.error = toSidecarError(err);
      if (st.error.code === 'internal_error') rt.logger.error({ err: st.error.cause, request_id: st.requestId }, 'unexpected error on upgrade');
      writeRawProblem(socket, st.error, st.requestId);
      record();
    });
  };
}
