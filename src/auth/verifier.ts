/**
 * The token verifier the pipeline calls on every request: offline, online or hybrid (DESIGN §3),
 * with a bounded cache of answers keyed by a SHA-256 digest of the token (the token itself is
 * never kept) and one shared in-flight broker call per token.
 */
import { hash, type KeyObject } from 'node:crypto';
import { decodeProtectedHeader } from 'jose';
import { durationMs, type SidecarConfig } from '../config/schema.js';
import { type ErrorCode, isSidecarError, SidecarError } from '../errors.js';
import { TokenCache } from './cache.js';
import { type ClaimRules, checkClaims, DETAIL, expiryDeadlineMs, identityFromClaims, parseDelegationChain, tokenInvalid } from './claims.js';
import { goJson, verifyDelegationChain } from './delegation.js';
import { type KeySource, loadKeySource } from './keys.js';
import { OfflineVerifier } from './offline.js';
import { BrokerTransport } from './broker-transport.js';
import { BrokerClient, type ValidateAnswer } from './online.js';
import type { AgentIdentity, TokenVerifier, VerifierObserver, VerifyResult, VerifySource } from './types.js';

export { identityFromClaims } from './claims.js';
export { computeKid } from './keys.js';

/** Far above any real AgentWrit token (a 5-record chain is a few KB); bounds the work per request. */
const MAX_TOKEN_LENGTH = 64 * 1024;
const NEVER = Number.NEGATIVE_INFINITY;
const PRUNE_INTERVAL_MS = 30_000;
/**
 * Share of revalidateAfter from which a request still served from the cache also starts the next
 * broker call in the background, so a token in steady use rarely has a request wait for the broker
 * (each one past revalidateAfter would). No answer older than revalidateAfter is ever used, so the
 * revocation window is unchanged; a refusal that comes back early applies at once.
 */
const REFRESH_AHEAD = 0.75;

/** A cached refusal. Only answers about authentic tokens are cached, so garbage cannot flush the cache. */
class Refusal {
  constructor(
    readonly code: ErrorCode,
    readonly detail: string,
  ) {}
}
const REVOKED = new Refusal('token_revoked', 'token has been revoked or released');
const ONLINE_INVALID = 'token is invalid, expired or revoked';

type Entry = AgentIdentity | Refusal;
type Probe =
  | { kind: 'miss' }
  | { kind: 'fresh'; identity: AgentIdentity; refresh: boolean }
  | { kind: 'stale'; identity: AgentIdentity }
  | { kind: 'refused'; error: SidecarError }
  | { kind: 'expired' };
const MISS: Probe = { kind: 'miss' };
const EXPIRED: Probe = { kind: 'expired' };

function wellSized(token: string): boolean {
  return typeof token === 'string' && token.length > 0 && token.length <= MAX_TOKEN_LENGTH;
}
type Outcome = Parameters<VerifierObserver['verification']>[0];

const OUTCOMES: Partial<Record<ErrorCode, Outcome>> = {
  token_expired: 'expired',
  token_revoked: 'revoked',
  broker_unavailable: 'unavailable',
};

export interface VerifierOptions {
  observer?: VerifierObserver;
  /** Wall clock in ms, for exp and nbf (tests). */
  now?: () => number;
  /**
   * Clock in ms that only moves forward, for the age of broker answers: a wall clock stepped back
   * would make an old answer look fresh. Defaults to performance.now, or to `now` when that is given.
   */
  monotonic?: () => number;
}

/** A broker call (offline: a signature check) in flight for a token, and when it was started (monotonic ms). */
interface InFlight {
  result: Promise<VerifyResult>;
  sentAt: number;
}

class Verifier implements TokenVerifier {
  private readonly cache: TokenCache<Entry>;
  private readonly inflight = new Map<string, InFlight>();
  private readonly offline: OfflineVerifier | undefined;
  private readonly rules: ClaimRules;
  private readonly online: boolean;
  private readonly revalidateMs: number;
  private readonly refreshAfterMs: number;
  private readonly missSource: VerifySource;
  private readonly pruner: NodeJS.Timeout;
  /** Counts key changes: an answer worked out under an earlier key is not cached. */
  private keyEpoch = 0;

  constructor(
    private readonly broker: SidecarConfig['broker'],
    private readonly keys: KeySource | undefined,
    private readonly client: BrokerClient | undefined,
    /** Closed with the verifier: the connections of `client` and of a JWKS URL. */
    private readonly transport: BrokerTransport | undefined,
    private readonly observer: VerifierObserver | undefined,
    private readonly now: () => number,
    private readonly monotonic: () => number,
  ) {
    const mode = broker.verify ?? 'hybrid';
    this.rules = { issuer: broker.issuer || undefined, audience: broker.audience || undefined, leewayMs: durationMs(broker.leeway) };
    this.offline =
      mode === 'online' || !keys ? undefined : new OfflineVerifier(keys, { rules: this.rules, verifyDelegationChain: broker.verifyDelegationChain });
    this.online = mode !== 'offline';
    this.revalidateMs = durationMs(broker.revalidateAfter);
    this.refreshAfterMs = this.revalidateMs * REFRESH_AHEAD;
    this.missSource = mode === 'online' ? 'online' : 'offline';
    this.cache = new TokenCache<Entry>(broker.cacheSize);
    this.pruner = setInterval(() => this.cache.prune(this.now()), PRUNE_INTERVAL_MS);
    this.pruner.unref();
  }

  /**
   * What the cache holds for a token digest right now (read only: verify() drops expired entries):
   * `now` is wall time (exp), `mono` the monotonic time answers are aged by.
   */
  private probe(key: string, now: number, mono: number): Probe {
    const slot = this.cache.lookup(key);
    if (slot === -1) return MISS;
    if (now >= this.cache.deadline(slot)) return EXPIRED;
    const entry = this.cache.value(slot);
    if (entry instanceof Refusal) return { kind: 'refused', error: new SidecarError(entry.code, entry.detail) };
    if (!this.online) return { kind: 'fresh', identity: entry, refresh: false };
    const age = mono - this.cache.checkedAt(slot);
    if (age < this.revalidateMs) return { kind: 'fresh', identity: entry, refresh: age >= this.refreshAfterMs };
    return { kind: 'stale', identity: entry };
  }

  /** A cached positive answer; starts the next broker call when it is due (see REFRESH_AHEAD). */
  private hit(token: string, key: string, found: Probe & { kind: 'fresh' }): VerifyResult {
    if (found.refresh && this.joinable(key) === undefined) {
      // Not awaited: a failure leaves the entry as it was, and the first request past
      // revalidateAfter asks again (and is refused if the broker still cannot answer).
      void this.share(key, this.revalidate(token, key, found.identity), this.monotonic());
    }
    this.observer?.verification('ok', 'cache');
    return { identity: found.identity, source: 'cache' };
  }

  /**
   * Registers the one broker call in flight for a token; later requests with it wait on the same
   * call while it is younger than revalidateAfter (see joinable).
   */
  private share(key: string, started: Promise<VerifyResult>, sentAt: number): Promise<VerifyResult> {
    const entry: InFlight = { result: started, sentAt };
    const forget = () => {
      if (this.inflight.get(key) === entry) this.inflight.delete(key);
    };
    void started.then(forget, forget);
    this.inflight.set(key, entry);
    return started;
  }

  /**
   * The call in flight for a token that a request may wait on: the broker's answer reflects the
   * moment the call was sent, so one sent longer than revalidateAfter ago (a slow broker) is not
   * joined — its answer could allow a token revoked since. The request asks again.
   */
  private joinable(key: string): Promise<VerifyResult> | undefined {
    const running = this.inflight.get(key);
    if (!running) return undefined;
    // Offline (no broker call) a check in flight is always joined: its answer does not age.
    if (!this.online) return running.result;
    return this.monotonic() - running.sentAt < this.revalidateMs ? running.result : undefined;
  }

  cached(token: string): VerifyResult | undefined {
    if (!wellSized(token)) return undefined;
    const key = hash('sha256', token, 'binary');
    const found = this.probe(key, this.now(), this.monotonic());
    return found.kind === 'fresh' ? this.hit(token, key, found) : undefined;
  }

  async verify(token: string): Promise<VerifyResult> {
    if (!wellSized(token)) return this.refuse(tokenInvalid(DETAIL.format), this.missSource);
    const key = hash('sha256', token, 'binary');
    const now = this.now();
    const found = this.probe(key, now, this.monotonic());
    if (found.kind === 'fresh') return this.hit(token, key, found);
    if (found.kind === 'expired') {
      this.cache.delete(key);
      return this.refuse(new SidecarError('token_expired', DETAIL.expired), 'cache');
    }
    if (found.kind === 'refused') return this.refuse(found.error, 'cache');
    const known = found.kind === 'stale' ? found.identity : undefined;
    const pending = this.joinable(key) ?? this.share(key, known ? this.revalidate(token, key, known) : this.firstSight(token, key, now), this.monotonic());
    try {
      const result = await pending;
      this.observer?.verification('ok', result.source);
      return result;
    } catch (e) {
      const err = isSidecarError(e) ? e : tokenInvalid(DETAIL.format, e);
      return this.refuse(err, this.failureSource(err.code));
    }
  }

  /**
   * The broker key changed (a key file was replaced): every answer given under the old key is
   * dropped, so a token signed by a key no longer trusted is verified again, and refused.
   */
  keysChanged(): void {
    this.keyEpoch++;
    this.cache.clear();
  }

  /** A token not in the cache. Shared by every concurrent request with the same token. */
  private async firstSight(token: string, key: string, now: number): Promise<VerifyResult> {
    if (!this.offline) return this.onlineFirst(token, key, now);
    const epoch = this.keyEpoch;
    const identity = await this.offline.verify(token, now);
    if (epoch !== this.keyEpoch) return this.firstSight(token, key, now);
    // Cached before the broker call, so a failed call only costs the next request another call.
    this.cache.set(key, identity, expiryDeadlineMs(identity.exp, this.rules.leewayMs), NEVER);
    if (!this.online) return { identity, source: 'offline' };
    return this.revalidate(token, key, identity);
  }

  /**
   * Asks the broker about a token already known to be authentic: under the current key, as every
   * cached answer is (keysChanged empties the cache). If the key changes while the broker is asked,
   * the token is checked again under the new one rather than cached as it was.
   */
  private async revalidate(token: string, key: string, identity: AgentIdentity): Promise<VerifyResult> {
    const epoch = this.keyEpoch;
    const sentAt = this.monotonic();
    const answer = await this.ask(token);
    const deadline = expiryDeadlineMs(identity.exp, this.rules.leewayMs);
    if (!answer.valid) {
      this.cache.set(key, REVOKED, deadline, NEVER);
      throw new SidecarError(REVOKED.code, REVOKED.detail);
    }
    if (epoch !== this.keyEpoch) return this.firstSight(token, key, this.now());
    // The answer holds from when the question was sent, not from when it arrived.
    this.cache.set(key, identity, deadline, sentAt);
    return { identity, source: 'online' };
  }

  /** Online mode, first sight of a token: the broker's claims are the identity. */
  private async onlineFirst(token: string, key: string, now: number): Promise<VerifyResult> {
    const epoch = this.keyEpoch;
    const sentAt = this.monotonic();
    const answer = await this.ask(token);
    if (!answer.valid) throw new SidecarError('token_invalid', ONLINE_INVALID);
    const identity = identityFromClaims(answer.claims);
    const deadline = expiryDeadlineMs(identity.exp, this.rules.leewayMs);
    try {
      // The broker judged exp/nbf with its clock and does not check aud: enforce iss/aud and our exp.
      checkClaims(identity, this.rules, now, false);
      await this.checkChainOnline(token, answer);
    } catch (e) {
      // A token the broker vouched for that we refuse for what it says (issuer, audience, its
      // chain): refused from the cache until it expires, not asked about on every request.
      if (isSidecarError(e) && e.code !== 'broker_unavailable' && epoch === this.keyEpoch) this.cache.set(key, new Refusal(e.code, e.detail), deadline, NEVER);
      throw e;
    }
    // A delegation chain checked under a key replaced meanwhile: checked again, not cached.
    if (epoch !== this.keyEpoch) return this.onlineFirst(token, key, this.now());
    this.cache.set(key, identity, deadline, sentAt);
    return { identity, source: 'online' };
  }

  /** In online mode the raw payload is not at hand; the broker's answer re-encodes the chain with Go's encoder. */
  private async checkChainOnline(token: string, answer: ValidateAnswer & { valid: true }): Promise<void> {
    const chain = parseDelegationChain(answer.claims.delegation_chain);
    if (!chain || !this.keys || !this.broker.verifyDelegationChain) return;
    let brokerKey: KeyObject;
    try {
      brokerKey = await this.keys.resolve(decodeProtectedHeader(token));
    } catch (e) {
      throw isSidecarError(e) ? e : tokenInvalid(DETAIL.format, e);
    }
    const scopes = answer.claims.scope;
    verifyDelegationChain(
      {
        chain,
        chainJson: goJson(answer.claims.delegation_chain),
        chainHash: typeof answer.claims.chain_hash === 'string' ? answer.claims.chain_hash : undefined,
        tokenScopes: Array.isArray(scopes) ? (scopes as string[]) : [],
      },
      brokerKey,
    );
  }

  private async ask(token: string): Promise<ValidateAnswer> {
    const client = this.client as BrokerClient;
    const started = process.hrtime.bigint();
    let outcome: 'valid' | 'invalid' | 'error' = 'error';
    try {
      const answer = await client.validate(token);
      outcome = answer.valid ? 'valid' : 'invalid';
      return answer;
    } finally {
      this.observer?.revalidation(Number(process.hrtime.bigint() - started) / 1e9, outcome);
    }
  }

  private failureSource(code: ErrorCode): VerifySource {
    return code === 'token_revoked' || code === 'broker_unavailable' ? 'online' : this.missSource;
  }

  private refuse(err: SidecarError, source: VerifySource): never {
    this.observer?.verification(OUTCOMES[err.code] ?? 'invalid', source);
    throw err;
  }

  ready(): boolean {
    return this.keys ? this.keys.ready() : true;
  }

  cacheSize(): number {
    this.cache.prune(this.now());
    return this.cache.size;
  }

  async close(): Promise<void> {
    clearInterval(this.pruner);
    this.keys?.close();
    this.cache.clear();
    await this.transport?.close();
  }
}

/**
 * Builds the verifier for a resolved broker config (verify set, key paths absolute).
 * offline/hybrid need a key (publicKeyFile, jwksFile or jwksUrl); online/hybrid need broker.url.
 */
export async function createTokenVerifier(broker: SidecarConfig['broker'], opts: VerifierOptions = {}): Promise<TokenVerifier> {
  const mode = broker.verify ?? (broker.publicKeyFile || broker.jwksFile || broker.jwksUrl ? 'hybrid' : 'online');
  if (mode !== 'online' && !broker.publicKeyFile && !broker.jwksFile && !broker.jwksUrl) {
    throw new Error(`broker.verify ${mode} needs broker.publicKeyFile, broker.jwksFile or broker.jwksUrl`);
  }
  if (mode !== 'offline' && !broker.url) throw new Error(`broker.verify ${mode} needs broker.url`);
  let verifier: Verifier | undefined;
  // Validate calls and a JWKS URL reach the broker the same way; its TLS files apply when either is https.
  const https = [broker.url, broker.jwksUrl].some((u) => u?.startsWith('https:'));
  const transport = mode !== 'offline' || broker.jwksUrl ? new BrokerTransport(durationMs(broker.timeout), https ? broker : {}) : undefined;
  let keys: KeySource | undefined;
  try {
    keys = await loadKeySource(broker, transport, {
      changed: (file, kids) => {
        verifier?.keysChanged();
        opts.observer?.keyReload?.('success', { file, kids });
      },
      failed: (file, reason) => opts.observer?.keyReload?.('failure', { file, reason }),
    });
  } catch (e) {
    await transport?.close();
    throw e;
  }
  const client = mode === 'offline' ? undefined : new BrokerClient(broker.url as string, transport as BrokerTransport);
  const monotonic = opts.monotonic ?? opts.now ?? (() => performance.now());
  verifier = new Verifier({ ...broker, verify: mode }, keys, client, transport, opts.observer, opts.now ?? Date.now, monotonic);
  return verifier;
}
