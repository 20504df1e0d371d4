/**
 * Optional state file: apps, agents, revocations and audit events survive a restart. Memory stays
 * authoritative; each change schedules a write of the whole snapshot (coalesced), done atomically
 * (temp file with mode 0600, fsync, rename) so a crash leaves either the old or the new file.
 * Nonces and launch tokens are never written, as in the real broker.
 *
 * Unlike the real broker (which forgets agent records on restart, reference §11) agents are kept,
 * so delegation to an agent registered before a restart still works.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { z } from 'zod';
import type { BrokerAuditEvent } from './audit.js';
import type { AgentRecord, AppRecord } from './context.js';
import type { RevocationEntry } from './revocation.js';

export interface StateSnapshot {
  version: 1;
  apps: AppRecord[];
  agents: AgentRecord[];
  revocations: RevocationEntry[];
  audit: BrokerAuditEvent[];
}

const s = z.string();
const StateSchema = z.object({
  version: z.literal(1),
  apps: z.array(
    z.object({
      app_id: s,
      name: s,
      client_id: s,
      secret_hash: s,
      scopes: z.array(s),
      token_ttl: z.number().int(),
      status: z.enum(['active', 'inactive']),
      created_at: s,
      updated_at: s,
      deregistered_at: s.optional(),
    }),
  ),
  agents: z.array(z.object({ agent_id: s, public_key: s, orch_id: s, task_id: s, scope: z.array(s), app_id: s, registered_at: s })),
  revocations: z.array(z.object({ level: z.enum(['token', 'agent', 'task', 'chain']), target: s, revoked_at: s })),
  audit: z.array(
    z.object({
      id: s,
      timestamp: s,
      event_type: s,
      detail: s,
      hash: s,
      prev_hash: s,
      agent_id: s.optional(),
      task_id: s.optional(),
      orch_id: s.optional(),
      resource: s.optional(),
      outcome: s.optional(),
      deleg_depth: z.number().int().optional(),
      deleg_chain_hash: s.optional(),
      bytes_transferred: z.number().int().optional(),
    }),
  ),
});

/** The saved snapshot, or undefined when the file does not exist yet. A damaged file is an error. */
export async function loadState(file: string): Promise<StateSnapshot | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new Error(`${file}: the state file is not valid JSON`);
  }
  const checked = StateSchema.safeParse(raw);
  if (!checked.success) {
    const issue = checked.error.issues[0];
    throw new Error(`${file}: unexpected state file content at ${issue?.path.join('.') ?? '?'}: ${issue?.message ?? ''}`);
  }
  // The parsed objects are used as written: their key order is the wire order of audit events.
  return raw as StateSnapshot;
}

export interface StateWriterHooks {
  written(seconds: number): void;
  failed(err: unknown): void;
}

export class StateWriter {
  private dirty = false;
  private running: Promise<void> | undefined;
  private ok = true;
  /** Changes scheduled so far, and how many of them the last finished write attempt covered. */
  private scheduled = 0;
  private attempted = 0;
  private waiters: Array<{ upTo: number; resolve: () => void }> = [];

  constructor(
    private readonly file: string,
    private readonly snapshot: () => StateSnapshot,
    private readonly hooks: StateWriterHooks,
  ) {}

  healthy(): boolean {
    return this.ok;
  }

  schedule(): void {
    this.scheduled++;
    this.dirty = true;
    this.running ??= this.loop();
  }

  /**
   * Schedules a write and resolves once a write that includes every change so far has been tried:
   * an answer sent after it survives a crash (a failed write is only logged, as in the broker).
   * Under a steady stream of changes a waiter waits for the next write, not for the stream to end.
   */
  persisted(): Promise<void> {
    this.schedule();
    const upTo = this.scheduled;
    return new Promise((resolve) => this.waiters.push({ upTo, resolve }));
  }

  /** Resolves once every change scheduled so far is on disk (or has failed). */
  async flush(): Promise<void> {
    while (this.running) await this.running;
  }

  private async loop(): Promise<void> {
    // Let the rest of the current request's changes land first, so they share one write.
    await new Promise((r) => setImmediate(r));
    while (this.dirty) {
      this.dirty = false;
      const covers = this.scheduled;
      const started = performance.now();
      try {
        await this.writeOnce(JSON.stringify(this.snapshot()));
        this.ok = true;
        this.hooks.written((performance.now() - started) / 1000);
      } catch (e) {
        this.ok = false;
        this.hooks.failed(e);
      }
      this.attempted = covers;
      const waiting = this.waiters;
      this.waiters = [];
      for (const w of waiting) {
        if (w.upTo <= this.attempted) w.resolve();
        else this.waiters.push(w);
      }
    }
    this.running = undefined;
  }

  private async writeOnce(text: string): Promise<void> {
    await mkdir(dirname(this.file), { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      const fh = await open(tmp, 'wx', 0o600);
      try {
        await fh.writeFile(text);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.file);
    } catch (e) {
      await unlink(tmp).catch(() => {});
      throw e;
    }
  }
}
