/**
 * The broker's audit log and its hash chain, exactly as reference §10.3 defines them, so that an
 * AgentWrit client that verifies a real broker's chain verifies ours too.
 */
import { createHash } from 'node:crypto';
import { parseRfc3339 } from './timefmt.js';

export const AUDIT_GENESIS = '0'.repeat(64);

/** Wire shape, in the broker's key order; optional members are omitted when empty or zero. */
export interface BrokerAuditEvent {
  id: string;
  timestamp: string;
  event_type: string;
  agent_id?: string;
  task_id?: string;
  orch_id?: string;
  detail: string;
  resource?: string;
  outcome?: string;
  deleg_depth?: number;
  deleg_chain_hash?: string;
  bytes_transferred?: number;
  hash: string;
  prev_hash: string;
}

export interface AuditInput {
  event_type: string;
  agent_id?: string;
  task_id?: string;
  orch_id?: string;
  detail: string;
  resource?: string;
  outcome?: 'success' | 'denied';
  deleg_depth?: number;
  deleg_chain_hash?: string;
}

const SENSITIVE = ['secret', 'password', 'token_value', 'private_key'];

/**
 * The broker's redaction: when the detail mentions a sensitive word and that word sits in the
 * text before the first `=` (or, failing that, the first `: `), everything after the separator
 * is replaced. It runs before hashing, so the chain covers the redacted text.
 */
export function redactDetail(detail: string): string {
  const lower = detail.toLowerCase();
  if (!SENSITIVE.some((w) => lower.includes(w))) return detail;
  for (const sep of ['=', ': ']) {
    const i = detail.indexOf(sep);
    if (i < 0) continue;
    const before = lower.slice(0, i);
    if (SENSITIVE.some((w) => before.includes(w))) return `${detail.slice(0, i + sep.length)}***REDACTED***`;
  }
  return detail;
}

/** SHA-256 over the 13 fields joined with `|` (absent strings empty, absent numbers `0`). */
export function auditHash(e: Omit<BrokerAuditEvent, 'hash'>): string {
  const preimage = [
    e.prev_hash,
    e.id,
    e.timestamp,
    e.event_type,
    e.agent_id ?? '',
    e.task_id ?? '',
    e.orch_id ?? '',
    e.detail,
    e.resource ?? '',
    e.outcome ?? '',
    String(e.deleg_depth ?? 0),
    e.deleg_chain_hash ?? '',
    String(e.bytes_transferred ?? 0),
  ].join('|');
  return createHash('sha256').update(preimage, 'utf8').digest('hex');
}

/** Builds an event in wire order, omitting empty members. */
export function buildEvent(prevHash: string, id: string, timestamp: string, input: AuditInput): BrokerAuditEvent {
  const e: Record<string, unknown> = { id, timestamp, event_type: input.event_type };
  if (input.agent_id) e.agent_id = input.agent_id;
  if (input.task_id) e.task_id = input.task_id;
  if (input.orch_id) e.orch_id = input.orch_id;
  e.detail = redactDetail(input.detail);
  if (input.resource) e.resource = input.resource;
  if (input.outcome) e.outcome = input.outcome;
  if (input.deleg_depth) e.deleg_depth = input.deleg_depth;
  if (input.deleg_chain_hash) e.deleg_chain_hash = input.deleg_chain_hash;
  e.hash = '';
  e.prev_hash = prevHash;
  const ev = e as unknown as BrokerAuditEvent;
  ev.hash = auditHash(ev);
  return ev;
}

export function eventId(n: number): string {
  return `evt-${String(n).padStart(6, '0')}`;
}

export interface AuditFilter {
  agent_id?: string;
  task_id?: string;
  event_type?: string;
  outcome?: string;
  /** Inclusive bounds in nanoseconds since the epoch. */
  since?: bigint;
  until?: bigint;
}

export class AuditLog {
  private readonly events: BrokerAuditEvent[] = [];
  private counter = 0;
  private lastHash = AUDIT_GENESIS;

  constructor(
    private readonly clock: () => string,
    private readonly onAppend: (e: BrokerAuditEvent) => void = () => {},
  ) {}

  /** Continues the chain and counter from events loaded from the state file. */
  load(events: readonly BrokerAuditEvent[]): void {
    for (const e of events) {
      this.events.push(e);
      const n = Number(/^evt-(\d+)$/.exec(e.id)?.[1] ?? Number.NaN);
      if (Number.isSafeInteger(n) && n > this.counter) this.counter = n;
      this.lastHash = e.hash;
    }
  }

  record(input: AuditInput): BrokerAuditEvent {
    this.counter++;
    const e = buildEvent(this.lastHash, eventId(this.counter), this.clock(), bounded(input));
    this.lastHash = e.hash;
    this.events.push(e);
    this.onAppend(e);
    return e;
  }

  count(): number {
    return this.events.length;
  }

  all(): readonly BrokerAuditEvent[] {
    return this.events;
  }

  /** Matches in insertion order and their count before paging. */
  query(f: AuditFilter, offset: number, limit: number): { events: BrokerAuditEvent[]; total: number } {
    const matches = this.events.filter((e) => {
      if (f.agent_id && e.agent_id !== f.agent_id) return false;
      if (f.task_id && e.task_id !== f.task_id) return false;
      if (f.event_type && e.event_type !== f.event_type) return false;
      if (f.outcome && e.outcome !== f.outcome) return false;
      if (f.since !== undefined || f.until !== undefined) {
        const t = parseRfc3339(e.timestamp);
        if (t === undefined) return false;
        if (f.since !== undefined && t < f.since) return false;
        if (f.until !== undefined && t > f.until) return false;
      }
      return true;
    });
    return { events: matches.slice(offset, offset + limit), total: matches.length };
  }
}

/** Longest text kept in one field of an event (a request path, a client_id in a detail). */
export const AUDIT_FIELD_MAX = 1024;

/**
 * Events are kept for the broker's life: a field an unauthenticated caller fills (the path of a
 * refused request, a client_id) is cut to AUDIT_FIELD_MAX characters, saying how much was cut, so
 * that each refusal costs a bounded amount of memory. (The reference broker keeps them whole.)
 */
function bounded(input: AuditInput): AuditInput {
  const clip = (v: string | undefined) => (v === undefined || v.length <= AUDIT_FIELD_MAX ? v : `${v.slice(0, AUDIT_FIELD_MAX)}…[${v.length - AUDIT_FIELD_MAX} more characters]`);
  const { detail, resource, agent_id, task_id, orch_id } = input;
  if (detail.length <= AUDIT_FIELD_MAX && (resource?.length ?? 0) <= AUDIT_FIELD_MAX && (agent_id?.length ?? 0) <= AUDIT_FIELD_MAX && (task_id?.length ?? 0) <= AUDIT_FIELD_MAX && (orch_id?.length ?? 0) <= AUDIT_FIELD_MAX) return input;
  return { ...input, detail: clip(detail) as string, resource: clip(resource), agent_id: clip(agent_id), task_id: clip(task_id), orch_id: clip(orch_id) };
}

export type ChainCheck = { ok: true; count: number } | { ok: false; index: number; id: string; reason: string };

/** Verifies a complete, unfiltered event list in id order: linkage and every recomputed hash. */
export function verifyAuditChain(events: readonly BrokerAuditEvent[]): ChainCheck {
  let prev = AUDIT_GENESIS;
  for (const [i, e] of events.entries()) {
    if (e.prev_hash !== prev) return { ok: false, index: i, id: e.id, reason: 'prev_hash does not link to the previous event' };
    if (auditHash(e) !== e.hash) return { ok: false, index: i, id: e.id, reason: 'hash does not match the event fields' };
    prev = e.hash;
  }
  return { ok: true, count: events.length };
}
