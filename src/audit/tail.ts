/**
 * Finding where an existing audit file's chain ends, so a restart continues it.
 *
 * Only the last complete line is checked (the whole file is `audit verify`'s job). Bytes after the
 * last newline can only come from a write cut short by a crash: they are reported as a torn tail,
 * which the sink removes and notes in the chain. A last complete line that is not a valid record is
 * not something a crash produces, so the sink refuses to start rather than guess.
 */
import type { FileHandle } from 'node:fs/promises';
import { checkLine, GENESIS_HASH } from './chain.js';

const CHUNK = 64 * 1024;
/** A record is a few hundred bytes; anything near this is not an audit line. */
const MAX_SCAN = 16 * 1024 * 1024;

export interface ChainHead {
  seq: number;
  hash: string;
}

export interface TailState {
  head: ChainHead;
  /** Bytes after the last newline (a torn write), if any. */
  torn?: { offset: number; bytes: Buffer };
}

export class AuditFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuditFileError';
  }
}

async function readAt(fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return buf.subarray(0, done);
}

export async function readTail(fh: FileHandle, path: string): Promise<TailState> {
  const size = (await fh.stat()).size;
  if (size === 0) return { head: { seq: 0, hash: GENESIS_HASH } };
  let start = size;
  let buf = Buffer.alloc(0);
  for (;;) {
    const lastNl = buf.lastIndexOf(0x0a);
    // lastIndexOf with a negative offset would count from the end, hence the explicit check.
    const prevNl = lastNl > 0 ? buf.lastIndexOf(0x0a, lastNl - 1) : -1;
    const complete = start === 0 || (lastNl >= 0 && prevNl >= 0);
    if (!complete) {
      if (size - start >= MAX_SCAN) {
        throw new AuditFileError(`audit file ${path}: no complete record in its last ${MAX_SCAN} bytes`);
      }
      const next = Math.max(0, start - CHUNK);
      buf = Buffer.concat([await readAt(fh, next, start - next), buf]);
      start = next;
      continue;
    }
    const tornFrom = lastNl + 1;
    const torn = tornFrom < buf.length ? { offset: start + tornFrom, bytes: buf.subarray(tornFrom) } : undefined;
    if (lastNl < 0) return { head: { seq: 0, hash: GENESIS_HASH }, torn };
    const line = buf.toString('utf8', prevNl + 1, lastNl);
    const check = checkLine(line);
    if (!check.ok) {
      throw new AuditFileError(
        `audit file ${path}: its last record is not valid (${check.reason}); check it with "audit verify" and move the file aside to start a new chain`,
      );
    }
    return { head: { seq: check.seq, hash: check.hash }, torn };
  }
}
