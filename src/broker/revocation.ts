/**
 * Four-level revocation (reference §9). Entries are permanent: nothing ever expires or is pruned,
 * so a revoked task id also kills every future token registered under it. `chain` matches only
 * tokens whose delegation chain starts at the target, so the root's own token survives — the
 * broker's code, not its docs' "whole tree" (reference §14.4).
 */
import type { Claims } from './jwt.js';

export const REVOCATION_LEVELS = ['token', 'agent', 'task', 'chain'] as const;
export type RevocationLevel = (typeof REVOCATION_LEVELS)[number];

export interface RevocationEntry {
  level: RevocationLevel;
  target: string;
  revoked_at: string;
}

export function isRevocationLevel(s: string): s is RevocationLevel {
  return (REVOCATION_LEVELS as readonly string[]).includes(s);
}

export class Revocations {
  private readonly sets: Record<RevocationLevel, Set<string>> = {
    token: new Set(),
    agent: new Set(),
    task: new Set(),
    chain: new Set(),
  };
  private readonly list: RevocationEntry[] = [];

  /** Insert-or-ignore: returns false when the (level, target) pair was already revoked. */
  add(level: RevocationLevel, target: string, revokedAt: string): boolean {
    const set = this.sets[level];
    if (set.has(target)) return false;
    set.add(target);
    this.list.push({ level, target, revoked_at: revokedAt });
    return true;
  }

  /** The first level (checked in the broker's order) that revokes these claims. */
  check(c: Claims): RevocationLevel | undefined {
    if (this.sets.token.has(c.jti)) return 'token';
    if (this.sets.agent.has(c.sub)) return 'agent';
    if (c.task_id && this.sets.task.has(c.task_id)) return 'task';
    const root = c.delegation_chain?.[0]?.agent;
    if (root !== undefined && this.sets.chain.has(root)) return 'chain';
    return undefined;
  }

  entries(): readonly RevocationEntry[] {
    return this.list;
  }
}
