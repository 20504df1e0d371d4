/**
 * Client of the broker's `POST /v1/token/validate` (reference §2.1): the only place a real
 * AgentWrit broker reveals revocation. It always answers 200; `valid:false` covers every failure.
 * Anything else (status, network, timeout, malformed body) means we do not know, and we never
 * guess: the caller gets broker_unavailable.
 */
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { Pool } from 'undici';
import { SidecarError } from '../errors.js';

/** TLS towards an https broker: extra trust and, for AA_TLS_MODE=mtls, a client certificate. */
export interface BrokerTlsFiles {
  caFile?: string;
  clientCertFile?: string;
  clientKeyFile?: string;
}

function readPem(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${what} ${file} cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** undici connect options for the broker; read once at start (a new certificate needs a restart). */
function brokerTlsOptions(files: BrokerTlsFiles): Record<string, unknown> {
  const o: Record<string, unknown> = { minVersion: 'TLSv1.2' };
  if (files.caFile) o.ca = [...rootCertificates, readPem(files.caFile, 'broker.caFile')];
  if (files.clientCertFile && files.clientKeyFile) {
    o.cert = readPem(files.clientCertFile, 'broker.clientCertFile');
    o.key = readPem(files.clientKeyFile, 'broker.clientKeyFile');
  }
  return o;
}

export type ValidateAnswer = { valid: true; claims: Record<string, unknown> } | { valid: false };

const UNAVAILABLE = 'token validation service is unavailable';
/** A validate answer is a claims object; anything much larger is not one. */
const MAX_ANSWER_BYTES = 256 * 1024;

function unavailable(cause?: unknown): SidecarError {
  return new SidecarError('broker_unavailable', UNAVAILABLE, cause === undefined ? undefined : { cause });
}

export class BrokerClient {
  private readonly pool: Pool;
  private readonly path: string;

  constructor(
    brokerUrl: string,
    private readonly timeoutMs: number,
    tls: BrokerTlsFiles = {},
    connections = 16,
  ) {
    const url = new URL(brokerUrl);
    this.path = `${url.pathname.replace(/\/+$/, '')}/v1/token/validate`;
    this.pool = new Pool(url.origin, {
      connections,
      connect: { timeout: timeoutMs, ...(url.protocol === 'https:' ? brokerTlsOptions(tls) : {}) },
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
  }

  async validate(token: string): Promise<ValidateAnswer> {
    let text: string;
    try {
      const res = await this.pool.request({
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
