/**
 * Checks a whole audit stream: every line valid on its own (chain.ts), seq counting 1, 2, 3...
 * and each prev_hash equal to the previous line's hash. Stops at the first bad line.
 *
 * Rotated files (audit.rotateBytes) are checked as one chain when given oldest first: each file
 * continues the one before it. The oldest file given may start in the middle of the chain (older
 * files were deleted) only with the `rotated` record the sink writes first in every new file; its
 * link to the file before it is then out of reach and is reported as where the check starts.
 *
 * What an unkeyed chain cannot show: records removed from the END of the file, or a file rewritten
 * from scratch with every hash recomputed. Both change the head hash, so comparing the reported
 * head hash with one kept elsewhere (a copy, a log line) catches them. Likewise, deleting the
 * oldest rotated files looks the same as the sink deleting them past audit.rotateKeep.
 */
import { checkLine, GENESIS_HASH, ROTATED_TYPE } from './chain.js';

export interface VerifyReport {
  ok: boolean;
  /** Valid records before the first bad one (all of them when ok). */
  records: number;
  /** Hash of the last valid record; 64 zeros when there is none. */
  headHash: string;
  /** When the first record continues an earlier, absent file: its seq and the prev_hash it names. */
  startsAt?: { seq: number; prevHash: string };
  /** `file` is set when several files were checked. */
  firstBad?: { line: number; seq?: number; reason: string; file?: string };
}

/**
 * Far beyond any record the sidecar writes (a request head is at most proxy.maxHeaderBytes, 1 MiB,
 * and a record repeats parts of it a few times); stops a newline-free stream from growing memory
 * without bound.
 */
const MAX_LINE = 64 * 1024 * 1024;

class ChainChecker {
  records = 0;
  /** seq of the last valid record. */
  seq = 0;
  head = GENESIS_HASH;
  lineNo = 0;
  file?: string;
  startsAt?: VerifyReport['startsAt'];
  bad?: VerifyReport['firstBad'];

  /** Returns false once a bad line was found. */
  line(text: string): boolean {
    this.lineNo++;
    const expected = this.seq + 1;
    if (text === '') return this.fail(undefined, 'empty line (not JSON)');
    const c = checkLine(text);
    if (!c.ok) return this.fail(c.seq, c.reason);
    const rotated = isRotatedStart(text);
    // The sink writes a rotated record only as the first line of a new file.
    if (rotated && this.lineNo > 1) return this.fail(c.seq, 'a rotated record that does not start its file (records moved between files)');
    if (this.records === 0 && c.seq > 1 && rotated) {
      // The first file given starts a rotated file whose predecessors are not at hand.
      this.startsAt = { seq: c.seq, prevHash: c.prevHash };
      this.seq = c.seq - 1;
      this.head = c.prevHash;
    } else if (c.seq !== expected) {
      const why = c.seq < expected ? 'repeated or out of order' : 'records missing before it';
      return this.fail(c.seq, `seq gap: expected ${expected}, found ${c.seq} (${why})`);
    }
    if (c.prevHash !== this.head) {
      return this.fail(c.seq, 'prev_hash mismatch (does not chain to the record before it)');
    }
    this.records++;
    this.seq = c.seq;
    this.head = c.hash;
    return true;
  }

  fail(seq: number | undefined, reason: string): false {
    this.bad = { line: this.lineNo, ...(seq === undefined ? {} : { seq }), reason, ...(this.file === undefined ? {} : { file: this.file }) };
    return false;
  }

  report(): VerifyReport {
    const r: VerifyReport = { ok: !this.bad, records: this.records, headHash: this.head };
    if (this.startsAt) r.startsAt = this.startsAt;
    if (this.bad) r.firstBad = this.bad;
    return r;
  }
}

/** The record the sink writes first in a file it starts after rotating (checked valid by the caller). */
function isRotatedStart(text: string): boolean {
  return text.includes(`"type":"${ROTATED_TYPE}"`) && (JSON.parse(text) as { type?: unknown }).type === ROTATED_TYPE;
}

export async function verifyAuditStream(input: NodeJS.ReadableStream): Promise<VerifyReport> {
  return verifyAuditStreams([{ open: () => input }]);
}

/**
 * Several files of one chain, oldest first, each opened only when its turn comes; `name` labels
 * the file a bad record is in. Every file after the first starts with the `rotated` record the
 * sink writes first in each new file, so records moved from one file into another, or a file
 * emptied into the next, are found; only the last file may be empty (the sink had just opened it).
 */
export async function verifyAuditStreams(inputs: Array<{ open: () => NodeJS.ReadableStream; name?: string }>): Promise<VerifyReport> {
  const checker = new ChainChecker();
  for (const [i, { open, name }] of inputs.entries()) {
    checker.file = name;
    checker.lineNo = 0;
    const place = { first: i === 0, last: i === inputs.length - 1 };
    if (!(await checkStream(checker, open(), place))) break;
  }
  return checker.report();
}

// ignoreBOM: a byte-order mark put in front of a record stays in its text (and is found).
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Feeds one stream's lines to the checker; false once a bad line was found. Lines are split as
 * bytes and each decoded strictly: a byte that is not UTF-8 would otherwise be read as U+FFFD,
 * and a record whose text held U+FFFD would still match its hash.
 */
async function checkStream(checker: ChainChecker, input: NodeJS.ReadableStream, place: { first: boolean; last: boolean }): Promise<boolean> {
  // Every file after the first starts with its rotated record.
  let first = !place.first;
  let empty = true;
  const line = (bytes: Buffer): boolean => {
    empty = false;
    let text: string;
    try {
      text = utf8.decode(bytes);
    } catch {
      checker.lineNo++;
      return checker.fail(undefined, 'not valid UTF-8 (bytes changed after writing)');
    }
    if (first) {
      first = false;
      const c = checkLine(text);
      if (c.ok && !isRotatedStart(text)) {
        checker.lineNo++;
        return checker.fail(c.seq, 'a later file does not start with its rotated record (records moved between files, or files out of order)');
      }
    }
    return checker.line(text);
  };
  // The start of a line not yet ended, in the pieces it came in: joined once, when its newline
  // comes (joining at each piece would copy a long line over and over).
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const chunk of input) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : (chunk as Buffer);
    let from = 0;
    let nl = bytes.indexOf(10);
    while (nl >= 0) {
      const piece = bytes.subarray(from, nl);
      const whole = pending.length === 0 ? piece : Buffer.concat([...pending, piece]);
      pending = [];
      pendingBytes = 0;
      if (!line(whole)) return false;
      from = nl + 1;
      nl = bytes.indexOf(10, from);
    }
    if (from < bytes.length) {
      pending.push(bytes.subarray(from));
      pendingBytes += bytes.length - from;
    }
    if (pendingBytes > MAX_LINE) {
      checker.lineNo++;
      checker.fail(undefined, `line longer than ${MAX_LINE} bytes (not an audit record)`);
      return false;
    }
  }
  const carry = Buffer.concat(pending);
  if (carry.length > 0) {
    // The writer ends every record with a newline: a last line without one is a cut-short write.
    checker.lineNo++;
    let c: ReturnType<typeof checkLine> | undefined;
    try {
      c = checkLine(utf8.decode(carry));
    } catch {
      // not UTF-8 either: said below
    }
    const detail = c === undefined ? 'not valid UTF-8' : c.ok ? 'complete record' : c.reason;
    checker.fail(c?.seq, `incomplete last line: no newline at the end (torn write; ${detail})`);
    return false;
  }
  if (empty && !place.last) {
    return checker.fail(undefined, 'an empty file before others (a rotated file holds at least its rotated record)');
  }
  return true;
}
