/**
 * An intercepted CONNECT tunnel, after the policy allowed it and the 200 was sent. The first byte
 * the client sends decides what the tunnel carries:
 *   0x16 (a TLS handshake record) → TLS is terminated here with a leaf for the CONNECT host
 *     (ALPN http/1.1; a client naming another host in SNI is cut during the handshake);
 *   an ASCII capital (a request method) → plain HTTP, as clients that tunnel http:// URLs send
 *     (undici's ProxyAgent does by default); requests get scheme http;
 *   anything else → the tunnel is closed.
 * Either way the connection is handed to one internal HTTP server (it never listens) whose request
 * and upgrade handlers are the proxy port's own, so every request inside runs the same pipeline.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type SecureContext, TLSSocket } from 'node:tls';
import type { AgentIdentity } from '../auth/types.js';
import { durationMs } from '../config/schema.js';
import { SidecarError } from '../errors.js';
import type { Runtime } from '../runtime/types.js';
import { normalizeLeafHost } from '../tls/leaf.js';
import { clientErrorRefusal, refuseClientError, refuseRaw } from './raw-socket.js';
import { attachTunnelContext } from './tunnel-context.js';
import { msSince, recordTunnel } from './tunnel-record.js';

export interface InterceptorOptions {
  rt: Runtime;
  onRequest: (req: IncomingMessage, res: ServerResponse) => void;
  onUpgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
}

export interface InterceptStart {
  /** The client's socket, 200 already written. */
  socket: Socket;
  /** Bytes that arrived with the CONNECT head. */
  head: Buffer;
  host: string;
  port: number;
  token: string;
  identity: AgentIdentity;
  requestId: string;
  secureContext: SecureContext;
  started: number;
}

interface TunnelState {
  start: InterceptStart;
  reason?: string;
}

const TLS_HANDSHAKE = 0x16;

function sameHost(servername: string, host: string): boolean {
  try {
    return normalizeLeafHost(servername) === normalizeLeafHost(host);
  } catch {
    return false;
  }
}

export class Interceptor {
  readonly server: Server;
  readonly #rt: Runtime;
  readonly #idleMs: number;
  readonly #active = new Map<Duplex, TunnelState>();

  constructor(opts: InterceptorOptions) {
    const { rt } = opts;
    this.#rt = rt;
    this.#idleMs = durationMs(rt.config.tls.tunnelIdleTimeout);
    const server = createServer(
      {
        maxHeaderSize: rt.config.proxy.maxHeaderBytes,
        headersTimeout: durationMs(rt.config.proxy.headersTimeout),
        connectionsCheckingInterval: Math.min(1000, durationMs(rt.config.proxy.headersTimeout)),
        keepAliveTimeout: this.#idleMs,
        requestTimeout: 0,
      },
      opts.onRequest,
    );
    // Inactivity on a tunnel (handshake included: it moves no cleartext) closes it.
    server.timeout = this.#idleMs;
    server.on('timeout', (socket: Duplex) => {
      const st = this.#active.get(socket);
      if (st) st.reason ??= 'idle_timeout';
      socket.destroy();
    });
    server.on('upgrade', opts.onUpgrade);
    server.on('checkContinue', opts.onRequest);
    server.on('checkExpectation', opts.onRequest);
    server.on('connect', (_req: IncomingMessage, socket: Duplex) => {
      socket.on('error', () => socket.destroy());
      const st = this.#active.get(socket);
      if (st) st.reason ??= 'bad_http';
      refuseRaw(rt, socket, new SidecarError('bad_request', 'CONNECT inside a tunnel is not supported'), st?.start.requestId);
    });
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      const st = this.#active.get(socket);
      if (st) st.reason ??= err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'headers_timeout' : err.code?.startsWith('HPE_') ? 'bad_http' : 'tls_error';
      const refusal = clientErrorRefusal(err, socket, rt.config.proxy.maxHeaderBytes);
      if (!refusal) return socket.destroy();
      refuseClientError(rt, socket, refusal, st?.start.requestId);
    });
    // The server never listens; 'listening' starts node's connection tracking, which is what
    // enforces headersTimeout on the connections handed to it.
    server.emit('listening');
    this.server = server;
  }

  /** Tunnels open right now. */
  active(): number {
    return this.#active.size;
  }

  start(s: InterceptStart): void {
    const { socket, head } = s;
    const st: TunnelState = { start: s };
    // Bytes on the agent's connection after the CONNECT head, TLS records included: `head` was read
    // with the CONNECT and is counted here, as pass-through counts it.
    const readBefore = socket.bytesRead - head.length;
    const writtenBefore = socket.bytesWritten;
    this.#rt.metrics.activeTunnels.inc();
    this.#active.set(socket, st);
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      this.#active.delete(socket);
      this.#rt.metrics.activeTunnels.dec();
      const cut = st.reason === 'sni_mismatch' ? new SidecarError('tunnel_refused', 'the TLS server name differs from the CONNECT host') : undefined;
      recordTunnel(this.#rt, {
        type: 'tunnel_closed',
        requestId: s.requestId,
        outcome: 'intercepted',
        host: s.host,
        port: s.port,
        identity: s.identity,
        error: cut,
        closeReason: st.reason ?? 'closed',
        bytesIn: socket.bytesRead - readBefore,
        bytesOut: socket.bytesWritten - writtenBefore,
        durationMs: msSince(s.started),
      });
    };
    socket.once('close', finish);
    socket.once('end', () => {
      st.reason ??= 'client_closed';
    });
    // Nothing at all within the idle timeout: close.
    const idle = () => {
      st.reason ??= 'idle_timeout';
      socket.destroy();
    };
    socket.setTimeout(this.#idleMs, idle);
    const begin = (first: number) => {
      socket.setTimeout(0, idle);
      if (first === TLS_HANDSHAKE) this.#tls(socket, st);
      else if (first >= 65 && first <= 90) this.#plain(socket, st);
      else {
        st.reason = 'not_tls_or_http';
        socket.destroy();
      }
    };
    if (head.length > 0) {
      socket.unshift(head);
      begin(head[0]);
    } else {
      socket.once('data', (chunk: Buffer) => {
        socket.pause();
        socket.unshift(chunk);
        begin(chunk[0]);
      });
    }
  }

  #tls(socket: Socket, st: TunnelState): void {
    const s = st.start;
    let secure = false;
    const tlsSocket = new TLSSocket(socket, {
      isServer: true,
      secureContext: s.secureContext,
      ALPNProtocols: ['http/1.1'],
      // Called only when the client sends SNI; absent SNI (IP literal hosts) keeps the default leaf.
      SNICallback: (servername, cb) => {
        if (sameHost(servername, s.host)) cb(null, s.secureContext);
        else {
          st.reason = 'sni_mismatch';
          cb(new Error('TLS server name differs from the CONNECT host'));
        }
      },
    });
    tlsSocket.once('secure', () => {
      secure = true;
    });
    tlsSocket.once('end', () => {
      st.reason ??= 'client_closed';
    });
    tlsSocket.on('error', () => {
      st.reason ??= secure ? 'tls_error' : 'tls_handshake_failed';
      tlsSocket.destroy();
    });
    this.#active.set(tlsSocket, st);
    tlsSocket.once('close', () => this.#active.delete(tlsSocket));
    attachTunnelContext(tlsSocket, { host: s.host, port: s.port, scheme: 'https', token: s.token, connectRequestId: s.requestId });
    this.server.emit('connection', tlsSocket);
  }

  #plain(socket: Socket, st: TunnelState): void {
    const s = st.start;
    attachTunnelContext(socket, { host: s.host, port: s.port, scheme: 'http', token: s.token, connectRequestId: s.requestId });
    this.server.emit('connection', socket);
    socket.resume();
  }

  /** Cuts every open tunnel (shutdown, after the grace period); resolves once each is closed and recorded. */
  async close(): Promise<void> {
    const closing = [...this.#active].map(([socket, st]) => {
      st.reason ??= 'shutdown';
      const closed = new Promise((resolve) => socket.once('close', resolve));
      socket.destroy();
      return closed;
    });
    this.server.close();
    this.server.closeAllConnections();
    await Promise.all(closing);
  }
}
