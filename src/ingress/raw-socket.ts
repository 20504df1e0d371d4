/**
 * What CONNECT and Upgrade handling share once a socket has left node's HTTP machinery: answering
 * on the raw socket, reading a CONNECT authority, and splicing two sockets together.
 */
import { isIPv4, isIPv6, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { canonicalIPv6 } from '../ipv6.js';
import { ERROR_CATALOGUE, SidecarError } from '../errors.js';
import { recordDecision } from '../pipeline/record.js';
import { nextRequestId } from '../pipeline/request-id.js';
import { readingOn } from '../pipeline/reading.js';
import { problemBody } from '../pipeline/respond.js';
import type { CompiledPolicy } from '../policy/compile.js';
import type { Runtime } from '../runtime/types.js';

const PROXY_AUTHENTICATE = 'Bearer realm="agentwrit-sidecar", Basic realm="agentwrit-sidecar"';

/**
 * The same problem+json refusal respond.ts sends, written as a whole response on a socket that
 * node no longer manages; the connection is closed after it.
 */
export function writeRawProblem(socket: Duplex, err: SidecarError, requestId: string): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const body = problemBody(err.code, err.detail, requestId);
  let head =
    `HTTP/1.1 ${err.status} ${ERROR_CATALOGUE[err.code].title}\r\n` +
    'content-type: application/problem+json\r\n' +
    `content-length: ${Buffer.byteLength(body)}\r\n` +
    'cache-control: no-store\r\n' +
    `x-request-id: ${requestId}\r\n` +
    'connection: close\r\n';
  if (err.code === 'token_required') head += `proxy-authenticate: ${PROXY_AUTHENTICATE}\r\n`;
  if (err.code === 'token_missing' || err.status === 401) head += 'www-authenticate: Bearer realm="agentwrit-sidecar"\r\n';
  socket.end(`${head}\r\n${body}`);
  closeAfterEnd(socket);
}

/** How long a side that already closed waits for the other to finish its own close. */
const LINGER_MS = 2_000;

/**
 * A socket node no longer manages, once our answer is ended: read on and discard (so the peer's
 * close is seen and frees it), and destroyed LINGER_MS after our end went out if the peer has not
 * closed by then. These sockets allow half-open connections: a peer that never closes its side
 * would otherwise hold the socket, and a proxy.maxConnections place, for ever.
 */
export function closeAfterEnd(socket: Duplex): void {
  if (socket.destroyed) return;
  socket.resume();
  const linger = () => {
    const timer = setTimeout(() => socket.destroy(), LINGER_MS);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  };
  if (socket.writableFinished) linger();
  else socket.once('finish', linger);
}

/**
 * A refusal of a request that never reached the pipeline (node could not parse it, its head came
 * too slowly, a CONNECT inside a tunnel): problem+json on the socket, which is then closed, and
 * recorded like every other decision.
 */
export function refuseRaw(rt: Runtime, socket: Duplex, err: SidecarError, tunnelId?: string): void {
  const st = { requestId: nextRequestId(undefined), started: process.hrtime.bigint(), tunnelId, error: err };
  writeRawProblem(socket, err, st.requestId);
  recordDecision(rt, st);
}

/**
 * node's parser failed on a connection: the refusal of the request whose body was being read, under
 * its id (its record follows when it is done), or else of a request that never got that far.
 */
export function refuseClientError(rt: Runtime, socket: Duplex, err: SidecarError, tunnelId?: string): void {
  const reading = readingOn(socket);
  if (reading === undefined) {
    if (socket.writable) refuseRaw(rt, socket, err, tunnelId);
    else socket.destroy();
    return;
  }
  reading.refuse(err);
  // Its answer is written only in its own slot: not once its head went out, nor while it waits
  // behind an earlier pipelined response (no socket yet), where the agent would read it as that one's.
  if (reading.res.headersSent || !reading.res.socket) socket.destroy();
  else writeRawProblem(socket, err, reading.requestId);
}

/**
 * node's clientError for a request it could not read, as a refusal; undefined for a broken
 * connection, and for one that timed out without sending a byte (no request to answer or record).
 */
export function clientErrorRefusal(err: NodeJS.ErrnoException, socket: Duplex, maxHeaderBytes: number): SidecarError | undefined {
  if (err.code === 'HPE_HEADER_OVERFLOW') return new SidecarError('headers_too_large', `request headers exceed ${maxHeaderBytes} bytes`);
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    if (!((socket as Socket).bytesRead > 0)) return undefined;
    return new SidecarError('request_timeout', 'the request head did not arrive within proxy.headersTimeout');
  }
  if (err.code?.startsWith('HPE_')) return new SidecarError('bad_request', 'the request is not valid HTTP/1.1');
  return undefined;
}

const HOST_CHARS = /^[a-z0-9._-]+$/;

/**
 * A CONNECT request target: authority-form "host:port" with the port required (RFC 9110 §9.3.6).
 * Returns the lower-case host without brackets. Anything two parsers could read differently is refused.
 */
export function parseConnectAuthority(target: string | undefined): { host: string; port: number } {
  const bad = () => new SidecarError('bad_request', 'CONNECT needs a target of the form host:port');
  if (!target || target.length > 300) throw bad();
  let host: string;
  let portText: string;
  if (target.charCodeAt(0) === 91) {
    const close = target.indexOf(']');
    if (close < 0 || target.charCodeAt(close + 1) !== 58) throw bad();
    const v6 = canonicalIPv6(target.slice(1, close));
    if (v6 === undefined) throw bad();
    host = v6;
    portText = target.slice(close + 2);
  } else {
    const colon = target.lastIndexOf(':');
    if (colon <= 0) throw bad();
    host = target.slice(0, colon).toLowerCase();
    portText = target.slice(colon + 1);
    if (!HOST_CHARS.test(host) || host.startsWith('.') || host.endsWith('.') || host.includes('..')) {
      throw new SidecarError('ambiguous_request', 'CONNECT host is not a plain host name or IP address');
    }
  }
  if (!/^\d{1,5}$/.test(portText)) throw bad();
  const port = Number(portText);
  if (port < 1 || port > 65535) throw bad();
  return { host, port };
}

export function isIpLiteral(host: string): boolean {
  return isIPv4(host) || isIPv6(host);
}

export interface SpliceResult {
  /** Bytes from the agent's side towards the upstream, and back. */
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
  /** Which side ended it first, or why it was cut. */
  reason:
    | 'client_closed'
    | 'upstream_closed'
    | 'client_error'
    | 'upstream_error'
    | 'idle_timeout'
    | 'token_expired'
    | 'token_revoked'
    | 'policy_changed'
    | 'shutdown';
}

type CutReason = 'shutdown' | 'policy_changed';

/** Whether a connection opened under one policy is still allowed under another. */
export type StillAllowed = (policy: CompiledPolicy) => boolean;

/**
 * One sidecar's spliced connections (pass-through tunnels, WebSockets), so that shutdown can end
 * them at once (no linger) and wait until what follows each (its tunnel_closed record) is done.
 */
export class OpenSplices {
  private readonly open = new Map<Promise<SpliceResult>, { cut: (reason: CutReason) => void; allowed?: StillAllowed }>();

  /** Called by splice() for each connection while it lasts. */
  add(done: Promise<SpliceResult>, cut: (reason: CutReason) => void, allowed?: StillAllowed): void {
    this.open.set(done, { cut, allowed });
    const forget = () => this.open.delete(done);
    done.then(forget, forget);
  }

  /**
   * A new policy generation is in service: each connection it would not allow now (its route or
   * pass-through entry gone, or asking scopes its token lacks) is cut, as a request would be refused.
   * Returns how many were cut.
   */
  recheck(policy: CompiledPolicy): number {
    let n = 0;
    for (const { cut, allowed } of this.open.values()) {
      if (allowed === undefined || allowed(policy)) continue;
      cut('policy_changed');
      n++;
    }
    return n;
  }

  /**
   * Cuts every open one; resolves once each has closed and the code awaiting it has run (its
   * continuations were attached before this call, so they run before this one's).
   */
  async cutAll(): Promise<void> {
    const all = [...this.open];
    for (const [, { cut }] of all) cut('shutdown');
    await Promise.allSettled(all.map(([done]) => done));
  }
}

/**
 * Relays bytes both ways with backpressure until both sides are closed. A clean close on one side
 * is passed on as a clean close (half-close first, so nothing in flight is lost); an error or
 * `idleMs` without traffic on either socket cuts both.
 */
export function splice(
  client: Duplex,
  upstream: Socket,
  opts: {
    idleMs: number;
    startedAt?: number;
    /** Cuts the connection for a reason of its own (token-watch.ts); returns its stop function. */
    watch?: (cut: (reason: 'token_expired' | 'token_revoked') => void) => () => void;
    /** Where shutdown and reloads find it. */
    registry?: OpenSplices;
    /** Asked at each reload: false cuts the connection (reason policy_changed). */
    stillAllowed?: StillAllowed;
  },
): Promise<SpliceResult> {
  const started = opts.startedAt ?? performance.now();
  let bytesIn = 0;
  let bytesOut = 0;
  let reason: SpliceResult['reason'] | undefined;
  const note = (r: SpliceResult['reason']) => {
    reason ??= r;
  };
  client.on('data', (c: Buffer) => {
    bytesIn += c.length;
  });
  upstream.on('data', (c: Buffer) => {
    bytesOut += c.length;
  });
  const cut = (r: SpliceResult['reason']) => {
    // A side that had only half-closed left the rest open: ended now by the sidecar (shutdown, a
    // policy change, the token, idleness), the reason is that.
    if ((reason === 'client_closed' || reason === 'upstream_closed') && !r.endsWith('_error')) reason = r;
    else note(r);
    client.destroy();
    upstream.destroy();
  };
  client.on('error', () => cut('client_error'));
  upstream.on('error', () => cut('upstream_error'));
  const timeout = () => cut('idle_timeout');
  if (opts.idleMs > 0) {
    (client as Socket).setTimeout?.(opts.idleMs, timeout);
    upstream.setTimeout(opts.idleMs, timeout);
  }
  const unwatch = opts.watch?.(cut);
  client.once('end', () => note('client_closed'));
  upstream.once('end', () => note('upstream_closed'));
  const linger = (other: Duplex) => {
    if (other.destroyed) return;
    other.end();
    // Its pipe was undone when this side closed: keep reading so its own end is seen (and dropped).
    other.resume();
    setTimeout(() => other.destroy(), LINGER_MS).unref();
  };
  client.pipe(upstream);
  upstream.pipe(client);
  let closed = 0;
  const done = new Promise<SpliceResult>((resolve) => {
    const onClose = (side: 'client' | 'upstream') => () => {
      note(side === 'client' ? 'client_closed' : 'upstream_closed');
      linger(side === 'client' ? upstream : client);
      if (++closed === 2) {
        unwatch?.();
        resolve({ bytesIn, bytesOut, durationMs: Math.round((performance.now() - started) * 1000) / 1000, reason: reason ?? 'client_closed' });
      }
    };
    client.once('close', onClose('client'));
    upstream.once('close', onClose('upstream'));
  });
  opts.registry?.add(done, cut, opts.stillAllowed);
  return done;
}
