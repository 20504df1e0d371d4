/**
 * `agentwrit-sidecar ca ...`: create the CA that signs intercepted hosts' leaf certificates, and tell
 * the operator how agent containers come to trust it.
 */
import { resolve } from 'node:path';
import { DEFAULT_CA_VALIDITY_DAYS, initCaDir, writeCaOutputs } from '../tls/ca.js';
import { flagString, parseArgs } from './args.js';

export interface CaCommandIo {
  out(s: string): void;
  err(s: string): void;
}

const stdio: CaCommandIo = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
};

const USAGE = `Usage: agentwrit-sidecar ca init --out DIR [--days N] [--bundle FILE] [--force]

Creates DIR/ca.key (ECDSA P-256, PKCS#8, mode 0600) and DIR/ca.crt, the CA the sidecar uses to
sign certificates for the HTTPS hosts it intercepts. Point the sidecar at it with
  tls:
    caDir: DIR
(DIR may also be a mounted Kubernetes TLS Secret holding tls.crt and tls.key).

Options:
  --out DIR       directory to create or fill (required)
  --days N        validity of the CA in days (default ${DEFAULT_CA_VALIDITY_DAYS})
  --bundle FILE   also write FILE: the system CAs plus this CA, for clients that replace
                  their trust store (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE)
  --force         replace an existing CA in DIR (agents trusting the old one will stop working)
  -h, --help      show this help
`;

/** Returns the process exit code: 0 done, 1 failed, 2 usage error. */
export async function runCaCommand(argv: string[], io: CaCommandIo = stdio): Promise<number> {
  const args = parseArgs(argv, { values: ['out', 'days', 'bundle'], booleans: ['force'] });
  if (args.error) {
    io.err(`${args.error}\n\n${USAGE}`);
    return 2;
  }
  if (args.flags.has('help')) {
    io.out(USAGE);
    return 0;
  }
  const positionals = args.positionals;
  const values = { out: flagString(args, 'out'), days: flagString(args, 'days'), bundle: flagString(args, 'bundle'), force: args.flags.has('force') };
  const sub = positionals[0];
  if (sub !== 'init' || positionals.length > 1) {
    io.err(`${sub === undefined ? 'missing subcommand' : `unknown arguments: ${positionals.join(' ')}`}\n\n${USAGE}`);
    return 2;
  }
  if (!values.out) {
    io.err(`ca init needs --out DIR\n\n${USAGE}`);
    return 2;
  }
  let days = DEFAULT_CA_VALIDITY_DAYS;
  if (values.days !== undefined) {
    days = Number(values.days);
    if (!/^\d+$/.test(values.days) || days < 1 || days > 3650) {
      io.err(`--days must be a whole number from 1 to 3650, got ${JSON.stringify(values.days)}\n`);
      return 2;
    }
  }

  const dir = resolve(values.out);
  try {
    const ca = await initCaDir(dir, { force: values.force, validityDays: days });
    const bundle = values.bundle ? resolve(values.bundle) : undefined;
    if (bundle) await writeCaOutputs(ca, { bundleOut: bundle });
    const certPath = resolve(dir, 'ca.crt');
    const trustFile = bundle ?? '<the file written to tls.bundleOut>';
    io.out(
      [
        `CA certificate: ${certPath}`,
        `CA key:         ${resolve(dir, 'ca.key')} (mode 0600: keep it secret, never give it to agents)`,
        `Subject:        ${ca.subject}`,
        `SHA-256:        ${ca.fingerprint256}`,
        `Expires:        ${ca.notAfter.toISOString()}`,
        ...(bundle ? [`Trust bundle:   ${bundle} (system CAs + this CA)`] : []),
        '',
        'Sidecar configuration:',
        '  tls:',
        `    caDir: ${dir}`,
        '',
        'In the agent container (system CAs + this CA, so pass-through hosts keep working):',
        `  export SSL_CERT_FILE=${trustFile}`,
        `  export REQUESTS_CA_BUNDLE=${trustFile}`,
        `  export CURL_CA_BUNDLE=${trustFile}`,
        `  export NODE_EXTRA_CA_CERTS=${certPath}   # Node adds this to its own CAs`,
        '',
      ].join('\n'),
    );
    return 0;
  } catch (e) {
    io.err(`ca init failed: ${(e as Error).message}\n`);
    return 1;
  }
}
