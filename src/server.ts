/**
 * One process, two listeners: the proxy port (forward proxy, reverse routes, CONNECT) and the admin
 * port (/metrics, /healthz, /readyz, POST /reload). Owns startup order and graceful shutdown.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { openAuditSink } from './audit/sink.js';
import type { AuditEvent } from './audit/types.js';
import { createTokenVerifier } from './auth/verifier.js';
import type { LoadedConfig } from './config/load.js';
import { durationMs } from './config/schema.js';
import { createConnectHandler } from './ingress/connect.js';
import { Interceptor } from './ingress/intercept.js';
import { clientErrorRefusal, OpenSplices, refuseClientError } from './ingress/raw-socket.js';
import { whenSocketCloses } from './ingress/socket-close.js';
import { createUpgradeHandler } from './ingress/websocket.js';
import { createRequestHandler } from './pipeline/handler.js';
import { buildGeneration } from './runtime/generation.js';
import { type ConfigDrift, configDrift } from './runtime/config-drift.js';
import { PolicyReloader } from './runtime/reloader.js';
import type { Generation, Runtime } from './runtime/types.js';
import { createLogger, flushLogger, type Logger } from './telemetry/logger.js';
import { Metrics } from './telemetry/metrics.js';
import { startTlsRuntime, type TlsRuntime } from './tls/runtime.js';
import { Forwarder } from './upstream/forwarder.js';

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
  /** Collect process-level metrics (off in tests that start many sidecars in one process). */
  processMetrics?: boolean;
  /** Extra wiring, installed on the proxy server once CONNECT and upgrade handling are. */
  onProxyServer?: (server: Server, rt: Runtime) => void | Promise<void>;
}

export interface SidecarHandle {
  runtime: Runtime;
  /** The interception CA and leaf cache. */
  tls: TlsRuntime;
  proxyPort: number;
  adminPort: number;
  proxyUrl: string;
  adminUrl: string;
  reload(reason?: string): Promise<boolean>;
  /** Stops accepting, drains in-flight requests within shutdown.grace, flushes the audit log. */
  close(): Promise<void>;
}

/** 127.0.0.0/8, ::1 and their IPv4-mapped forms. */
export function isLoopbackAddress(addr: string | undefined): boolean {
  if (!addr) return false;
  const v4 = addr.startsWith('::ffff:') ? addr.slice(7) : addr;
  return v4.startsWith('127.') || addr === '::1';
}

function splitListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(listen.slice(i + 1)) };
}

function listen(server: Server, address: string, what: string): Promise<number> {
  const { host, port } = splitListen(address);
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const hint = err.code === 'EADDRINUSE' ? `${what} address ${address} is already in use; choose another port` : `${what} cannot listen on ${address}: ${err.message}`;
      reject(Object.assign(new Error(hint), { code: err.code }));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function urlOf(address: string, port: number): string {
  const { host } = splitListen(address);
  const h = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  return `http://${h}:${port}`;
}

/** The admin listener's paths and the one method each takes (GET also answers HEAD). */
const ADMIN_METHODS = { '/metrics': 'GET', '/healthz': 'GET', '/readyz': 'GET', '/reload': 'POST' } as const;

export async function startSidecar(loaded: LoadedConfig, opts: StartOptions = {}): Promise<SidecarHandle> {
  const { config } = loaded;
  const env = opts.env ?? process.env;
  const logger = opts.logger ?? createLogger(config.log.level);
  const metrics = new Metrics({ processMetrics: opts.processMetrics });
  let generation: Generation | undefined;
  // First: a CA that cannot be loaded is a configuration error, found before anything is opened.
  const tls = await startTlsRuntime(config.tls, { metrics, logger });
  // So is an upstream.caFile that cannot be read or holds no usable certificate.
  const forwarder = new Forwarder({
    connectTo: config.upstream.connectTo,
    caFile: config.upstream.caFile,
    connectTimeoutMs: durationMs(config.upstream.connectTimeout),
    headersTimeoutMs: durationMs(config.upstream.headersTimeout),
    bodyTimeoutMs: durationMs(config.upstream.bodyTimeout),
    connectionsPerOrigin: config.upstream.connectionsPerOrigin,
    responseReadTimeoutMs: durationMs(config.proxy.responseReadTimeout),
    onAgentStalled: (requestId) =>
      logger.warn({ request_id: requestId, after: config.proxy.responseReadTimeout }, 'response cut: the agent read none of it for proxy.responseReadTimeout'),
    onTrustReport: (r) => {
      metrics.upstreamCaReloads.inc({ result: r.result });
      if (r.result === 'success') logger.info({ file: r.file }, 'upstream CA file changed; new upstream connections verify against it');
      else logger.error({ file: r.file, reason: r.reason }, 'upstream CA file cannot be used; keeping the trust in service');
    },
  });

  // Lost audit records are logged at most once a minute, with how many since the last such line.
  let lostSinceLog = 0;
  let lostLoggedAt = 0;
  const audit = await openAuditSink({
    path: config.audit.path,
    onFailure: config.audit.onFailure,
    flushIntervalMs: durationMs(config.audit.flushInterval),
    maxQueue: config.audit.maxQueue,
    rotateBytes: config.audit.rotateBytes,
    rotateKeep: config.audit.rotateKeep,
    lock: {
      onWait: (holder) => logger.warn({ path: config.audit.path, holder }, 'audit log is locked by another writer; waiting to see whether it is still alive'),
      onLost: (reason) =>
        logger.error(
          { path: config.audit.path, reason },
          'audit log lock lost to another writer: this sidecar stopped writing the audit log and refuses requests (with audit.onFailure closed) until restarted',
        ),
      onRestored: () => logger.warn({ path: config.audit.path }, 'audit log lock file was removed; created it again'),
    },
    onWriteError: (err) => {
      metrics.auditWriteErrors.inc();
      logger.error({ err: err.message }, 'audit write failed');
    },
    onLost: (n) => {
      metrics.auditRecordsLost.inc(n);
      lostSinceLog += n;
      if (Date.now() - lostLoggedAt < 60_000) return;
      lostLoggedAt = Date.now();
      logger.error({ lost: lostSinceLog, onFailure: config.audit.onFailure }, 'audit records lost (not written); counted in agentwrit_sidecar_audit_records_lost_total');
      lostSinceLog = 0;
    },
  });
  const counted = metrics.verifierObserver();
  // A verifier that cannot start (say a missing key file) closes the audit log, releasing its lock.
  const verifier = await createTokenVerifier(config.broker, {
    observer: {
      ...counted,
      keyReload: (result, detail) => {
        counted.keyReload?.(result, detail);
        const url = /^https?:/.test(detail.file);
        const what = url ? 'broker JWKS URL' : 'broker key file';
        if (result === 'success') logger.info({ file: detail.file, kids: detail.kids }, `${what} changed; new keys in service, cached verifications dropped`);
        else logger.error({ file: detail.file, reason: detail.reason }, `${what} cannot be used; ${url ? 'keys in service stay (none before the first good answer)' : 'keeping the current keys'}`);
      },
    },
  }).catch(async (err) => {
    await audit.close().catch(() => {});
    throw err;
  });
  const rt: Runtime = { config, generation: () => generation, verifier, forwarder, audit, metrics, logger, draining: false, splices: new OpenSplices() };

  let unstarted: AuditEvent[] | undefined = [];
  const applied = (g: Generation) => {
    generation = g;
    // What only removed routes used is let go: their metric series, their CA files' trust and
    // connections. (A request of one still finishing takes up what it needs again, until the next reload.)
    metrics.retainRoutes(new Set(g.policy.routes.map((r) => r.id)));
    forwarder.retainRouteCaFiles(new Set(g.policy.routes.flatMap((r) => (r.def.caFile === undefined ? [] : [r.def.caFile]))));
    metrics.policyGeneration.set(g.id);
    metrics.policyRoutes.set(g.policy.routes.length);
    // The generation is in service whether or not the log can be written right now: kept. Until the
    // listeners are up, held back: a start that fails served nothing under it.
    const record: AuditEvent = { type: 'config_applied', time: new Date().toISOString(), generation: g.id, policy_digest: g.digest };
    if (unstarted) unstarted.push(record);
    else audit.append(record, true);
    // Tunnels and WebSockets it would not allow now end (their tunnel_closed records follow).
    const cut = rt.splices.recheck(g.policy);
    if (cut > 0) logger.info({ generation: g.id, connections: cut }, 'tunnels and WebSockets the new policy does not allow were closed');
  };
  try {
    applied(await buildGeneration(1, config.policies, loaded.baseDir, env));
    metrics.policyReloads.inc({ result: 'success' });
  } catch (err) {
    await Promise.allSettled([audit.close(), verifier.close(), forwarder.close()]);
    throw err;
  }
  const reloader = new PolicyReloader({
    policyPaths: config.policies,
    baseDir: loaded.baseDir,
    env,
    logger,
    current: () => generation,
    swap: applied,
    onResult: (ok) => metrics.policyReloads.inc({ result: ok ? 'success' : 'failure' }),
  });
  await reloader.start();
  /** A reload asked for (SIGHUP, POST /reload) also says what in the configuration file waits for a restart. */
  const checkConfigFile = async (reason: string): Promise<ConfigDrift | undefined> => {
    if (!loaded.fromFile) return undefined;
    const drift = await configDrift(loaded, env);
    metrics.configRestartPending.set(drift.kind === 'same' ? 0 : 1);
    if (drift.kind === 'changed') {
      logger.warn({ reason, file: loaded.file, sections: drift.sections }, 'sidecar configuration file changed; these sections take effect at the next restart');
    } else if (drift.kind === 'invalid') {
      logger.error({ reason, file: loaded.file, problems: drift.problems }, 'sidecar configuration file does not load now; the configuration in service stays, and a restart would fail');
    }
    return drift;
  };
  const reloadAll = async (reason: string) => {
    const [ok, drift] = await Promise.all([reloader.reload(reason), checkConfigFile(reason)]);
    return { ok, drift };
  };

  const handler = createRequestHandler(rt);
  const sockets = new Set<Socket>();
  // One count of requests in flight, from head to the response's close: the drain waits on it
  // and the inflight gauge reads it.
  let drained: (() => void) | undefined;
  const onClosed = () => {
    metrics.inflightRequests--;
    if (metrics.inflightRequests === 0 && drained) drained();
  };
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    metrics.inflightRequests++;
    if (rt.draining) res.setHeader('connection', 'close');
    if (res.socket) {
      res.on('close', onClosed); // 'close' comes once; one shared listener, no per-request closure
    } else {
      // Queued behind another response on a pipelining connection: node emits no close for it
      // when the connection goes, so the connection's close counts it out too (once).
      let open = true;
      const closed = () => {
        if (!open) return;
        open = false;
        unwatch();
        onClosed();
      };
      const unwatch = whenSocketCloses(req.socket, closed);
      res.on('close', closed);
    }
    handler(req, res);
  };
  const proxy = createServer(
    {
      maxHeaderSize: config.proxy.maxHeaderBytes,
      headersTimeout: durationMs(config.proxy.headersTimeout),
      // node looks for late request heads this often (30 s by default, which would stretch headersTimeout).
      connectionsCheckingInterval: Math.min(1000, durationMs(config.proxy.headersTimeout)),
      keepAliveTimeout: durationMs(config.proxy.keepAliveTimeout),
      requestTimeout: 0,
    },
    onRequest,
  );
  // Beyond this many open connections (each a file descriptor, two for a tunnel) new ones are closed
  // at once: an agent that opens them without end cannot take the process's last descriptors.
  proxy.maxConnections = config.proxy.maxConnections;
  let droppedLoggedAt = 0;
  proxy.on('drop', () => {
    metrics.connectionsDropped.inc();
    if (Date.now() - droppedLoggedAt < 60_000) return;
    droppedLoggedAt = Date.now();
    logger.warn({ maxConnections: config.proxy.maxConnections }, 'proxy.maxConnections reached: new connections are closed');
  });
  proxy.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  proxy.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    const refusal = clientErrorRefusal(err, socket, config.proxy.maxHeaderBytes);
    if (!refusal) return socket.destroy();
    refuseClientError(rt, socket, refusal);
  });
  // Expect: the pipeline answers (417 for anything but 100-continue), and sends 100 Continue only
  // once the request is allowed and its body is wanted; node would answer both itself.
  proxy.on('checkContinue', onRequest);
  proxy.on('checkExpectation', onRequest);
  // Requests inside intercepted tunnels and WebSocket upgrades run the same pipeline and counting.
  const onUpgrade = createUpgradeHandler(rt, {
    started: () => {
      metrics.inflightRequests++;
    },
    decided: onClosed,
  });
  const interceptor = new Interceptor({ rt, onRequest, onUpgrade });
  proxy.on('connect', createConnectHandler({ rt, tls, interceptor }));
  proxy.on('upgrade', onUpgrade);
  if (opts.onProxyServer) await opts.onProxyServer(proxy, rt);

  const admin = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    // HEAD is answered as GET (node sends no body); a known path asked with another method is 405.
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    const allow = ADMIN_METHODS[path as keyof typeof ADMIN_METHODS];
    if (allow !== undefined && method !== allow) {
      res.writeHead(405, { 'content-type': 'text/plain', allow: allow === 'GET' ? 'GET, HEAD' : allow });
      res.end('method not allowed\n');
      return;
    }
    if (method === 'GET' && path === '/metrics') {
      metrics.auditQueueDepth.set(audit.queueDepth());
      metrics.tokenCacheEntries.set(verifier.cacheSize());
      metrics.registry
        .metrics()
        .then((body) => {
          res.writeHead(200, { 'content-type': metrics.registry.contentType });
          res.end(body);
        })
        .catch(() => {
          res.writeHead(500);
          res.end();
        });
      return;
    }
    if (method === 'GET' && path === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"status":"ok"}');
      return;
    }
    if (method === 'GET' && path === '/readyz') {
      const checks = {
        generation: generation !== undefined,
        key: verifier.ready(),
        audit: audit.healthy() || config.audit.onFailure === 'open',
        draining: rt.draining,
      };
      const ready = checks.generation && checks.key && checks.audit && !checks.draining;
      res.writeHead(ready ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ready, ...checks, generationId: generation?.id }));
      return;
    }
    if (method === 'POST' && path === '/reload') {
      // The admin port is often bound to all interfaces for probes and scraping; changing state
      // stays a local operation.
      if (!isLoopbackAddress(req.socket.remoteAddress)) {
        res.writeHead(403, { 'content-type': 'text/plain' });
        res.end('reload is only accepted from loopback\n');
        return;
      }
      reloadAll('admin endpoint')
        .then(({ ok, drift }) => {
          res.writeHead(ok ? 200 : 422, { 'content-type': 'application/json' });
          const restart = drift?.kind === 'changed' ? { restartNeededFor: drift.sections } : drift?.kind === 'invalid' ? { configFileInvalid: true } : {};
          const problems = ok ? {} : { problems: reloader.lastProblems ?? [rt.draining ? 'the sidecar is shutting down' : 'the reload did not apply'] };
          res.end(JSON.stringify({ reloaded: ok, generation: generation?.id, ...problems, ...restart }));
        })
        .catch(() => {
          res.writeHead(500);
          res.end();
        });
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
  });

  let proxyPort: number;
  let adminPort: number;
  try {
    // The admin listener first: a start that cannot have both has served no request.
    adminPort = await listen(admin, config.admin.listen, 'admin');
    proxyPort = await listen(proxy, config.proxy.listen, 'proxy');
    // Serving from here on (nothing read off a socket yet): the generations applied so far come first.
    for (const record of unstarted) audit.append(record, true);
    unstarted = undefined;
  } catch (err) {
    reloader.stop();
    proxy.close();
    admin.close();
    void interceptor.close();
    await Promise.allSettled([audit.close(), verifier.close(), forwarder.close()]);
    throw err;
  }
  logger.info({ proxy: urlOf(config.proxy.listen, proxyPort), admin: urlOf(config.admin.listen, adminPort), verify: config.broker.verify, generation: generation?.id }, 'sidecar listening');

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      rt.draining = true;
      reloader.stop();
      proxy.close();
      proxy.closeIdleConnections();
      if (metrics.inflightRequests > 0) {
        await new Promise<void>((resolve) => {
          drained = resolve;
          setTimeout(resolve, durationMs(config.shutdown.grace)).unref();
        });
      }
      proxy.closeAllConnections();
      // Tunnels and WebSockets end now; their tunnel_closed records are written before the audit log closes.
      // WebSockets first (some run inside intercepted tunnels), so each records the shutdown as its reason.
      await Promise.all([rt.splices.cutAll(), interceptor.close()]);
      for (const s of sockets) s.destroy();
      await forwarder.close();
      // An audit log that cannot be completed is reported, after everything else is closed.
      let auditError: Error | undefined;
      try {
        await audit.close();
      } catch (e) {
        auditError = e instanceof Error ? e : new Error(String(e));
        logger.error({ err: auditError.message }, 'audit log not completed at shutdown');
      }
      await verifier.close();
      await generation?.connectors.dispose();
      // Its connections are closed at once: one left half-open (a scrape cut short) would hold
      // close() for as long as its client likes, past shutdown.grace.
      const adminClosed = new Promise<void>((resolve) => admin.close(() => resolve()));
      admin.closeAllConnections();
      await adminClosed;
      // The audit head hash, logged away from the audit file: what `audit verify` prints must match it.
      const head = audit.head();
      // Request lines still gathered go out first: the stopped line is the last one.
      flushLogger(logger);
      logger.info({ inflight: metrics.inflightRequests, audit_seq: head.seq, audit_head: head.hash }, 'sidecar stopped');
      flushLogger(logger);
      if (auditError) throw auditError;
    })();
    return closing;
  };

  return {
    runtime: rt,
    tls,
    proxyPort,
    adminPort,
    proxyUrl: urlOf(config.proxy.listen, proxyPort),
    adminUrl: urlOf(config.admin.listen, adminPort),
    reload: async (reason = 'api') => (await reloadAll(reason)).ok,
    close,
  };
}
