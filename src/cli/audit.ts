/** `agentwrit-sidecar audit verify FILE|-`: check an audit log's hash chain. */
import { createReadStream } from 'node:fs';
import { verifyAuditStream } from '../audit/verify.js';
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

const USAGE = `Usage: agentwrit-sidecar audit verify [--json] FILE|-

Checks the hash chain of an audit log written by the sidecar ("-" reads standard input).
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
  const positionals = args.positionals;
  const [sub, file, ...extra] = positionals;
  if (sub !== 'verify' || file === undefined || extra.length > 0) {
    const why =
      sub === undefined
        ? 'missing subcommand'
        : sub !== 'verify'
          ? `unknown subcommand: ${sub}`
          : file === undefined
            ? 'audit verify needs FILE or -'
            : `unexpected arguments: ${extra.join(' ')}`;
    io.err(`${why}\n\n${USAGE}`);
    return 2;
  }

  const input = file === '-' ? (io.stdin ?? process.stdin) : createReadStream(file);
  let report: Awaited<ReturnType<typeof verifyAuditStream>>;
  try {
    report = await verifyAuditStream(input);
  } catch (e) {
    io.err(`audit verify: cannot read ${file === '-' ? 'standard input' : file}: ${(e as Error).message}\n`);
    return 2;
  } finally {
    if (file !== '-') (input as ReturnType<typeof createReadStream>).destroy();
  }

  if (json) {
    io.out(`${JSON.stringify(report)}\n`);
  } else if (report.ok) {
    io.out(`ok: ${report.records} records, chain intact\nhead hash: ${report.headHash}\n`);
  } else {
    const bad = report.firstBad!;
    const seq = bad.seq === undefined ? '' : ` (seq ${bad.seq})`;
    io.out(
      `TAMPERED or damaged: line ${bad.line}${seq}: ${bad.reason}\n` +
        `${report.records} records verified before it; head hash of that valid part: ${report.headHash}\n`,
    );
  }
  return report.ok ? 0 : 1;
}
