/**
 * Client of the broker's `POST /v1/token/validate` (reference §2.1): the only place a real
 * AgentWrit broker reveals revocation. It always answers 200; `valid:false` covers every failure.
 * Anything else (status, network, timeout, malformed body) means we do not know, and we never
 * guess: the caller gets broker_unavailable.
 */
import { SidecarError } from '../errors.js';
import { type BrokerTransport, readBounded } from './broker-transport.js';

export type ValidateAnswer = { valid: true; claims: Record<string, unknown> } | { valid: false };

const UNAVAILABLE = 'token validation service is unavailable';
/** A validate answer is a claims object; anything much larger is not one. */
const MAX_ANSWER_BYTES = 256 * 1024;

function unavailable(cause?: unknown): SidecarError {
  return new SidecarError('broker_unavailable', UNAVAILABLE, cause === undefined ? undefined : { cause });
}

/** Calls the validate endpoint of `brokerUrl` through the shared broker transport. */
export class BrokerClient {
  private readonly path: string;
  private readonly origin: string;

  constructor(
    brokerUrl: string,
    private readonly transport: BrokerTransport,
  ) {
    const url = new URL(brokerUrl);
    this.path = `${url.pathname.replace(/\/+$/, '')}/v1/token/validate`;
    this.origin = url.origin;
  }

  async validate(token: string): Promise<ValidateAnswer> {
    let text: string;
    try {
      const dispatcher = await this.transport.dispatcher();
      const res = await dispatcher.request({
        origin: this.origin,
        method: 'POST',
        path: this.path,
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify({ token }),
        signal: AbortSignal.timeout(this.transport.timeoutMs),
      });
      if (res.statusCode !== 200) {
        res.body.resume();
        throw unavailable({ code: `HTTP ${res.statusCode}` });
      }
      text = await readBounded(res.body, MAX_ANSWER_BYTES);
    } catch (e) {
      if (e instanceof SidecarError) throw e;
      throw unavailable(e);
    }
    let answer: unknown;
    try {
      answer = JSON.parse(text);
    } catch {
      // Not the parser's message: it quotes the answer, which may hold the token.
      throw unavailable({ code: 'answer is not JSON' });
    }
    const a = answer as { valid?: unknown; claims?: unknown } | null;
    if (a === null || typeof a !== 'object') throw unavailable({ code: 'answer is not a validate answer' });
    if (a.valid === false) return { valid: false };
    if (a.valid === true && a.claims !== null && typeof a.claims === 'object' && !Array.isArray(a.claims)) {
      return { valid: true, claims: a.claims as Record<string, unknown> };
    }
    throw unavailable({ code: 'answer is not a validate answer' });
  }
}
