/**
 * SPIFFE ids for agents: spiffe://<trust domain>/agent/<orch_id>/<task_id>/<16 hex instance>, with
 * go-spiffe's character rules (trust domain [a-z0-9._-], path segments [A-Za-z0-9._-], and `.`/`..`
 * refused as segments).
 */
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;

export function validTrustDomain(td: string): boolean {
  return TRUST_DOMAIN.test(td);
}

export function validSegment(s: string): boolean {
  return SEGMENT.test(s) && s !== '.' && s !== '..';
}

/** The agent id, or undefined when any part is not allowed in a SPIFFE id. */
export function agentSpiffeId(trustDomain: string, orchId: string, taskId: string, instance: string): string | undefined {
  if (!validTrustDomain(trustDomain)) return undefined;
  if (![orchId, taskId, instance].every(validSegment)) return undefined;
  return `spiffe://${trustDomain}/agent/${orchId}/${taskId}/${instance}`;
}
