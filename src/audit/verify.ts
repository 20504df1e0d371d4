/**
 * Checks a whole audit stream: every line valid on its own (chain.ts), seq counting 1, 2, 3...
 * and each prev_hash equal to the previous line's hash. Stops at the first bad line.
 *
 * What an unkeyed chain cannot show: records removed from the END of the file, or a file rewritten
 * from scratch with every hash recomputed. Both change the head hash, so comparing the reported
 * head hash with one kept elsewhere (a copy, a log line) catches them.
 */
import { StringDecoder } from 'node:string_decoder';
import { checkLine, GENESIS_HASH } from './chain.js';

export interface VerifyReport {
  ok: boolean;
  /** Valid records before the first bad one (all of them when ok). */
  records: number;
  /** Hash of the last valid record; 64 zeros when there is none. */
  headHash: string;
  firstBad?: { line: number; seq?: number; reason: string };
}

/** Far beyond any real record; stops a newline-free stream from growing memory without bound. */
const MAX_LINE = 1024 * 1024;

class ChainChecker {
  records = 0;
  head = GENESIS_HASH;
  lineNo = 0;
  bad?: VerifyReport['firstBad'];

  /** Returns false once a bad line was found. */
  line(text: string): boolean {
    this.lineNo++;
    const expected = this.records + 1;
    if (text === '') return this.fail(undefined, 'empty line (not JSON)');
    const c = checkLine(text);
    if (!c.ok) return this.fail(c.seq, c.reason);
    if (c.seq !== expected) {
      const why = c.seq < expected ? 'repeated or out of order' : 'records missing before it';
      return this.fail(c.seq, `seq gap: expected ${expected}, found ${c.seq} (${why})`);
    }
    if (c.prevHash !== this.head) {
      return this.fail(c.seq, 'prev_hash mismatch (does not chain to the record before it)');
    }
    this.records = c.seq;
    this.head = c.hash;
    return true;
  }

  fail(seq: number | undefined, reason: string): false {
    this.bad = seq === undefined ? { line: this.lineNo, reason } : { line: this.lineNo, seq, reason };
    return false;
  }

  report(): VerifyReport {
    const r: VerifyReport = { ok: !this.bad, records: this.records, headHash: this.head };
    if (this.bad) r.firstBad = this.bad;
    return r;
  }
}

export async function verifyAuditStream(input: NodeJS.ReadableStream): Promise<VerifyReport> {
  const checker = new ChainChecker();
  const decoder = new StringDecoder('utf8');
  let carry = '';
  for await (const chunk of input) {
    carry += typeof chunk === 'string' ? chunk : decoder.write(chunk as Buffer);
    let nl = carry.indexOf('\n');
    let from = 0;
    while (nl >= 0) {
      if (!checker.line(carry.slice(from, nl))) return checker.report();
      from = nl + 1;
      nl = carry.indexOf('\n', from);
    }
    carry = carry.slice(from);
    if (carry.length > MAX_LINE) {
      checker.lineNo++;
      checker.fail(undefined, `line longer than ${MAX_LINE} bytes (not an audit record)`);
      return checker.report();
    }
  }
  carry += decoder.end();
  if (carry !== '') {
    // The writer ends every record with a newline: a last line without one is a cut-short write.
    checker.lineNo++;
    const c = checkLine(carry);
    const detail = c.ok ? 'complete record' : c.reason;
    checker.fail(c.seq, `incomplete last line: no newline at the end (torn write; ${detail})`);
  }
  return checker.report();
}
