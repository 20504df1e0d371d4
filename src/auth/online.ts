/**
 * Client of the broker's `POST /v1/token/validate` (reference §2.1): the only place a real
 * AgentWrit broker reveals revocation. It always answers 200; `valid:false` covers every failure.
 * Anything else (status, network, timeout, malformed body) means we do not know, and we never
 * guess: the caller gets broker_unavailable.
 */
import { createSecureContext, rootCertificates, type SecureContext, type SecureContextOptions } from 'node:tls';
import { Pool } from 'undici';
import { SidecarError } from '../errors.js';
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
function brokerTlsOptions(files: BrokerTlsFiles): { secureContext: SecureContext } {
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

export type ValidateAnswer = { valid: true; claims: Record<string, unknown> } | { valid: false };

const UNAVAILABLE = 'token validation service is unavailable';
/** A validate answer is a claims object; anything much larger is not one. */
const MAX_ANSWER_BYTES = 256 * 1024;

function unavailable(cause?: unknown): SidecarError {
  return new SidecarError('broker_unavailable', UNAVAILABLE, cause === undefined ? undefined : { cause });
}

/**
 * The broker connection pool. With an https broker, the CA and client certificate files are
 * followed as they are renewed (cert-manager, a Kubernetes Secret update): their identity is looked
 * at, at most once a second, before a call; new files that load together replace the pool, whose
 * calls in flight finish on the old one. Files that do not load leave the current pool in service.
 */
export class BrokerClient {
  private pool: Pool;
  private readonly path: string;
  private readonly origin: string;
  private readonly tlsFiles: string[];
  private tlsIdentity = '';
  private tlsCheckedAt = 0;
  private tlsChecking: Promise<void> | undefined;

  constructor(
    brokerUrl: string,
    private readonly timeoutMs: number,
    private readonly tls: BrokerTlsFiles = {},
    private readonly connections = 16,
  ) {
    const url = new URL(brokerUrl);
    this.path = `${url.pathname.replace(/\/+$/, '')}/v1/token/validate`;
    this.origin = url.origin;
    const https = url.protocol === 'https:';
    this.tlsFiles = https ? [tls.caFile, tls.clientCertFile, tls.clientKeyFile].filter((f): f is string => f !== undefined) : [];
    // Read first: its errors name the file and the problem.
    const tlsOptions = https ? brokerTlsOptions(tls) : {};
    if (this.tlsFiles.length > 0) {
      this.tlsIdentity = this.tlsFiles.map(fileIdentitySync).join('|');
      this.tlsCheckedAt = Date.now();
    }
    this.pool = this.newPool(tlsOptions);
  }

  private newPool(tlsOptions: { secureContext?: SecureContext }): Pool {
    return new Pool(this.origin, {
      connections: this.connections,
      connect: { timeout: this.timeoutMs, ...tlsOptions },
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
    });
  }

  /** A pool with the TLS files as they are now (see the class comment). */
  private async currentPool(): Promise<Pool> {
    if (this.tlsFiles.length > 0 && Date.now() - this.tlsCheckedAt >= BROKER_TLS_RECHECK_MS) {
      this.tlsChecking ??= this.followTlsFiles().finally(() => {
        this.tlsCheckedAt = Date.now();
        this.tlsChecking = undefined;
      });
      await this.tlsChecking;
    }
    return this.pool;
  }

  private async followTlsFiles(): Promise<void> {
    try {
      const identity = (await Promise.all(this.tlsFiles.map(fileIdentity))).join('|');
      if (identity === this.tlsIdentity) return;
      const next = this.newPool(brokerTlsOptions(this.tls));
      const old = this.pool;
      this.pool = next;
      this.tlsIdentity = identity;
      old.close().catch(() => {});
    } catch {
      // Missing or unloadable files: the pool in service keeps its certificate; looked at again later.
    }
  }

  async validate(token: string): Promise<ValidateAnswer> {
    let text: string;
    try {
      const pool = await this.currentPool();
      const res = await pool.request({
        method: 'POST',
        path: this.path,
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify({ token }),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      if (res.statusCode !== 200) {
        res.body.resume();
        throw unavailable();
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of res.body) {
        size += chunk.length;
        if (size > MAX_ANSWER_BYTES) {
          res.body.destroy();
          throw unavailable();
        }
        chunks.push(chunk);
      }
      text = Buffer.concat(chunks).toString('utf8');
    } catch (e) {
      if (e instanceof SidecarError) throw e;
      throw unavailable(e);
    }
    let answer: unknown;
    try {
      answer = JSON.parse(text);
    } catch (e) {
      throw unavailable(e);
    }
    const a = answer as { valid?: unknown; claims?: unknown } | null;
    if (a === null || typeof a !== 'object') throw unavailable();
    if (a.valid === false) return { valid: false };
    if (a.valid === true && a.claims !== null && typeof a.claims === 'object' && !Array.isArray(a.claims)) {
      return { valid: true, claims: a.claims as Record<string, unknown> };
    }
    throw unavailable();
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}
