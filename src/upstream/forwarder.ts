/**
 * Upstream side of the proxy: one undici Pool per upstream origin (keep-alive), streaming both ways
 * with backpressure. `connectTo` dials another address without changing the name used for TLS
 * (SNI and certificate check), like curl --connect-to.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { Transform } from 'node:stream';
import { type ConnectionOptions, checkServerIdentity, type PeerCertificate } from 'node:tls';
import { buildConnector, type Dispatcher, Pool } from 'undici';
import type { OutboundRequest } from '../connectors/types.js';
import { SidecarError } from '../errors.js';
import { type BodyScanner, bodyOverrideCheck, METHOD_OVERRIDE_DETAIL } from '../ingress/method-override.js';
import { whenSocketCloses } from '../ingress/socket-close.js';
import { type TrustReport, UpstreamTrust } from './trust.js';

export interface ForwarderOptions {
  connectTo: Record<string, string>;
  caFile?: string;
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  connectionsPerOrigin: number;
  maxPools?: number;
  /** Longest an agent may leave a response unread while its connection is full (0: no limit). */
  responseReadTimeoutMs?: number;
  /** A response cut because its agent read nothing of it for responseReadTimeoutMs. */
  onAgentStalled?: (requestId: string) => void;
  /** A CA file that changed: taken into service, or not usable (the trust in service stays). */
  onTrustReport?: (r: TrustReport) => void;
}

export interface ForwardOptions {
  /** The route's caFile, trusted on top of the system CAs and upstream.caFile. */
  caFile?: string;
  requestId: string;
  maxBodyBytes: number;
  bodyIdleMs: number;
  hasBody: boolean;
}

export interface ForwardResult {
  status: number;
  /** Time to the upstream's response head, seconds. */
  upstreamSeconds: number;
  /** The request was refused (its body) after the upstream's answer had begun going to the agent. */
  error?: SidecarError;
}

/** Requests that may wait for a busy upstream's connection beyond those it has; more get 504 at once. */
const MAX_WAITING_PER_ORIGIN = 512;

/** RFC 9110 §7.6.1 connection-specific fields, plus proxy-only ones. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
  'host',
]);

/**
 * Removes hop-by-hop fields, every field the Connection header names, and the fields `drop` names.
 * Builds a new object rather than deleting from a copy, which would leave it slow to read.
 */
export function stripHopByHop(headers: Record<string, string | string[] | undefined>, drop?: (name: string) => boolean): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  let named: Set<string> | undefined;
  const conn = headers.connection;
  if (conn) {
    named = new Set(
      (Array.isArray(conn) ? conn.join(',') : conn)
        .split(',')
        .map((s) => s.trim().toLowerCase())
        .filter(Boolean),
    );
  }
  for (const k in headers) {
    const v = headers[k];
    if (v === undefined || HOP_BY_HOP.has(k) || named?.has(k) || drop?.(k)) continue;
    out[k] = v;
  }
  return out;
}

/** Fields that carry a URL an upstream may build from the request's own (a redirect keeping the query). */
const URL_FIELDS: ReadonlySet<string> = new Set(['location', 'content-location', 'link', 'refresh']);

/**
 * A response field's value without the credential text in `echoes` (a query `name=value` pair the
 * connector added). In a URL field each whole `?pair` / `&pair` parameter is taken out, so a
 * redirect still leads where it should (the sidecar adds the credential to the next request again);
 * a field that holds it any other way is not relayed at all (undefined).
 */
export function withoutEchoes(name: string, value: string, echoes: readonly string[]): string | undefined {
  let v = value;
  for (const pair of echoes) {
    for (let i = v.indexOf(pair); i >= 0; i = v.indexOf(pair)) {
      const before = v.charCodeAt(i - 1);
      const end = i + pair.length;
      const after = end < v.length ? v.charCodeAt(end) : -1;
      const whole = (before === 38 || before === 63) && (after === -1 || after === 38 || after === 35 || after === 62 || after === 34 || after === 59 || after === 32);
      if (!URL_FIELDS.has(name.toLowerCase()) || !whole) return undefined;
      // "?pair&rest" keeps "?rest"; "?pair" and "&pair" go with their separator.
      v = before === 63 && after === 38 ? v.slice(0, i) + v.slice(end + 1) : v.slice(0, i - 1) + v.slice(end);
    }
  }
  return v;
}

/**
 * The upstream's raw response head, minus hop-by-hop fields and any the Connection header names,
 * with our X-Request-ID, as the flat list node:http's writeHead accepts. One pass over the list;
 * fields a Connection header names (rare beyond close/keep-alive) are removed afterwards. With
 * `echoes` (a query credential), fields are relayed without it (withoutEchoes).
 */
export function relayHeaders(raw: Buffer[] | string[] | null, requestId: string, echoes?: readonly string[]): string[] {
  const out: string[] = [];
  let named: Set<string> | undefined;
  if (raw) {
    for (let i = 0; i < raw.length; i += 2) {
      const n = raw[i];
      const v = raw[i + 1];
      const name = typeof n === 'string' ? n : n.toString('latin1');
      const value = typeof v === 'string' ? v : v.toString('latin1');
      const lower = name.toLowerCase();
      if (HOP_BY_HOP.has(lower) || lower === 'x-request-id') {
        if (lower === 'connection') {
          for (const token of value.split(',')) {
            const t = token.trim().toLowerCase();
            if (t === '' || t === 'close' || t === 'keep-alive') continue;
            named ??= new Set();
            named.add(t);
          }
        }
        continue;
      }
      if (echoes === undefined) out.push(name, value);
      else {
        const kept = withoutEchoes(name, value, echoes);
        if (kept !== undefined) out.push(name, kept);
      }
    }
  }
  if (named) {
    const kept: string[] = [];
    for (let i = 0; i < out.length; i += 2) if (!named.has(out[i].toLowerCase())) kept.push(out[i], out[i + 1]);
    kept.push('x-request-id', requestId);
    return kept;
  }
  out.push('x-request-id', requestId);
  return out;
}

/** Maps a failure to reach or verify an upstream (undici or node:net/tls) to a stable error. */
export function upstreamErrorToSidecar(err: unknown): SidecarError {
  const e = err as { code?: string; name?: string };
  const code = e?.code ?? '';
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return new SidecarError('upstream_timeout', 'the upstream did not answer in time', { cause: err });
  }
  if (code.startsWith('ERR_TLS') || code.includes('CERT') || code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' || code === 'EPROTO') {
    return new SidecarError('upstream_tls_error', 'the upstream TLS connection could not be verified', { cause: err });
  }
  if (code === 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH') {
    return new SidecarError('bad_request', 'request body length does not match Content-Length', { cause: err });
  }
  return new SidecarError('upstream_unreachable', 'the upstream could not be reached', { cause: err });
}

/**
 * The request body on its way upstream: counted against `maxBytes` when it has no Content-Length
 * (undici holds a declared one to its length, checked against the limit before), cut when no byte
 * passes for `idleMs` once `start` is called, and cut before a `_method` form field or JSON key (a
 * method override, method-override.ts) passes. Each error reaches the Exchange as the upstream request's
 * failure; the upstream has then had part of the body only, and its connection closes.
 */
function bodyGuard(maxBytes: number | undefined, idleMs: number, overrides: BodyScanner | undefined): { guard: Transform; start: () => void } {
  let seen = 0;
  let timer: NodeJS.Timeout | undefined;
  const guard = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      timer?.refresh();
      seen += chunk.length;
      if (maxBytes !== undefined && seen > maxBytes) cb(new SidecarError('payload_too_large', `request body exceeds ${maxBytes} bytes`));
      else if (overrides?.feed(chunk)) cb(new SidecarError('ambiguous_request', METHOD_OVERRIDE_DETAIL('body')));
      else cb(null, chunk);
    },
    flush(cb) {
      clearTimeout(timer);
      cb();
    },
    destroy(err, cb) {
      clearTimeout(timer);
      cb(err);
    },
  });
  // undici reports the guard's error while it reads the body; once the exchange is over it no
  // longer listens, and an unheard stream error would end the process.
  guard.on('error', () => {});
  // The idle clock runs from when the request has a connection: waiting for one is not the agent's
  // delay (that wait has its own limit, headersTimeout).
  const start = () => {
    if (timer !== undefined || guard.destroyed) return;
    timer = setTimeout(() => guard.destroy(new SidecarError('request_timeout', `no request body bytes moved for ${idleMs / 1000} s`)), idleMs);
    timer.unref();
  };
  return { guard, start };
}

/**
 * One upstream exchange, as undici's dispatch handler with the raw header list: the response head
 * goes to the agent as a flat [name, value, ...] array, without building a header object first.
 * Settles once: resolves with the status when the response is relayed (or the agent went away),
 * rejects with a SidecarError while nothing was written to the agent yet.
 */
class Exchange implements Dispatcher.DispatchHandler {
  private readonly started = process.hrtime.bigint();
  private status = 0;
  private upstreamSeconds = 0;
  private abortUpstream: ((err: Error) => void) | undefined;
  private resumeUpstream: (() => void) | undefined;
  private clientGone = false;
  private settled = false;
  private finished = false;
  private queueTimer: NodeJS.Timeout | undefined;
  private waitingDrain = false;
  /** Runs while the agent's socket is full: an agent that reads nothing for stallMs is cut. */
  private stallTimer: NodeJS.Timeout | undefined;
  /** The upstream's response head, written to the agent with the first body byte or at the end. */
  private head: Buffer[] | undefined;
  private bodyStarted = false;
  private readonly unwatchSocket: (() => void) | undefined;
  private readonly onDrain = () => {
    this.waitingDrain = false;
    this.resumeUpstream?.();
  };
  /**
   * The agent took none of the response for stallMs while the upstream waits (paused, undici's body
   * timeout does not run): both connections would be held for as long as the agent likes. One timer
   * serves the exchange: each time the socket fills it is set again (refresh() re-arms a timer that
   * went off while the agent was reading).
   */
  private readonly onStall = () => {
    if (this.settled || !this.waitingDrain) return;
    this.onAgentStalled?.(this.requestId);
    this.abortUpstream?.(new Error('the agent read nothing of the response in time'));
  };
  private readonly onClose = () => {
    if (this.settled || this.res.writableFinished) return;
    this.clientGone = true;
    this.abortUpstream?.(new Error('client closed the connection'));
  };

  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly requestId: string,
    private readonly resolve: (r: ForwardResult) => void,
    private readonly reject: (err: unknown) => void,
    /** Called once undici is done with the request (it may outlive the answer to the agent). */
    private readonly done: () => void,
    /** Called when the request has its upstream connection (the request body's idle clock starts). */
    private readonly connected: (() => void) | undefined,
    /** Longest the agent may leave the response unread (0: no limit). */
    private readonly stallMs: number,
    private readonly onAgentStalled: ((requestId: string) => void) | undefined,
    /** Credential text the response must not carry back to the agent (OutboundRequest.echoes). */
    private readonly echoes: readonly string[] | undefined,
    /** Set when every connection to the upstream is busy: the longest wait for one. */
    queueLimitMs?: number,
  ) {
    res.on('close', this.onClose);
    // A response queued behind another on a pipelining connection gets no close of its own.
    if (!res.socket && req.socket) this.unwatchSocket = whenSocketCloses(req.socket, this.onClose);
    // The agent left before the request got here (while its token or credential was awaited): its
    // close came and went, and onConnect will send nothing.
    if (res.destroyed || req.socket?.destroyed) this.clientGone = true;
    if (queueLimitMs !== undefined) {
      this.queueTimer = setTimeout(() => this.settle(new SidecarError('upstream_timeout', 'no connection to the upstream became free in time')), queueLimitMs);
      this.queueTimer.unref();
    }
  }

  onConnect(abort: (err?: Error) => void): void {
    clearTimeout(this.queueTimer);
    this.abortUpstream = abort;
    // The agent left, or was answered already (it waited too long for a connection): send nothing.
    if (this.clientGone || this.settled) abort(new Error('the request is no longer wanted'));
    else this.connected?.();
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) return true; // interim responses are not relayed
    this.resumeUpstream = resume;
    this.upstreamSeconds = Number(process.hrtime.bigint() - this.started) / 1e9;
    this.status = statusCode;
    this.head = rawHeaders;
    // Answered before the agent's body was all read: that rest is never read, so the connection
    // cannot carry another request (node would wait for it): it closes after this response.
    if (!this.req.complete) this.res.shouldKeepAlive = false;
    return true;
  }

  /** The head goes out with the first body byte or at the end: a failure before either is still a 502/504. */
  private writeHead(): void {
    const raw = this.head;
    if (raw === undefined) return;
    this.head = undefined;
    this.res.writeHead(this.status, relayHeaders(raw, this.requestId, this.echoes));
  }

  onData(chunk: Buffer): boolean {
    if (!this.bodyStarted) {
      this.bodyStarted = true;
      this.writeHead();
    }
    if (this.res.write(chunk)) return true;
    this.waitingDrain = true;
    this.res.once('drain', this.onDrain);
    if (this.stallMs > 0) {
      if (this.stallTimer === undefined) {
        this.stallTimer = setTimeout(this.onStall, this.stallMs);
        this.stallTimer.unref();
      } else this.stallTimer.refresh();
    }
    return false;
  }

  onComplete(): void {
    this.writeHead();
    this.res.end();
    this.settle();
    this.finish();
  }

  onError(err: Error): void {
    // A 304 or 204 that announced a Content-Length has no body to send it (RFC 9110 §8.6); undici
    // counts it as cut short. Nothing is missing: relayed as it came.
    const code = (err as { code?: string }).code;
    if (code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' && (this.status === 304 || this.status === 204) && !this.bodyStarted && !this.clientGone) {
      this.onComplete();
      return;
    }
    this.settle(err);
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.queueTimer);
    this.unwatchSocket?.();
    this.done();
  }

  private settle(err?: unknown): void {
    if (this.settled) return;
    this.settled = true;
    const { res, status, upstreamSeconds } = this;
    // The close listener stays: it does nothing once settled, and the response is done with.
    if (this.waitingDrain) res.off('drain', this.onDrain);
    clearTimeout(this.stallTimer);
    const refusal = err instanceof SidecarError ? err : (err as { cause?: unknown })?.cause instanceof SidecarError ? ((err as { cause: SidecarError }).cause) : undefined;
    if (err === undefined) this.resolve({ status, upstreamSeconds });
    else if (this.clientGone) this.resolve({ status: status || 499, upstreamSeconds });
    else if (res.headersSent) {
      // Cut mid-body: a reset, not a clean close, so that an agent reading to the close (HTTP/1.0,
      // no length) sees an error rather than a shorter response. A refusal of the request's body
      // that came after the answer began is recorded with that answer's status.
      try {
        (res.socket as import('node:net').Socket | null)?.resetAndDestroy();
      } catch {
        // not a TCP socket (inside a TLS tunnel): destroyed below
      }
      res.destroy();
      this.resolve({ status, upstreamSeconds, error: refusal });
    } else if (refusal) this.reject(refusal);
    else this.reject(upstreamErrorToSidecar(err));
  }
}

export class Forwarder {
  private readonly pools = new Map<string, Pool>();
  /** Requests each pool holds (running or queued): beyond its connections, the next one waits. */
  private readonly held = new WeakMap<Pool, number>();
  private readonly trust: UpstreamTrust;
  private closed = false;

  constructor(private readonly opts: ForwarderOptions) {
    this.trust = new UpstreamTrust(opts.caFile, (routeCaFile) => this.trustRenewed(routeCaFile), opts.onTrustReport);
  }

  /** A CA file changed (trust.ts): the https pools built on the old trust take no new requests and close once idle. */
  private trustRenewed(routeCaFile: string | undefined): void {
    for (const [key, pool] of this.pools) {
      if (!key.startsWith('https://') || (routeCaFile !== undefined && !key.endsWith(`|${routeCaFile}`))) continue;
      this.pools.delete(key);
      pool.close().catch(() => {});
    }
  }

  /**
   * Lets go of route CA files not in `files` (routes a reload removed): their trust, and the pools
   * built on it, which take no new requests and close once the ones they hold are done.
   */
  retainRouteCaFiles(files: ReadonlySet<string>): void {
    this.trust.retain(files);
    for (const [key, pool] of this.pools) {
      const caFile = key.slice(key.indexOf('|') + 1);
      if (caFile === '' || files.has(caFile)) continue;
      this.pools.delete(key);
      pool.close().catch(() => {});
    }
  }

  /**
   * How to open a raw connection to an upstream (WebSocket upgrades), with the same dialing
   * (connectTo) and TLS rules as pooled requests: verified, SNI set, TLS 1.2 or later.
   */
  dialOptions(origin: OutboundRequest['origin'], caFile?: string): { host: string; port: number; tls?: ConnectionOptions } {
    const target = this.opts.connectTo[`${origin.host}:${origin.port}`];
    const i = target ? target.lastIndexOf(':') : -1;
    const host = target ? target.slice(0, i).replace(/^\[|\]$/g, '') : origin.host;
    const port = target ? Number(target.slice(i + 1)) : origin.port;
    if (origin.scheme !== 'https') return { host, port };
    return {
      host,
      port,
      tls: {
        secureContext: this.trust.context(caFile),
        rejectUnauthorized: true,
        minVersion: 'TLSv1.2',
        servername: isIP(origin.host) ? undefined : origin.host,
        // The name checked is the origin's, never the address dialed through connectTo.
        checkServerIdentity: (_host, cert) => checkServerIdentity(origin.host, cert),
        ALPNProtocols: ['http/1.1'],
      },
    };
  }

  private pool(origin: OutboundRequest['origin'], caFile?: string): Pool {
    const key = `${origin.scheme}://${origin.host}:${origin.port}|${caFile ?? ''}`;
    let pool = this.pools.get(key);
    if (pool) return pool;
    if (this.closed) throw new SidecarError('shutting_down', 'the sidecar is shutting down');
    const hostPort = `${origin.host}:${origin.port}`;
    const target = this.opts.connectTo[hostPort];
    const https = origin.scheme === 'https';
    const base = buildConnector({
      timeout: this.opts.connectTimeoutMs,
      ...(https
        ? {
            secureContext: this.trust.context(caFile),
            rejectUnauthorized: true,
            minVersion: 'TLSv1.2' as const,
            // The name checked is the origin's, never the address dialed through connectTo (an IP
            // origin sends no SNI, and node would check the dialed address).
            checkServerIdentity: (_host: string, cert: PeerCertificate) => checkServerIdentity(origin.host, cert),
          }
        : {}),
    });
    const servername = isIP(origin.host) ? undefined : origin.host;
    const connect: buildConnector.connector = (o, cb) => {
      if (target) {
        const i = target.lastIndexOf(':');
        base({ ...o, hostname: target.slice(0, i).replace(/^\[|\]$/g, ''), port: target.slice(i + 1), servername }, cb);
      } else {
        base({ ...o, servername }, cb);
      }
    };
    const originUrl = `${origin.scheme}://${origin.host.includes(':') ? `[${origin.host}]` : origin.host}:${origin.port}`;
    pool = new Pool(originUrl, {
      connections: this.opts.connectionsPerOrigin,
      connect,
      headersTimeout: this.opts.headersTimeoutMs,
      bodyTimeout: this.opts.bodyTimeoutMs,
      keepAliveTimeout: 4_000,
    });
    if (this.pools.size >= (this.opts.maxPools ?? 256)) {
      const oldest = this.pools.keys().next().value as string;
      const old = this.pools.get(oldest);
      this.pools.delete(oldest);
      old?.close().catch(() => {});
    }
    this.pools.set(key, pool);
    return pool;
  }

  /**
   * Sends `out` upstream with the agent's request body and streams the answer into `res`, with
   * backpressure (the upstream read pauses while the agent's socket is full). Rejects with a
   * SidecarError before the response head is written; after that, failures destroy the response
   * (the client sees a truncated body, as with any proxy). A client that goes away aborts the
   * upstream request, which frees its connection.
   */
  forward(
    out: OutboundRequest,
    req: IncomingMessage,
    res: ServerResponse,
    opts: ForwardOptions,
  ): Promise<ForwardResult> {
    const renewing = this.trustLook(out.origin, opts.caFile);
    return renewing ? renewing.then(() => this.send(out, req, res, opts)) : this.send(out, req, res, opts);
  }

  /**
   * Towards https, at most once a second the CA files are looked at before a request (trust.ts):
   * what to wait for first, if anything (at most LOOK_WAIT_MS).
   */
  trustLook(origin: OutboundRequest['origin'], caFile?: string): Promise<void> | undefined {
    return origin.scheme === 'https' ? this.trust.follow(caFile) : undefined;
  }

  private send(out: OutboundRequest, req: IncomingMessage, res: ServerResponse, opts: ForwardOptions): Promise<ForwardResult> {
    const pool = this.pool(out.origin, opts.caFile);
    // Every connection busy: this request waits in the pool's queue, at most headersTimeout (504 after),
    // and only so many wait (each one waiting is memory, and undici keeps it queued even once answered).
    const held = (this.held.get(pool) ?? 0) + 1;
    if (held > this.opts.connectionsPerOrigin + MAX_WAITING_PER_ORIGIN) {
      throw new SidecarError('upstream_timeout', 'every connection to the upstream is busy and too many requests wait for one');
    }
    // A body that may carry a method override and cannot be read for one goes nowhere.
    const overrides = opts.hasBody ? bodyOverrideCheck(req.headers) : undefined;
    if (typeof overrides === 'string') throw new SidecarError('ambiguous_request', overrides);
    this.held.set(pool, held);
    let body: Transform | undefined;
    let connected: (() => void) | undefined;
    if (opts.hasBody) {
      const g = bodyGuard(req.headers['content-length'] === undefined ? opts.maxBodyBytes : undefined, opts.bodyIdleMs, overrides);
      body = req.pipe(g.guard);
      connected = g.start;
    }
    const release = () => {
      this.held.set(pool, (this.held.get(pool) ?? 1) - 1);
      // The exchange is over: a body not read to its end is not needed any more (nor its timer).
      body?.destroy();
    };
    // (headersTimeout 0 is undici's "no limit": then no limit here either.)
    const queueLimitMs = held > this.opts.connectionsPerOrigin && this.opts.headersTimeoutMs > 0 ? this.opts.headersTimeoutMs : undefined;
    return new Promise<ForwardResult>((resolve, reject) => {
      const exchange = new Exchange(req, res, opts.requestId, resolve, reject, release, connected, this.opts.responseReadTimeoutMs ?? 0, this.opts.onAgentStalled, out.echoes, queueLimitMs);
      try {
        pool.dispatch({ path: out.path, method: out.method as Dispatcher.HttpMethod, headers: out.headers, body }, exchange);
      } catch (err) {
        exchange.onError(err as Error);
      }
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.pools.values()].map((p) => p.close().catch(() => {})));
    this.pools.clear();
  }
}
