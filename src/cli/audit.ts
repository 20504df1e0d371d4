/** `agentwrit-sidecar audit verify FILE...|-`: check the hash chain of an audit log (rotated files oldest first). */
import { createReadStream } from 'node:fs';
import { type VerifyReport, verifyAuditStreams } from '../audit/verify.js';
import { parseArgs } from './args.js';

export interface AuditCommandIo {
  out(s: string): void;
  err(s: string): void;
  /** Read for "-"; process.stdin when absent. */
  stdin?: NodeJS.ReadableStream;
}

const stdio: AuditCommandIo = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
};

const USAGE = `Usage: agentwrit-sidecar audit verify [--json] FILE...|-

Checks the hash chain of an audit log written by the sidecar ("-" reads standard input).
Rotated files (audit.rotateBytes) are given oldest first and checked as one chain, e.g.
  agentwrit-sidecar audit verify audit.jsonl.2 audit.jsonl.1 audit.jsonl
The first file may start in the middle of the chain when it opens with the "rotated" record the
sidecar writes first in every new file (older files were deleted past audit.rotateKeep); the seq
and prev_hash it starts from are printed.
Every line is one JSON record; its "hash" is the SHA-256 of the line without its "hash" member
(keys sorted, no whitespace), "prev_hash" is the hash of the line before it (64 zeros for the
first) and "seq" counts 1, 2, 3... This finds an edited, deleted, inserted or reordered record,
a line that is not JSON, and a torn last line.

Prints the number of records and the head hash (the last record's hash). Exit status:
  0  the chain is intact
  1  tampered or damaged: the first bad record is named (line number, seq and why)
  2  usage error or the file cannot be read

What the chain alone cannot show: records removed from the END of the file, or a whole file
rewritten with every hash recomputed. Both change the head hash: keep the head hash somewhere
else (a copy of the file, a log line, another system) and compare.

Options:
  --json      print the report as JSON
  -h, --help  show this help
`;

/** Returns the process exit code. */
export async function runAuditCommand(argv: string[], io: AuditCommandIo = stdio): Promise<number> {
  const args = parseArgs(argv, { booleans: ['json'] });
  if (args.error) {
    io.err(`${args.error}\n\n${USAGE}`);
    return 2;
  }
  if (args.flags.has('help')) {
    io.out(USAGE);
    return 0;
  }
  const json = args.flags.has('json');
  const [sub, ...files] = args.positionals;
  if (sub !== 'verify' || files.length === 0 || (files.includes('-') && files.length > 1)) {
    const why =
      sub === undefined
        ? 'missing subcommand'
        : sub !== 'verify'
          ? `unknown subcommand: ${sub}`
          : files.length === 0
            ? 'audit verify needs FILE or -'
            : '"-" (standard input) cannot be combined with files';
    io.err(`${why}\n\n${USAGE}`);
    return 2;
  }

  let reading = '';
  let current: NodeJS.ReadableStream | undefined;
  let report: VerifyReport;
  try {
    report = await verifyAuditStreams(
      files.map((file) => ({
        name: files.length > 1 ? file : undefined,
        open: () => {
          reading = file === '-' ? 'standard input' : file;
          current = file === '-' ? (io.stdin ?? process.stdin) : createReadStream(file);
          return current;
        },
      })),
    );
  } catch (e) {
    io.err(`audit verify: cannot read ${reading}: ${(e as Error).message}\n`);
    return 2;
  } finally {
    if (current && current !== (io.stdin ?? process.stdin)) (current as ReturnType<typeof createReadStream>).destroy();
  }

  if (json) {
    io.out(`${JSON.stringify(report)}\n`);
  } else if (report.ok) {
    const from = report.startsAt ? `starts at seq ${report.startsAt.seq}, continuing prev_hash ${report.startsAt.prevHash} (earlier files not given)\n` : '';
    io.out(`ok: ${report.records} records, chain intact\n${from}head hash: ${report.headHash}\n`);
  } else {
    const bad = report.firstBad!;
    const seq = bad.seq === undefined ? '' : ` (seq ${bad.seq})`;
    const where = bad.file === undefined ? '' : `${bad.file} `;
    io.out(
      `TAMPERED or damaged: ${where}line ${bad.line}${seq}: ${bad.reason}\n` +
        `${report.records} records verified before it; head hash of that valid part: ${report.headHash}\n`,
    );
  }
  return report.ok ? 0 : 1;
}
