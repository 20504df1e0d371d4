/**
 * Hot reload of policies. Watches every policy file's directory (and policy directories
 * themselves), which also sees the Kubernetes ConfigMap `..data` symlink swap, plus SIGHUP and the
 * admin reload endpoint. Bursts of file events are coalesced; a generation whose policy digest is
 * unchanged is not rebuilt.
 */
import { type FSWatcher, watch } from 'node:fs';
import { stat } from 'node:fs/promises';
import { dirname } from 'node:path';
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

export class PolicyReloader {
  private watchers: FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<boolean> | undefined;
  /** The reload after the running one, shared by every call made while it runs. */
  private queued: Promise<boolean> | undefined;
  private stopped = false;

  constructor(private readonly deps: ReloaderDeps) {}

  async start(): Promise<void> {
    const dirs = new Set<string>();
    for (const p of this.deps.policyPaths) {
      const s = await stat(p).catch(() => undefined);
      dirs.add(s?.isDirectory() ? p : dirname(p));
    }
    for (const d of dirs) {
      try {
        const w = watch(d, { persistent: false }, () => this.schedule());
        w.on('error', (err) => this.deps.logger.warn({ dir: d, err: err.message }, 'policy watch error'));
        this.watchers.push(w);
      } catch (err) {
        this.deps.logger.warn({ dir: d, err: (err as Error).message }, 'cannot watch policy directory; use SIGHUP to reload');
      }
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
    const cur = this.deps.current();
    const id = (cur?.id ?? 0) + 1;
    let next: Generation;
    try {
      next = await buildGeneration(id, this.deps.policyPaths, this.deps.baseDir, this.deps.env, cur);
    } catch (err) {
      const problems = err instanceof ConfigError ? err.message.split('\n') : [(err as Error).message];
      this.deps.logger.error({ reason, problems, generation: cur?.id }, 'policy reload failed; keeping the current generation');
      this.deps.onResult(false);
      return false;
    }
    if (cur && cur.digest === next.digest) {
      await next.connectors.dispose(cur.connectors);
      return true;
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
  }
}
