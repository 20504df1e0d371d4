#!/usr/bin/env node
/**
 * agentwrit-sidecar command line. Each subcommand lives in its own module and returns an exit code.
 */
import { readFileSync } from 'node:fs';

const HELP = `Usage: agentwrit-sidecar <command> [options]

Commands:
  serve --config FILE           run the sidecar proxy and admin listeners
  dev                           embedded default: broker + sidecar + sample upstream on loopback
  demo                          scripted end-to-end scenario on the embedded default
  policy check PATH...          validate configuration and policy files
  policy explain --config FILE [--token JWT | --token-file F] METHOD URL
                                show which route matches a request and what it requires
  audit verify [--json] FILE...|-
                                check the hash chain of an audit log (rotated files oldest first)
  broker [options]              AgentWrit-compatible broker for development and tests (not for production)
  ca init --out DIR             create a CA for HTTPS interception
  token --broker URL --scope S  register an agent with a broker and print its token

Options:
  --help, -h                    help for any command
  --version                     print the version
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case undefined:
      // No command is a usage error: the help goes where errors go.
      process.stderr.write(HELP);
      return 2;
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(HELP);
      return 0;
    case '--version':
    case '-v':
      process.stdout.write(`${version()}\n`);
      return 0;
    case 'serve':
      return (await import('./serve.js')).runServeCommand(rest);
    case 'policy':
      return (await import('./policy.js')).runPolicyCommand(rest);
    case 'audit':
      return (await import('./audit.js')).runAuditCommand(rest);
    case 'broker':
      return (await import('./broker.js')).runBrokerCommand(rest);
    case 'ca':
      return (await import('./ca.js')).runCaCommand(rest);
    case 'token':
      return (await import('./token.js')).runTokenCommand(rest);
    case 'dev':
      return (await import('./dev.js')).runDevCommand(rest);
    case 'demo':
      return (await import('./demo.js')).runDemoCommand(rest);
    default:
      process.stderr.write(`agentwrit-sidecar: unknown command "${cmd}"\n\n${HELP}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: Error) => {
    process.stderr.write(`agentwrit-sidecar: ${err.message}\n`);
    process.exitCode = 1;
  },
);
