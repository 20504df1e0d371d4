/**
 * A pass-through tunnel or a WebSocket outlives the one request that opened it; the token that
 * authorized it does not outlive its `exp`, and may be revoked before. This cuts such a connection
 * when the verifier refuses its token: at `exp` (plus the configured leeway), and, where the
 * broker is asked (online, hybrid), at every `revalidateAfter`. A broker that cannot be reached
 * does not cut it before exp: that is not a refusal, and the next check asks again.
 */
import { expiryDeadlineMs } from '../auth/claims.js';
import type { AgentIdentity, TokenVerifier } from '../auth/types.js';
import { durationMs } from '../config/schema.js';
import { isSidecarError } from '../errors.js';
import type { Runtime } from '../runtime/types.js';

export type TokenEnd = 'token_expired' | 'token_revoked';

/** setTimeout holds at most 2^31-1 ms; a later deadline is reached in steps. */
const MAX_TIMER_MS = 2_147_483_647;

export interface TokenWatchOptions {
  verifier: TokenVerifier;
  token: string;
  identity: AgentIdentity;
  leewayMs: number;
  /** How often to ask again (online/hybrid: revalidateAfter); undefined: only at expiry. */
  recheckMs?: number;
}

/** Starts watching; `cut` is called at most once. Returns the function that stops the watch. */
export function watchToken(o: TokenWatchOptions, cut: (reason: TokenEnd) => void): () => void {
  let stopped = false;
  let recheck: NodeJS.Timeout | undefined;
  let expiry: NodeJS.Timeout | undefined;
  const stop = () => {
    stopped = true;
    clearTimeout(recheck);
    clearTimeout(expiry);
  };
  // The verifier's own deadline: a token is valid through the whole second of its exp.
  const deadline = expiryDeadlineMs(o.identity.exp, o.leewayMs);
  /** Asks the verifier; true while the token is still accepted (or the broker cannot say). */
  const check = async (): Promise<boolean> => {
    try {
      await o.verifier.verify(o.token);
      return true;
    } catch (e) {
      if (stopped || !isSidecarError(e)) return true;
      // A broker that cannot answer is no refusal, but past exp the token is over whatever it says.
      if (e.code === 'broker_unavailable' && Date.now() < deadline) return true;
      stop();
      // A broker asked about an expired token only says "invalid": past the deadline, that is expiry.
      cut(e.code === 'token_expired' || Date.now() >= deadline ? 'token_expired' : 'token_revoked');
      return false;
    }
  };
  const armExpiry = (): void => {
    const wait = deadline - Date.now();
    if (wait > MAX_TIMER_MS) {
      expiry = setTimeout(armExpiry, MAX_TIMER_MS);
    } else {
      // Just past the deadline; should the verifier still accept it then (its clock), ask again shortly.
      expiry = setTimeout(
        () =>
          void check().then((alive) => {
            if (alive && !stopped) {
              expiry = setTimeout(armExpiry, 1000);
              expiry.unref();
            }
          }),
        Math.max(0, wait) + 5,
      );
    }
    expiry.unref();
  };
  armExpiry();
  if (o.recheckMs !== undefined) {
    const every = o.recheckMs;
    const again = () => {
      recheck = setTimeout(() => {
        void check().then((alive) => {
          if (alive && !stopped) again();
        });
      }, every);
      recheck.unref();
    };
    again();
  }
  return stop;
}

/** The watch of a connection opened with `token`, as splice() takes it, under this runtime's broker settings. */
export function tokenWatchFor(rt: Runtime, token: string, identity: AgentIdentity): (cut: (reason: TokenEnd) => void) => () => void {
  const b = rt.config.broker;
  const o: TokenWatchOptions = {
    verifier: rt.verifier,
    token,
    identity,
    leewayMs: durationMs(b.leeway),
    recheckMs: b.verify === 'offline' ? undefined : Math.max(1000, durationMs(b.revalidateAfter)),
  };
  return (cut) => watchToken(o, cut);
}
