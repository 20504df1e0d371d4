/**
 * Token intake. Precedence (first found wins):
 *   1. Proxy-Authorization: Bearer <token>
 *   2. Proxy-Authorization: Basic base64(user:<token>)  — what curl, requests and httpx send for
 *      http://user:TOKEN@proxy; when the password is empty the user part is taken (http://TOKEN@proxy)
 *   3. Authorization: Bearer <token>                     — the AgentWrit SDK's bearer_header
 *   4. inside an intercepted tunnel only: the token bound when the CONNECT was authenticated.
 * Whatever was found, every one of these headers (and Cookie) is removed before forwarding.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { decodePaddedBase64 } from '../base64.js';

/** A compact JWS has exactly three base64url segments; anything else is not worth verifying. */
const JWS_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
/**
 * The verifier's own bound. A real broker sets no limit on scopes, and each delegation record
 * repeats its delegator's, so a token may run to tens of KB (proxy.maxHeaderBytes bounds it too).
 */
const MAX_TOKEN_LENGTH = 64 * 1024;

function bearer(value: string | undefined): string | undefined {
  if (!value || value.length < 8) return undefined;
  if (value.slice(0, 7).toLowerCase() !== 'bearer ') return undefined;
  return value.slice(7).trim();
}

function basicPassword(value: string | undefined): string | undefined {
  if (value?.slice(0, 6).toLowerCase() !== 'basic ') return undefined;
  // RFC 7617 credentials are padded standard base64: `Basic *<b64>!` is not the same token.
  const bytes = decodePaddedBase64(value.slice(6).trim());
  if (bytes === undefined) return undefined;
  const decoded = bytes.toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return decoded || undefined;
  const password = decoded.slice(colon + 1);
  return password || decoded.slice(0, colon) || undefined;
}

export interface TokenIntake {
  /** The token, when one was presented in a usable shape. */
  token?: string;
  /** A credential header was present but could not be read as a token. */
  malformed: boolean;
  from?: 'proxy-bearer' | 'proxy-basic' | 'bearer' | 'tunnel';
}

export function extractToken(headers: IncomingHttpHeaders, tunnelToken?: string): TokenIntake {
  const proxyAuth = headers['proxy-authorization'];
  let token: string | undefined;
  let from: TokenIntake['from'];
  if (proxyAuth) {
    token = bearer(proxyAuth);
    from = 'proxy-bearer';
    if (token === undefined) {
      token = basicPassword(proxyAuth);
      from = 'proxy-basic';
    }
  }
  if (token === undefined) {
    const auth = headers.authorization;
    token = bearer(auth);
    from = 'bearer';
  }
  if (token === undefined && tunnelToken !== undefined) {
    return { token: tunnelToken, malformed: false, from: 'tunnel' };
  }
  if (token === undefined) {
    // An Authorization of another scheme (the agent's own Basic for the origin, say) is no attempt
    // at a token: the request has none, and a forward-proxy client is asked for one with 407.
    const auth = headers.authorization;
    return { malformed: proxyAuth !== undefined || (auth !== undefined && /^bearer(\s|$)/i.test(auth)) };
  }
  if (token.length > MAX_TOKEN_LENGTH || !JWS_SHAPE.test(token)) return { malformed: true };
  return { token, malformed: false, from };
}

/** Headers an agent may use to carry credentials: never forwarded, whatever the connector does. */
export const AGENT_CREDENTIAL_HEADERS = ['authorization', 'proxy-authorization', 'cookie'] as const;
