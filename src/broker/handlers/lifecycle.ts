/**
 * What a token holder can do with its own token: renew, release, delegate.
 */
import { scopeIsSubset } from '../../auth/scope.js';
import { fmtList } from '../context.js';
import { chainHash, DEFAULT_DELEGATION_TTL, MAX_DELEGATION_DEPTH, signDelegationRecord } from '../delegation.js';
import { int, str, strings } from '../gojson.js';
import { type BearerHandler, decodeBody } from '../http.js';
import { recordJson } from '../jwt.js';
import { internalError, jsonReply, Problem, unauthorized } from '../problem.js';
import { rfc3339Nano } from '../timefmt.js';

/**
 * Revokes the presented token's jti first, then issues a successor with the same claims and
 * lifetime. The superseded token is dead for the broker at once (offline verifiers cannot know).
 */
export const renew: BearerHandler = async (ctx, _req, claims) => {
  const ids = { agent_id: claims.sub, task_id: claims.task_id, orch_id: claims.orch_id };
  try {
    ctx.revocations.add('token', claims.jti, rfc3339Nano(ctx.now()));
    const issued = ctx.tokens.renew(claims);
    ctx.audit.record({
      event_type: 'token_renewed',
      ...ids,
      detail: `token renewed for agent=${claims.sub} new_jti=${issued.claims.jti}`,
      outcome: 'success',
    });
    return jsonReply(200, { access_token: issued.token, expires_in: issued.expiresIn });
  } catch (e) {
    ctx.logger?.warn({ err: e instanceof Error ? e.message : String(e) }, 'token renewal failed');
    ctx.audit.record({ event_type: 'token_renewal_failed', ...ids, detail: 'token renewal failed', outcome: 'denied' });
    throw unauthorized('token renewal failed');
  } finally {
    // The superseded token stays dead after a crash, whichever answer goes out.
    await ctx.persist();
  }
};

export const release: BearerHandler = async (ctx, _req, claims) => {
  ctx.revocations.add('token', claims.jti, rfc3339Nano(ctx.now()));
  ctx.metrics.tokensRevoked.inc({ level: 'release' });
  ctx.audit.record({
    event_type: 'token_released',
    agent_id: claims.sub,
    task_id: claims.task_id,
    orch_id: claims.orch_id,
    detail: `token released | jti=${claims.jti}`,
    outcome: 'success',
  });
  await ctx.persist();
  return { status: 204 };
};

/**
 * Delegation in the broker's order: fields, depth, attenuation, then the delegate's existence.
 * The delegated token copies audience, task and orchestration from the delegator, and its TTL is
 * not bounded by the delegator's expiry.
 */
export const delegate: BearerHandler = (ctx, req, claims) => {
  const body = decodeBody(req, { delegate_to: str, scope: strings, ttl: int });
  const scope = body.scope ?? [];
  const delegateTo = body.delegate_to ?? '';
  // The broker answers missing fields with 500, not the 400 its docs promise (reference §14.6).
  if (!delegateTo || scope.length === 0) throw internalError('delegation failed');
  const chain = claims.delegation_chain ?? [];
  if (chain.length >= MAX_DELEGATION_DEPTH) throw new Problem(403, 'scope_violation', 'delegation depth limit exceeded');
  const held = claims.scope ?? [];
  if (!scopeIsSubset(scope, held)) {
    ctx.audit.record({
      event_type: 'delegation_attenuation_violation',
      agent_id: claims.sub,
      task_id: claims.task_id,
      orch_id: claims.orch_id,
      detail: `delegation to ${delegateTo} refused: scope ${fmtList(scope)} exceeds delegator scope ${fmtList(held)}`,
      outcome: 'denied',
      deleg_depth: chain.length,
    });
    throw new Problem(403, 'scope_violation', 'requested scope exceeds the delegator scope');
  }
  if (!ctx.agents.has(delegateTo)) throw new Problem(404, 'not_found', 'delegate agent not found');
  const record = signDelegationRecord(ctx.key, claims.sub, held, rfc3339Nano(ctx.now()));
  const newChain = [...chain, record];
  const hash = chainHash(newChain);
  const ttl = body.ttl !== undefined && body.ttl > 0 ? body.ttl : DEFAULT_DELEGATION_TTL;
  const issued = ctx.tokens.issue({
    sub: delegateTo,
    scope: [...scope],
    ttl,
    aud: claims.aud ?? [],
    taskId: claims.task_id,
    orchId: claims.orch_id,
    chain: newChain,
    chainHash: hash,
  });
  ctx.audit.record({
    event_type: 'delegation_created',
    agent_id: delegateTo,
    task_id: claims.task_id,
    orch_id: claims.orch_id,
    detail: `delegated by ${claims.sub} to ${delegateTo} with scope ${fmtList(scope)}`,
    outcome: 'success',
    deleg_depth: newChain.length,
    deleg_chain_hash: hash,
  });
  return jsonReply(200, { access_token: issued.token, expires_in: issued.expiresIn, delegation_chain: newChain.map(recordJson) });
};
