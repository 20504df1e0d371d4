/**
 * AgentWrit scope semantics, byte for byte as the broker implements them:
 * `action:resource:identifier`, split on the first two colons only (the identifier keeps any
 * further colons); all three parts non-empty; no trimming or case folding. `*` is a wildcard only
 * when it is the whole identifier of the *granted* scope. `*:*:*` is not a super-scope.
 */
export interface ParsedScope {
  action: string;
  resource: string;
  identifier: string;
}

export function parseScope(scope: string): ParsedScope | undefined {
  if (typeof scope !== 'string') return undefined;
  const a = scope.indexOf(':');
  if (a <= 0) return undefined;
  const b = scope.indexOf(':', a + 1);
  if (b < 0 || b === a + 1 || b === scope.length - 1) return undefined;
  return { action: scope.slice(0, a), resource: scope.slice(a + 1, b), identifier: scope.slice(b + 1) };
}

/** Does the granted scope `allowed` cover the `requested` one? Invalid strings never cover nor are covered. */
export function scopeCovers(allowed: string, requested: string): boolean {
  const r = parseScope(requested);
  const a = parseScope(allowed);
  if (!r || !a) return false;
  if (r.action !== a.action || r.resource !== a.resource) return false;
  return a.identifier === '*' || a.identifier === r.identifier;
}

/** Every requested scope covered by at least one allowed scope; empty `requested` is vacuously true. */
export function scopeIsSubset(requested: readonly string[], allowed: readonly string[]): boolean {
  for (const r of requested) {
    if (!allowed.some((a) => scopeCovers(a, r))) return false;
  }
  return true;
}

/** The first requested scope that is not covered, for error details. */
export function firstUncovered(requested: readonly string[], allowed: readonly string[]): string | undefined {
  for (const r of requested) {
    if (!allowed.some((a) => scopeCovers(a, r))) return r;
  }
  return undefined;
}
