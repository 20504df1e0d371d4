/**
 * One writer per audit log. Two sidecars appending to one file would interleave two chains (and
 * rotate the file under each other), and `audit verify` would then fail on a log nobody tampered
 * with. The writer holds `.NAME.lock` beside the log (hidden, so `NAME*` globs of the rotated files
 * do not catch it) and keeps its mtime fresh; a lock that has not been refreshed for `staleMs` was
 * left by a writer that died without releasing it and is taken over.
 *
 * A new writer that finds a fresh lock watches it for up to `staleMs`: a lock that goes stale (its
 * writer crashed moments ago, as when a container restarts) is taken over; one that is refreshed
 * has a live writer, and opening fails with who holds it. A holder on this host whose process no
 * longer exists is taken over at once. Taking over removes only the abandoned lock it looked at
 * (removeAbandoned), so two writers taking over at once do not both end up holding it. A writer
 * whose lock was removed creates it again (`onRestored`); one whose lock is someone else's finds so
 * at its next batch (verify) or refresh and reports it (`onLost`): the audit sink then stops
 * writing (sink.ts).
 */
import { randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { type FileHandle, link, open, readFile, rename, stat, unlink, utimes } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { errorReason } from '../errors.js';

export interface AuditLockOptions {
  /** A lock not refreshed for this long is abandoned (default 10 s). */
  staleMs?: number;
  /** Told once when a fresh lock is found and watched, with its holder. */
  onWait?: (holder: string) => void;
  /** Told once when the lock is found to be someone else's: another writer is on this log. */
  onLost?: (reason: string) => void;
  /** Told when the lock file was found removed and was created again (still the only writer). */
  onRestored?: () => void;
}

export interface AuditLock {
  readonly path: string;
  /**
   * Whether the lock is still this writer's, asked before each batch written so that a lock
   * taken away is noticed at the next write, not only at the next refresh. One stat when it is.
   */
  verify(): Promise<boolean>;
  release(): Promise<void>;
}

const DEFAULT_STALE_MS = 10_000;
const POLL_MS = 100;

export function lockPathOf(logPath: string): string {
  return join(dirname(logPath), `.${basename(logPath)}.lock`);
}

interface Holder {
  pid?: unknown;
  host?: unknown;
  since?: unknown;
}

function parseHolder(text: string): Holder {
  try {
    const h = JSON.parse(text) as unknown;
    return h !== null && typeof h === 'object' ? (h as Holder) : {};
  } catch {
    return {};
  }
}

function describe(h: Holder): string {
  return `pid ${h.pid ?? '?'} on ${h.host ?? '?'} since ${h.since ?? '?'}`;
}

/** A holder on this host whose process is gone (not ours: a restarted container may reuse a pid). */
function deadHere(h: Holder): boolean {
  if (h.host !== hostname() || typeof h.pid !== 'number' || h.pid === process.pid) return false;
  try {
    process.kill(h.pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

const missing = (e: unknown) => (e as NodeJS.ErrnoException).code === 'ENOENT';

/**
 * Removes the abandoned lock that was `observed`, and only that one: it is first renamed aside, so
 * that a writer that has just taken the lock over (between our look and now) keeps it; such a lock
 * is put back, unless a third writer holds the path by then. Exported for tests.
 */
export async function removeAbandoned(path: string, observed: Pick<Stats, 'ino' | 'mtimeMs'>): Promise<void> {
  const aside = `${path}.${process.pid}.${randomBytes(4).toString('hex')}`;
  try {
    await rename(path, aside);
  } catch (e) {
    if (missing(e)) return;
    throw e;
  }
  const moved = await stat(aside);
  if (moved.ino !== observed.ino || moved.mtimeMs !== observed.mtimeMs) {
    await link(aside, path).catch(() => {});
  }
  await unlink(aside);
}

/**
 * Creates the lock file with `content` (EEXIST when it exists) and keeps it open: while it is,
 * its inode number cannot go to another file, so a path with that inode is still this lock.
 */
async function createLock(path: string, content: string): Promise<{ fh: FileHandle; ino: number }> {
  const fh = await open(path, 'wx', 0o640);
  try {
    await fh.writeFile(content);
    return { fh, ino: (await fh.stat()).ino };
  } catch (e) {
    await fh.close();
    throw e;
  }
}

export async function acquireAuditLock(logPath: string, opts: AuditLockOptions = {}): Promise<AuditLock> {
  const staleMs = opts.staleMs ?? DEFAULT_STALE_MS;
  const path = lockPathOf(logPath);
  const mine = `${JSON.stringify({ pid: process.pid, host: hostname(), since: new Date().toISOString() })}\n`;
  let watched: { mtimeMs: number; since: number } | undefined;
  let held: { fh: FileHandle; ino: number };
  for (;;) {
    try {
      held = await createLock(path, mine);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`audit log ${logPath}: cannot create its lock file ${path}: ${errorReason(e)}`);
    }
    let observed: Stats;
    let holder: Holder;
    try {
      observed = await stat(path);
      holder = parseHolder(await readFile(path, 'utf8'));
    } catch (e) {
      if (missing(e)) continue;
      throw e;
    }
    if (Date.now() - observed.mtimeMs > staleMs || deadHere(holder)) {
      await removeAbandoned(path, observed);
      continue;
    }
    const { mtimeMs } = observed;
    if (!watched) {
      watched = { mtimeMs, since: Date.now() };
      opts.onWait?.(describe(holder));
    } else if (mtimeMs !== watched.mtimeMs || Date.now() - watched.since > staleMs * 2) {
      throw new Error(
        `audit log ${logPath} is in use by ${describe(holder)} (lock ${path} is kept fresh): two sidecars must not share one audit log; give each its own audit.path`,
      );
    }
    await delay(POLL_MS);
  }

  let lost = false;
  const loseTo = (why: string) => {
    lost = true;
    opts.onLost?.(`audit lock ${path} is no longer ours: ${why}`);
  };
  const refresh = async () => {
    if (lost) return;
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (e) {
      // A failed read (too many open files, say) says nothing of who holds the lock: asked again
      // at the next batch or refresh. Only another writer's content, or its file, means it is lost.
      if (!missing(e)) return;
      // Removed by hand: no other writer has it, so take it again (an 'wx' race lost means one has).
      try {
        const old = held;
        held = await createLock(path, mine);
        await old.fh.close();
        opts.onRestored?.();
      } catch (c) {
        if ((c as NodeJS.ErrnoException).code === 'EEXIST') loseTo('another writer created it');
      }
      return;
    }
    if (text !== mine) {
      loseTo(`another writer holds it now (${describe(parseHolder(text))})`);
      return;
    }
    const now = new Date();
    await utimes(path, now, now).catch(() => {});
  };
  // One refresh at a time: two that both found the file removed would both create it, and the
  // second would take the first's EEXIST for another writer.
  let refreshing: Promise<void> | undefined;
  const refreshOnce = () => {
    refreshing ??= refresh().finally(() => {
      refreshing = undefined;
    });
    return refreshing;
  };
  const timer = setInterval(() => void refreshOnce(), Math.max(50, Math.floor(staleMs / 5)));
  timer.unref();
  return {
    path,
    verify: async () => {
      if (lost) return false;
      try {
        if ((await stat(path)).ino === held.ino) return true;
      } catch {
        // Removed, or not readable: the refresh tells which.
      }
      await refreshOnce();
      return !lost;
    },
    release: async () => {
      clearInterval(timer);
      await refreshing;
      await held.fh.close();
      if (lost) return;
      try {
        if ((await readFile(path, 'utf8')) === mine) await unlink(path);
      } catch (e) {
        if (!missing(e)) throw e;
      }
    },
  };
}
