import { loadSidecarConfig } from '../config/load.js';
import { ConfigError } from '../errors.js';
import { startSidecar } from '../server.js';
import { flagString, noArgsProblem, parseArgs } from './args.js';

export const SERVE_HELP = `Usage: agentwrit-sidecar serve [--config FILE]

Runs the sidecar: the proxy listener (forward proxy via HTTP_PROXY/HTTPS_PROXY, CONNECT, reverse
routes) and the admin listener (/metrics, /healthz, /readyz, POST /reload).

Options:
  --config FILE   sidecar configuration (YAML). Default: $AGENTWRIT_SIDECAR_CONFIG.
  --help          show this help

Environment:
  AGENTWRIT_SIDECAR_CONFIG   configuration file, when --config is not given
  AGENTWRIT_BROKER_URL       overrides broker.url from the configuration

Signals: SIGHUP reloads policies (and warns when this configuration file changed: it applies at
the next restart); SIGTERM/SIGINT drain in-flight requests (shutdown.grace), flush the audit log
and exit 0.
`;

export async function runServeCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ['config'] });
  if (args.flags.has('help')) {
    process.stdout.write(SERVE_HELP);
    return 0;
  }
  const problem = noArgsProblem(args);
  if (problem !== undefined) {
    process.stderr.write(`agentwrit-sidecar serve: ${problem}\n\n${SERVE_HELP}`);
    return 2;
  }
  const file = flagString(args, 'config') ?? process.env.AGENTWRIT_SIDECAR_CONFIG;
  if (!file) {
    process.stderr.write('agentwrit-sidecar serve: no configuration; pass --config FILE or set AGENTWRIT_SIDECAR_CONFIG\n');
    return 2;
  }
  let handle: Awaited<ReturnType<typeof startSidecar>> | undefined;
  // SIGHUP's default action ends the process: a reload asked for while the sidecar starts (say by a
  // ConfigMap watcher during a restart) is done once it has started — the files may have changed
  // after they were read.
  let reloadAsked = false;
  const onHangup = () => {
    if (handle) handle.reload('SIGHUP').catch(() => {});
    else reloadAsked = true;
  };
  process.on('SIGHUP', onHangup);
  try {
    const loaded = await loadSidecarConfig(file);
    handle = await startSidecar(loaded);
  } catch (err) {
    process.off('SIGHUP', onHangup);
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
    } else {
      process.stderr.write(`agentwrit-sidecar serve: ${(err as Error).message}\n`);
    }
    return 1;
  }
  const started = handle;
  if (reloadAsked) started.reload('SIGHUP during start').catch(() => {});
  return await new Promise<number>((resolve) => {
    const stop = () => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      started.close().then(
        () => resolve(0),
        (err: Error) => {
          process.stderr.write(`agentwrit-sidecar: shutdown error: ${err.message}\n`);
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}
