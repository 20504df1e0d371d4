/**
 * Agent registration (reference §7), with the broker's check order. The order is observable:
 * a scope violation leaves the nonce and launch token untouched, while from step 4 on the nonce
 * is spent even if a later step fails, and the launch token is only consumed once the signature
 * has verified.
 */
import { createPublicKey, type KeyObject, randomBytes, verify } from 'node:crypto';
import { decodePaddedBase64 } from '../../base64.js';
import { scopeIsSubset } from '../../auth/scope.js';
import { type BrokerContext, fmtList } from '../context.js';
import { type Decoded, str, strings } from '../gojson.js';
import { decodeBody, type Handler } from '../http.js';
import { badRequest, internalError, jsonReply, Problem, type Reply, unauthorized } from '../problem.js';
import { agentSpiffeId } from '../spiffe.js';
import { rfc3339Nano } from '../timefmt.js';

// DER prefix of an SPKI Ed25519 public key; the raw 32-byte key follows it.
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** Go's base64.StdEncoding: padding required, no other alphabet; CR and LF are skipped. */
export function decodeStdBase64(s: string): Buffer | undefined {
  return decodePaddedBase64(s.replace(/[\r\n]/g, ''));
}

/** The bytes an agent signs: the hex-decoded nonce, or its UTF-8 text if it is not valid hex. */
export function nonceSigningBytes(nonce: string): Buffer {
  return /^(?:[0-9a-fA-F]{2})*$/.test(nonce) ? Buffer.from(nonce, 'hex') : Buffer.from(nonce, 'utf8');
}

function consumeNonce(ctx: BrokerContext, nonce: string): boolean {
  const exp = ctx.nonces.get(nonce);
  if (exp === undefined) return false;
  ctx.nonces.delete(nonce);
  return ctx.now() <= exp;
}

const REGISTER_SPEC = {
  launch_token: str,
  nonce: str,
  public_key: str,
  signature: str,
  orch_id: str,
  task_id: str,
  requested_scope: strings,
};

export const register: Handler = async (ctx, req) => {
  try {
    const reply = await registerAgent(ctx, decodeBody(req, REGISTER_SPEC));
    ctx.metrics.registrations.inc({ status: 'success' });
    return reply;
  } catch (e) {
    ctx.metrics.registrations.inc({ status: 'failure' });
    throw e;
  }
};

async function registerAgent(ctx: BrokerContext, raw: Decoded<typeof REGISTER_SPEC>): Promise<Reply> {
  const b = {
    launchToken: raw.launch_token ?? '',
    nonce: raw.nonce ?? '',
    publicKey: raw.public_key ?? '',
    signature: raw.signature ?? '',
    orchId: raw.orch_id ?? '',
    taskId: raw.task_id ?? '',
    requestedScope: raw.requested_scope ?? [],
  };
  // 1. every field present
  for (const [field, v] of Object.entries({
    launch_token: b.launchToken,
    nonce: b.nonce,
    public_key: b.publicKey,
    signature: b.signature,
    orch_id: b.orchId,
    task_id: b.taskId,
  })) {
    if (!v) throw badRequest(`${field} is required`);
  }
  if (b.requestedScope.length === 0) throw badRequest('requested_scope is required');
  // 2. launch token usable
  const lt = ctx.launchTokens.get(b.launchToken);
  if (!lt || ctx.now() > lt.expires_at_ms) throw unauthorized('invalid or expired launch token');
  // 3. scope within the launch token's policy (nothing consumed yet)
  if (!scopeIsSubset(b.requestedScope, lt.allowed_scope)) {
    ctx.audit.record({
      event_type: 'registration_policy_violation',
      task_id: b.taskId,
      orch_id: b.orchId,
      detail: `requested scope ${fmtList(b.requestedScope)} exceeds launch token scope ${fmtList(lt.allowed_scope)}`,
      outcome: 'denied',
    });
    throw new Problem(403, 'scope_violation', 'requested scope exceeds the launch token policy');
  }
  // 4. nonce: spent from here on, whatever happens next
  if (!consumeNonce(ctx, b.nonce)) throw unauthorized('invalid or expired nonce');
  // 5. public key
  const pub = decodeStdBase64(b.publicKey);
  if (pub?.length !== 32) throw unauthorized('invalid public key');
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, pub]), format: 'der', type: 'spki' });
  } catch {
    throw unauthorized('invalid public key');
  }
  // 6. signature over the nonce bytes
  const sig = decodeStdBase64(b.signature);
  if (sig?.length !== 64 || !verify(null, nonceSigningBytes(b.nonce), key, sig)) throw unauthorized('invalid signature');
  // 7. launch token spent
  if (lt.single_use) ctx.launchTokens.delete(b.launchToken);
  // 8. identity
  const agentId = agentSpiffeId(ctx.cfg.trustDomain, b.orchId, b.taskId, randomBytes(8).toString('hex'));
  if (!agentId) throw internalError('registration failed');
  // 9. token: its TTL is the launch token's max_ttl (the agent cannot ask for one, reference §14.11);
  // instance ids are 16 hex and `sid` is never set (§14.12).
  const issued = ctx.tokens.issue({ sub: agentId, scope: [...b.requestedScope], ttl: lt.max_ttl, taskId: b.taskId, orchId: b.orchId });
  // 10. record and audit
  ctx.agents.set(agentId, {
    agent_id: agentId,
    public_key: pub.toString('base64'),
    orch_id: b.orchId,
    task_id: b.taskId,
    scope: [...b.requestedScope],
    app_id: lt.app_id,
    registered_at: rfc3339Nano(ctx.now()),
  });
  ctx.metrics.activeAgents.inc();
  const ids = { agent_id: agentId, task_id: b.taskId, orch_id: b.orchId };
  ctx.audit.record({ event_type: 'agent_registered', ...ids, detail: `Agent registered with scope ${fmtList(b.requestedScope)}`, outcome: 'success' });
  ctx.audit.record({ event_type: 'token_issued', ...ids, detail: `token issued jti=${issued.claims.jti} expires_in=${issued.expiresIn}`, outcome: 'success' });
  await ctx.persist();
  return jsonReply(200, { agent_id: agentId, access_token: issued.token, expires_in: issued.expiresIn });
}
