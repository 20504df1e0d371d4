/**
 * Revocation and the audit query, for admin tokens.
 */
import type { AuditFilter } from '../audit.js';
import { str } from '../gojson.js';
import { type BearerHandler, decodeBody } from '../http.js';
import { badRequest, jsonReply } from '../problem.js';
import { isRevocationLevel } from '../revocation.js';
import { parseRfc3339, rfc3339Nano } from '../timefmt.js';

/** Target existence is not checked and `count` is always 1, as in the broker. */
export const revoke: BearerHandler = async (ctx, req) => {
  const body = decodeBody(req, { level: str, target: str });
  const level = body.level ?? '';
  const target = body.target ?? '';
  if (!level || !target) throw badRequest('level and target are required');
  if (!isRevocationLevel(level)) throw badRequest(`invalid revocation level: ${level}`);
  ctx.revocations.add(level, target, rfc3339Nano(ctx.now()));
  ctx.metrics.tokensRevoked.inc({ level });
  ctx.audit.record({ event_type: 'token_revoked', agent_id: target, detail: `revoked at level=${level} target=${target}`, outcome: 'success' });
  await ctx.persist();
  return jsonReply(200, { revoked: true, level, target, count: 1 });
};

const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 1000;

/** Go's strconv.Atoi on a query value: optional sign and digits only. */
function atoi(v: string | null): number | undefined {
  if (v === null || !/^[+-]?[0-9]+$/.test(v)) return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * Filters are exact matches; unparseable `since`/`until`/`limit`/`offset` are ignored. The echoed
 * `limit` is the one requested, though at most 1000 events are returned.
 */
export const auditEvents: BearerHandler = (ctx, req) => {
  const q = req.query;
  const filter: AuditFilter = {
    agent_id: q.get('agent_id') ?? undefined,
    task_id: q.get('task_id') ?? undefined,
    event_type: q.get('event_type') ?? undefined,
    outcome: q.get('outcome') ?? undefined,
    since: parseRfc3339(q.get('since') ?? ''),
    until: parseRfc3339(q.get('until') ?? ''),
  };
  const requested = atoi(q.get('limit'));
  const limit = requested !== undefined && requested > 0 ? requested : DEFAULT_LIMIT;
  const off = atoi(q.get('offset'));
  const offset = off !== undefined && off > 0 ? off : 0;
  const r = ctx.audit.query(filter, offset, Math.min(limit, MAX_LIMIT));
  return jsonReply(200, { events: r.events, total: r.total, offset, limit });
};
