/**
 * The one way the sidecar reaches its broker: the validate endpoint (online.ts) and a JWKS URL
 * (keys.ts) share it. Towards an https broker it trusts the system CAs plus `broker.caFile` and, for
 * a broker with AA_TLS_MODE=mtls, presents `broker.clientCertFile`. The files are followed as they
 * are renewed (cert-manager, a Kubernetes Secret update): their identity is looked at, at most once
 * a second, before a call; files that load together replace the connection pool, whose calls in
 * flight finish on the old one. Files that do not load leave the current pool in service.
 */
import { createSecureContext, rootCertificates, type SecureContext, type SecureContextOptions } from 'node:tls';
import { Agent, type Dispatcher } from 'undici';
import { fileIdentity, fileIdentitySync, readNamedFile } from '../file-identity.js';

/** How often the broker TLS files are looked at for a renewed certificate. */
export const BROKER_TLS_RECHECK_MS = 1000;

/** TLS towards an https broker: extra trust and, for AA_TLS_MODE=mtls, a client certificate. */
export interface BrokerTlsFiles {
  caFile?: string;
  clientCertFile?: string;
  clientKeyFile?: string;
}

/**
 * undici connect options for the broker, read from the files now: one TLS context for every
 * connection (building one parses every CA, ≈17 ms with the system store). Throws when the files do
 * not load together (a PEM that does not parse, a key that is not the certificate's).
 */
function brokerTlsOptions(files: BrokerTlsFiles): { secureContext?: SecureContext } {
  if (!files.caFile && !files.clientCertFile) return {};
  const o: SecureContextOptions = { minVersion: 'TLSv1.2' };
  if (files.caFile) o.ca = [...rootCertificates, readNamedFile(files.caFile, 'broker.caFile')];
  if (files.clientCertFile && files.clientKeyFile) {
    o.cert = readNamedFile(files.clientCertFile, 'broker.clientCertFile');
    o.key = readNamedFile(files.clientKeyFile, 'broker.clientKeyFile');
  }
  try {
    return { secureContext: createSecureContext(o) };
  } catch (e) {
    throw new Error(`broker TLS files do not load together: ${(e as Error).message}`);
  }
}

/** A response body as text, refused (and the stream destroyed) past `maxBytes`. */
export async function readBounded(body: Dispatcher.ResponseData['body'], maxBytes: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > maxBytes) {
      body.destroy();
      throw new Error(`answer larger than ${maxBytes} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export class BrokerTransport {
  private agent: Agent;
  private readonly tlsFiles: string[];
  private tlsIdentity = '';
  private tlsCheckedAt = 0;
  private tlsChecking: Promise<void> | undefined;

  /**
   * `tls` applies when some broker URL is https (the caller decides); its files are read now, and
   * their errors name the file and the problem.
   */
  constructor(
    readonly timeoutMs: number,
    private readonly tls: BrokerTlsFiles = {},
    private readonly connections = 16,
  ) {
    this.tlsFiles = [tls.caFile, tls.clientCertFile, tls.clientKeyFile].filter((f): f is string => f !== undefined);
    const tlsOptions = brokerTlsOptions(tls);
    if (this.tlsFiles.length > 0) {
      this.tlsIdentity = this.tlsFiles.map(fileIdentitySync).join('|');
      this.tlsCheckedAt = Date.now();
    }
    this.agent = this.newAgent(tlsOptions);
  }

  private newAgent(tlsOptions: { secureContext?: SecureContext }): Agent {
    return new Agent({
      connections: this.connections,
      connect: { timeout: this.timeoutMs, ...tlsOptions },
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
    });
  }

  /** The dispatcher with the TLS files as they are now (see the module comment). */
  async dispatcher(): Promise<Dispatcher> {
    if (this.tlsFiles.length > 0 && Date.now() - this.tlsCheckedAt >= BROKER_TLS_RECHECK_MS) {
      this.tlsChecking ??= this.followTlsFiles().finally(() => {
        this.tlsCheckedAt = Date.now();
        this.tlsChecking = undefined;
      });
      await this.tlsChecking;
    }
    return this.agent;
  }

  private async followTlsFiles(): Promise<void> {
    try {
      const identity = (await Promise.all(this.tlsFiles.map(fileIdentity))).join('|');
      if (identity === this.tlsIdentity) return;
      const next = this.newAgent(brokerTlsOptions(this.tls));
      const old = this.agent;
      this.agent = next;
      this.tlsIdentity = identity;
      old.close().catch(() => {});
    } catch {
      // Missing or unloadable files: the agent in service keeps its certificate; looked at again later.
    }
  }

  /** GET `url` through this transport, reading at most `maxBytes` of body: the JWKS fetch. */
  async get(url: string, maxBytes: number): Promise<{ status: number; text: string }> {
    const target = new URL(url);
    const dispatcher = await this.dispatcher();
    const res = await dispatcher.request({ origin: target.origin, path: `${target.pathname}${target.search}`, method: 'GET', headers: { accept: 'application/json' } });
    return { status: res.statusCode, text: await readBounded(res.body, maxBytes) };
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}
