/**
 * The hash-chained JSON Lines audit sink (serialization in chain.ts).
 *
 * append() only sanitizes the event and queues it. One writer takes the queue in order, chains each
 * record (seq, prev_hash, hash) as it serializes the batch, and writes the batch with one write
 * call, so chain order is file order. A record gets its seq only when it is serialized: records
 * dropped in `open` mode never leave a gap in the chain.
 *
 * A failed write keeps its batch (and how many bytes did reach the file) and is retried with
 * backoff; records queued meanwhile stay queued, in order, up to maxQueue. While failing:
 * - onFailure 'closed': append() returns false (the request is refused), nothing is queued;
 * - onFailure 'open': append() returns true and queues while there is room, else drops;
 * failures() counts every record that was refused or dropped.
 *
 * Restart: the file is opened for append and its last line continues the chain. A torn last line
 * (a write cut short by a crash: bytes after the last newline) is truncated away and a `recovery`
 * record noting its length and SHA-256 is appended first; any other invalid last line makes
 * openAuditSink throw. Path "-" writes to stdout and always starts a new chain at seq 1.
 * One process per audit file: two writers would interleave two chains.
 *
 * Rotation (rotateBytes > 0): before a batch is written to a file that has reached rotateBytes,
 * the file is synced and closed, PATH.1 … become PATH.2 … (the one past rotateKeep is deleted),
 * PATH becomes PATH.1 and a new PATH is opened. Its first record is a `rotated` record that
 * continues the chain (seq and prev_hash go on), so the files, oldest first, verify as one chain,
 * and the newest alone verifies from that record. A restart that finds PATH empty (or holding only a
 * torn first line) while PATH.1 exists continues from PATH.1 the same way, whether or not rotation
 * is still configured.
 */
import { createHash } from 'node:crypto';
import { type FileHandle, lstat, open, readlink, realpath, rename, unlink } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { chainPrepared, chainRecord, GENESIS_HASH, type PreparedRecord, prepareRecord, ROTATED_TYPE } from './chain.js';
import { type AuditLock, type AuditLockOptions, acquireAuditLock } from './lock.js';
import { type ChainHead, readTail } from './tail.js';
import type { AuditEvent, AuditSink } from './types.js';

export interface AuditSinkOptions {
  /** JSON Lines file; "-" is stdout. */
  path: string;
  onFailure: 'closed' | 'open';
  flushIntervalMs: number;
  maxQueue: number;
  /** Called for every failed write attempt (metrics, logs). */
  onWriteError?: (err: Error) => void;
  /** Called with the number of records that will never be written (see OpenedAuditSink.failures). */
  onLost?: (n: number) => void;
  /** Start a new file once the current one holds this many bytes; 0 or absent: never. */
  rotateBytes?: number;
  /** Rotated files kept (PATH.1 … PATH.N); default 5. */
  rotateKeep?: number;
  /** The writer lock (lock.ts): staleness, and what to say while waiting for it or once it is lost. */
  lock?: Pick<AuditLockOptions, 'staleMs' | 'onWait' | 'onLost' | 'onRestored'>;
}

/** How a file sink starts a new file: see "Rotation" above. */
interface Rotation {
  maxBytes: number;
  /** Renames the full file aside (and drops the oldest), then opens a new one. */
  next(): Promise<Output>;
}

export interface OpenedAuditSink extends AuditSink {
  /** Records refused (closed mode) or dropped (open mode, queue full, or still unwritten at close). */
  failures(): number;
  /** Last record handed to the file: an operator can compare this hash with a copy of the file. */
  head(): ChainHead;
  /** Set when opening removed a torn last line. */
  readonly recovered?: { truncatedBytes: number };
}

/** Records per write; larger queues are written in several batches. */
const BATCH_MAX = 1024;
/** Queue length that starts a write without waiting for the flush interval. */
const BATCH_EAGER = 256;
const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 2000;
const CLOSE_ATTEMPTS = 3;

interface Output {
  /** Writes from buf[offset]; returns how many bytes were written (may be fewer). */
  write(buf: Buffer, offset: number): Promise<number>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

interface Pending {
  buf: Buffer;
  offset: number;
  count: number;
  /** Chain head once this batch is on disk. */
  head: ChainHead;
}

interface Waiter {
  target: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

function fileOutput(fh: FileHandle): Output {
  return {
    write: async (buf, offset) => (await fh.write(buf, offset, buf.length - offset)).bytesWritten,
    sync: () => fh.datasync(),
    close: () => fh.close(),
  };
}

function stdoutOutput(): Output {
  // Errors also reach the write callback; the listener only keeps them from being unhandled.
  const ignore = () => {};
  process.stdout.on('error', ignore);
  return {
    write: (buf, offset) =>
      new Promise((resolve, reject) => {
        process.stdout.write(buf.subarray(offset), (err) => (err ? reject(err) : resolve(buf.length - offset)));
      }),
    sync: async () => {},
    close: async () => {
      process.stdout.off('error', ignore);
    },
  };
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

class ChainedSink implements OpenedAuditSink {
  readonly recovered?: { truncatedBytes: number };
  /** Bytes in the current file. */
  private fileBytes: number;
  /** The current file was closed for rotation and the next one is not open yet. */
  private detached = false;
  /** The next batch opens with a `rotated` record (a new file after rotation). */
  private opensRotated: boolean;
  private readonly rotation: Rotation | undefined;
  private readonly lock: AuditLock | undefined;
  private queue: PreparedRecord[] = [];
  private pending: Pending | null = null;
  private chain: ChainHead;
  private written: ChainHead;
  private enqueued = 0;
  private done = 0;
  private failed = 0;
  private failing = false;
  private retryMs = 0;
  private timer: NodeJS.Timeout | null = null;
  private pumping: Promise<void> | null = null;
  private waiters: Waiter[] = [];
  private closed = false;
  private closing: Promise<void> | null = null;
  /** Set when another writer holds the log's lock: nothing more is written to it (see halt). */
  private halted: Error | undefined;

  constructor(
    private out: Output,
    private readonly opts: AuditSinkOptions,
    head: ChainHead,
    recovered?: { truncatedBytes: number },
    file?: { bytes: number; rotation?: Rotation; continuesRotated?: boolean; lock?: AuditLock },
  ) {
    this.lock = file?.lock;
    this.chain = { ...head };
    this.written = { ...head };
    if (recovered) this.recovered = recovered;
    this.fileBytes = file?.bytes ?? 0;
    this.rotation = file?.rotation;
    this.opensRotated = file?.continuesRotated ?? false;
  }

  append(event: AuditEvent, served = false): boolean {
    if (this.closed) {
      this.lose(1);
      return false;
    }
    if (this.halted) {
      this.lose(1);
      return this.opts.onFailure === 'open';
    }
    const full = this.depth() >= this.opts.maxQueue;
    if (this.opts.onFailure === 'closed') {
      // What was let through while the log was healthy is kept (beyond maxQueue too: the refusals
      // that follow bound it), and written once the log recovers; a refusal's record is dropped.
      if ((this.failing || full) && !served) {
        this.lose(1);
        return false;
      }
    } else if (full) {
      this.lose(1);
      return true;
    }
    this.queue.push(prepareRecord(event));
    this.enqueued++;
    if (!this.failing && !this.pumping) {
      // Crossing the threshold once is enough: the writer keeps going while the backlog lasts.
      if (this.queue.length === BATCH_EAGER) this.schedule(0);
      else if (!this.timer) this.schedule(this.opts.flushIntervalMs);
    }
    return true;
  }

  healthy(): boolean {
    return !this.closed && !this.failing && !this.halted && this.depth() < this.opts.maxQueue;
  }

  /**
   * Another writer holds this log's lock: writing on would interleave two chains (and rotate its
   * file away). Records not yet started are dropped and counted, a batch half written is finished
   * so that no torn line is left, and the sink answers as a failing one from now on (503 with
   * audit.onFailure closed; counted losses with open).
   */
  halt(reason: string): void {
    if (this.halted || this.closed) return;
    this.halted = new Error(reason);
    this.lose(this.queue.length);
    this.queue = [];
    for (const w of this.waiters) w.reject(this.halted);
    this.waiters = [];
  }

  queueDepth(): number {
    return this.depth();
  }

  failures(): number {
    return this.failed;
  }

  head(): ChainHead {
    return { ...this.written };
  }

  flush(): Promise<void> {
    const target = this.enqueued;
    if (this.done >= target) return Promise.resolve();
    if (this.halted) return Promise.reject(this.halted);
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ target, resolve, reject });
      this.schedule(0);
    });
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  /** Records that will never be written: counted, and reported (metrics). */
  private lose(n: number): void {
    if (n === 0) return;
    this.failed += n;
    try {
      this.opts.onLost?.(n);
    } catch {
      // A broken metrics hook must not stop the sink.
    }
  }

  private depth(): number {
    return this.queue.length + (this.pending ? this.pending.count : 0);
  }

  /** Starts the writer after `ms` (replacing a pending timer); a running writer is left alone. */
  private schedule(ms: number): void {
    if (this.pumping) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.pumping = this.pump().finally(() => {
        this.pumping = null;
        this.afterPump();
      });
    }, ms);
    // Idle batching must not keep the process alive; a pending flush() or close() must.
    if (this.waiters.length === 0 && !this.closed) this.timer.unref();
  }

  private afterPump(): void {
    if (this.halted && !this.pending) return;
    if (this.failing) {
      if (!this.closed) this.schedule(this.retryMs);
    } else if (this.waiters.length > 0) {
      this.schedule(0);
    } else if (this.queue.length > 0 && !this.closed) {
      this.schedule(this.queue.length >= BATCH_EAGER ? 0 : this.opts.flushIntervalMs);
    }
  }

  private takeBatch(): Pending {
    const batch = this.queue.length <= BATCH_MAX ? this.queue : this.queue.slice(0, BATCH_MAX);
    this.queue = batch === this.queue ? [] : this.queue.slice(BATCH_MAX);
    const lines: string[] = [];
    let { seq, hash } = this.chain;
    if (this.opensRotated) {
      const note = rotatedNote(this.opts.path, ++seq, hash);
      hash = note.hash;
      lines.push(note.line);
      this.opensRotated = false;
    }
    for (let i = 0; i < batch.length; i++) {
      const c = chainPrepared(batch[i], ++seq, hash);
      hash = c.hash;
      lines.push(c.line);
    }
    this.chain = { seq, hash };
    return { buf: Buffer.from(lines.join(''), 'utf8'), offset: 0, count: batch.length, head: this.chain };
  }

  /** Before a batch: a full file is closed and set aside and a new one opened (throws like a write). */
  private async rotateIfDue(): Promise<void> {
    const r = this.rotation;
    if (!r || (!this.detached && this.fileBytes < r.maxBytes)) return;
    if (!this.detached) {
      await this.out.sync();
      await this.out.close();
      this.detached = true;
    }
    this.out = await r.next();
    this.detached = false;
    this.fileBytes = 0;
    this.opensRotated = true;
  }

  private async pump(): Promise<void> {
    for (;;) {
      const p = this.pending;
      if (this.halted && (!p || p.offset === 0)) {
        if (p) this.lose(p.count);
        this.pending = null;
        return;
      }
      try {
        if (!p) {
          if (this.queue.length === 0) return;
          // A lock taken by another writer halts the sink (onLost); nothing of this batch is written.
          if (this.lock && !(await this.lock.verify())) {
            this.halt(`audit lock ${this.lock.path} is no longer ours`);
            continue;
          }
          await this.rotateIfDue();
          this.pending = this.takeBatch();
          continue;
        }
        while (p.offset < p.buf.length) {
          const n = await this.out.write(p.buf, p.offset);
          p.offset += n;
          this.fileBytes += n;
        }
      } catch (e) {
        this.writeFailed(asError(e));
        return;
      }
      this.pending = null;
      this.done += p.count;
      this.written = p.head;
      this.failing = false;
      this.retryMs = 0;
      this.settleWaiters();
      // Keep going while there is a backlog or someone waits; otherwise let records gather.
      if (this.queue.length < BATCH_EAGER && this.waiters.length === 0 && !this.closed) return;
    }
  }

  private settleWaiters(): void {
    if (this.waiters.length === 0) return;
    const still: Waiter[] = [];
    for (const w of this.waiters) {
      if (this.done >= w.target) w.resolve();
      else still.push(w);
    }
    this.waiters = still;
  }

  private writeFailed(err: Error): void {
    this.failing = true;
    this.retryMs = Math.min(RETRY_MAX_MS, Math.max(RETRY_MIN_MS, this.retryMs * 2, this.opts.flushIntervalMs));
    try {
      this.opts.onWriteError?.(err);
    } catch {
      // A broken metrics hook must not stop the writer.
    }
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(err);
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    let lastErr: Error | undefined;
    for (let attempt = 1; attempt <= CLOSE_ATTEMPTS && !this.halted; attempt++) {
      try {
        await this.pumping;
        await this.flush();
        lastErr = undefined;
        break;
      } catch (e) {
        lastErr = asError(e);
        if (attempt < CLOSE_ATTEMPTS) await delay(RETRY_MIN_MS * attempt);
      }
    }
    await this.pumping;
    if (this.timer) clearTimeout(this.timer);
    if (!this.detached) {
      try {
        await this.out.sync();
      } catch (e) {
        lastErr ??= asError(e);
      }
      await this.out.close();
    }
    await this.lock?.release().catch(() => {});
    if (this.halted) {
      throw new Error(`audit: writing stopped, ${this.failed} records not written: ${this.halted.message}`, { cause: this.halted });
    }
    if (lastErr) {
      const lost = this.depth();
      this.lose(lost);
      throw new Error(`audit: ${lost} records could not be written: ${lastErr.message}`, { cause: lastErr });
    }
  }
}

/** The record that opens a file started after a rotation: the chain goes on from PATH.1, the file before. */
function rotatedNote(path: string, seq: number, prevHash: string) {
  return chainRecord({ type: ROTATED_TYPE, time: new Date().toISOString(), previous_file: `${basename(path)}.1` }, seq, prevHash);
}

const ignoreMissing = (e: NodeJS.ErrnoException) => {
  if (e.code !== 'ENOENT') throw e;
};

function rotationFor(opts: AuditSinkOptions): Rotation | undefined {
  const maxBytes = opts.rotateBytes ?? 0;
  if (maxBytes <= 0) return undefined;
  const keep = opts.rotateKeep ?? 5;
  const path = opts.path;
  /**
   * Where the shift stands, so that a retry after a failure goes on from the step that failed and
   * never deletes or moves a file twice: `keep` = delete PATH.keep; i in 1..keep-1 = move PATH.i to
   * PATH.i+1; 0 = move PATH to PATH.1; -1 = shifted, the new file still to open.
   */
  let step = keep;
  return {
    maxBytes,
    next: async () => {
      if (step === keep) {
        await unlink(`${path}.${keep}`).catch(ignoreMissing);
        step--;
      }
      for (; step >= 1; step--) await rename(`${path}.${step}`, `${path}.${step + 1}`).catch(ignoreMissing);
      if (step === 0) {
        await rename(path, `${path}.1`);
        step = -1;
      }
      const out = fileOutput(await open(path, 'a+', 0o640));
      step = keep;
      return out;
    },
  };
}

/** The chain head at the end of a closed file; undefined when there is no such file. */
async function headOf(path: string): Promise<ChainHead | undefined> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    ignoreMissing(e as NodeJS.ErrnoException);
    return undefined;
  }
  try {
    return (await readTail(fh, path)).head;
  } finally {
    await fh.close();
  }
}

/**
 * The file a log path names: a symlink is followed to its target, so that one log has one lock
 * (beside the target) whichever name each writer was given, and rotation moves the log itself
 * rather than the link. A link whose target does not exist yet names that target.
 */
async function logFileOf(path: string): Promise<string> {
  let file = path;
  // A chain of dangling links is followed as far as the system would (then open() says ELOOP).
  for (let hops = 0; hops < 40; hops++) {
    try {
      if (!(await lstat(file)).isSymbolicLink()) return file;
    } catch {
      return file; // created when opened
    }
    try {
      return await realpath(file);
    } catch {
      file = resolve(dirname(file), await readlink(file));
    }
  }
  return path;
}

export async function openAuditSink(given: AuditSinkOptions): Promise<OpenedAuditSink> {
  if (given.path === '-') return new ChainedSink(stdoutOutput(), given, { seq: 0, hash: GENESIS_HASH });
  const opts = { ...given, path: await logFileOf(given.path) };
  const rotation = rotationFor(opts);
  let sink: ChainedSink | undefined;
  const lock = await acquireAuditLock(opts.path, {
    ...opts.lock,
    onLost: (reason) => {
      sink?.halt(reason);
      opts.lock?.onLost?.(reason);
    },
  });
  let fh: FileHandle;
  try {
    fh = await open(opts.path, 'a+', 0o640);
  } catch (e) {
    await lock.release();
    throw e;
  }
  try {
    const tail = await readTail(fh, opts.path);
    const out = fileOutput(fh);
    let head = tail.head;
    // No complete record yet after a rotation (or a restart just after one): the chain goes on from
    // PATH.1, also when rotation has been switched off since.
    const previous = head.seq === 0 ? await headOf(`${opts.path}.1`) : undefined;
    let continuesRotated = previous !== undefined && previous.seq > 0;
    if (continuesRotated) head = previous as ChainHead;
    let recovered: { truncatedBytes: number } | undefined;
    if (tail.torn) {
      await fh.truncate(tail.torn.offset);
      const lines: string[] = [];
      if (continuesRotated) {
        // The torn line was the new file's first write: its rotated record still comes first.
        const opening = rotatedNote(opts.path, head.seq + 1, head.hash);
        lines.push(opening.line);
        head = { seq: head.seq + 1, hash: opening.hash };
        continuesRotated = false;
      }
      const note = chainRecord(
        {
          type: 'recovery',
          time: new Date().toISOString(),
          detail: 'removed a torn last line left by an interrupted write',
          truncated_bytes: tail.torn.bytes.length,
          truncated_sha256: createHash('sha256').update(tail.torn.bytes).digest('hex'),
        },
        head.seq + 1,
        head.hash,
      );
      lines.push(note.line);
      const buf = Buffer.from(lines.join(''), 'utf8');
      let off = 0;
      while (off < buf.length) off += await out.write(buf, off);
      await out.sync();
      head = { seq: head.seq + 1, hash: note.hash };
      recovered = { truncatedBytes: tail.torn.bytes.length };
    }
    const bytes = (await fh.stat()).size;
    sink = new ChainedSink(out, opts, head, recovered, { bytes, rotation, continuesRotated, lock });
    return sink;
  } catch (e) {
    await fh.close();
    await lock.release();
    throw e;
  }
}
