/**
 * Hot reload of policies. Watches every policy file's directory (and policy directories
 * themselves), which also sees the Kubernetes ConfigMap `..data` symlink swap, plus SIGHUP and the
 * admin reload endpoint. Bursts of file events are coalesced; a generation whose policy digest is
 * unchanged is not rebuilt.
 */
import { type FSWatcher, watch } from 'node:fs';
import type { Stats } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { ConfigError } from '../errors.js';
import type { Logger } from '../telemetry/logger.js';
import { buildGeneration } from './generation.js';
import type { Generation } from './types.js';

export interface ReloaderDeps {
  policyPaths: string[];
  baseDir: string;
  env: NodeJS.ProcessEnv;
  logger: Logger;
  current(): Generation | undefined;
  swap(next: Generation): void;
  onResult(ok: boolean): void;
  debounceMs?: number;
}

const identityOf = (s: Stats) => `${s.dev}:${s.ino}`;

export class PolicyReloader {
  private watchers: FSWatcher[] = [];
  /** Policy directories, each with the directory its watcher is on (the path may come to name another). */
  private readonly dirs = new Map<string, { identity: string; watcher: FSWatcher | undefined }>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<boolean> | undefined;
  /** The reload after the running one, shared by every call made while it runs. */
  private queued: Promise<boolean> | undefined;
  private stopped = false;
  /** Why the last reload failed (file:line:col messages), until one succeeds. */
  lastProblems: string[] | undefined;

  constructor(private readonly deps: ReloaderDeps) {}

  async start(): Promise<void> {
    const fileDirs = new Set<string>();
    for (const p of this.deps.policyPaths) {
      const s = await stat(p).catch(() => undefined);
      if (!s?.isDirectory()) {
        fileDirs.add(dirname(p));
        continue;
      }
      this.dirs.set(p, { identity: identityOf(s), watcher: this.watchDir(p, () => this.schedule()) });
      // The directory itself replaced (renamed over, a symlink to it swapped): seen from its parent.
      const name = basename(p);
      const w = this.watchDir(dirname(p), (file) => {
        if (file === null || file === name) this.schedule();
      });
      if (w) this.watchers.push(w);
    }
    for (const d of fileDirs) {
      const w = this.watchDir(d, () => this.schedule());
      if (w) this.watchers.push(w);
    }
  }

  private watchDir(dir: string, onEvent: (file: string | null) => void): FSWatcher | undefined {
    try {
      const w = watch(dir, { persistent: false }, (_event, file) => onEvent(file === null ? null : String(file)));
      w.on('error', (err) => this.deps.logger.warn({ dir, err: err.message }, 'policy watch error'));
      return w;
    } catch (err) {
      this.deps.logger.warn({ dir, err: (err as Error).message }, 'cannot watch policy directory; use SIGHUP to reload');
      return undefined;
    }
  }

  /** A policy directory path that now names another directory: its watcher moves there. */
  private async followMovedDirs(): Promise<void> {
    for (const [path, entry] of this.dirs) {
      const s = await stat(path).catch(() => undefined);
      if (!s?.isDirectory() || identityOf(s) === entry.identity || this.stopped) continue;
      entry.watcher?.close();
      entry.identity = identityOf(s);
      entry.watcher = this.watchDir(path, () => this.schedule());
      this.deps.logger.info({ dir: path }, 'policy directory replaced; watching the new one');
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.reload('file change').catch(() => {});
    }, this.deps.debounceMs ?? 150);
    this.timer.unref();
  }

  /**
   * Builds and swaps a new generation; resolves true when the policy in service is the new one.
   * A call while a reload runs gets the one after it: the running one may have read the files
   * before the change this caller was told about.
   */
  reload(reason: string): Promise<boolean> {
    // Shutting down: no new generation (its config_applied record could come after the audit log closed).
    if (this.stopped) return Promise.resolve(false);
    if (!this.running) {
      this.running = this.doReload(reason).finally(() => {
        this.running = undefined;
      });
      return this.running;
    }
    this.queued ??= this.running
      .catch(() => false)
      .then(() => {
        this.queued = undefined;
        return this.stopped ? false : this.reload(reason);
      });
    return this.queued;
  }

  private async doReload(reason: string): Promise<boolean> {
    await this.followMovedDirs();
    const cur = this.deps.current();
    const id = (cur?.id ?? 0) + 1;
    let next: Generation;
    try {
      next = await buildGeneration(id, this.deps.policyPaths, this.deps.baseDir, this.deps.env, cur);
    } catch (err) {
      const problems = err instanceof ConfigError ? err.message.split('\n') : [(err as Error).message];
      this.lastProblems = problems;
      this.deps.logger.error({ reason, problems, generation: cur?.id }, 'policy reload failed; keeping the current generation');
      this.deps.onResult(false);
      return false;
    }
    this.lastProblems = undefined;
    if (this.stopped || (cur && cur.digest === next.digest)) {
      await next.connectors.dispose(cur?.connectors);
      return !this.stopped;
    }
    this.deps.swap(next);
    this.deps.onResult(true);
    this.deps.logger.info({ reason, generation: next.id, digest: next.digest, routes: next.policy.routes.length }, 'policy generation applied');
    if (cur) {
      // In-flight requests may still hold the old connectors; let them finish first.
      setTimeout(() => {
        cur.connectors.dispose(next.connectors).catch(() => {});
      }, 30_000).unref();
    }
    return true;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    for (const w of this.watchers) w.close();
    this.watchers = [];
    for (const entry of this.dirs.values()) entry.watcher?.close();
    this.dirs.clear();
  }
}
