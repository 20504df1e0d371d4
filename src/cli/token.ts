/**
 * `agentwrit-sidecar token`: gets an agent token from an AgentWrit broker in one command (admin
 * auth → launch token → challenge → signed registration), for trying the sidecar by hand.
 * Prints only the token on stdout so it can be captured: TOKEN=$(agentwrit-sidecar token ...).
 */
import { BrokerHttpError, issueAgentToken } from '../broker/client.js';
import { flagString, noArgsProblem, parseArgs } from './args.js';

export const TOKEN_HELP = `Usage: agentwrit-sidecar token --broker URL --scope SCOPE [--scope SCOPE...] [options]

Registers a new agent with an AgentWrit broker and prints its access token.

Options:
  --broker URL          broker base URL (default: $AGENTWRIT_BROKER_URL or http://127.0.0.1:8080)
  --admin-secret S      broker admin secret (default: $AGENTWRIT_ADMIN_SECRET or $AA_ADMIN_SECRET)
  --scope SCOPE         scope to request, action:resource:identifier (repeatable, or comma-separated)
  --orch-id ID          orchestration id (default: cli)
  --task-id ID          task id (default: task-<random>)
  --ttl SECONDS         token lifetime (launch token max_ttl; default 300)
`;

export async function runTokenCommand(argv: string[]): Promise<number> {
  const scopes: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--scope' && i + 1 < argv.length) scopes.push(...argv[++i].split(',').filter(Boolean));
    else if (argv[i].startsWith('--scope=')) scopes.push(...argv[i].slice(8).split(',').filter(Boolean));
    else rest.push(argv[i]);
  }
  const args = parseArgs(rest, { values: ['broker', 'admin-secret', 'orch-id', 'task-id', 'ttl', 'scope'] });
  if (args.flags.has('help')) {
    process.stdout.write(TOKEN_HELP);
    return 0;
  }
  const problem = noArgsProblem(args);
  if (problem !== undefined) {
    process.stderr.write(`agentwrit-sidecar token: ${problem}\n\n${TOKEN_HELP}`);
    return 2;
  }
  const broker = flagString(args, 'broker') ?? process.env.AGENTWRIT_BROKER_URL ?? 'http://127.0.0.1:8080';
  const secret = flagString(args, 'admin-secret') ?? process.env.AGENTWRIT_ADMIN_SECRET ?? process.env.AA_ADMIN_SECRET;
  if (!secret || scopes.length === 0) {
    process.stderr.write(`agentwrit-sidecar token: ${!secret ? 'an admin secret is required (--admin-secret or AGENTWRIT_ADMIN_SECRET)' : 'at least one --scope is required'}\n\n${TOKEN_HELP}`);
    return 2;
  }
  const ttl = flagString(args, 'ttl');
  if (ttl !== undefined && !(/^\d+$/.test(ttl) && Number(ttl) > 0 && Number.isSafeInteger(Number(ttl)))) {
    process.stderr.write(`agentwrit-sidecar token: --ttl must be a whole number of seconds above 0, got "${ttl}"\n\n${TOKEN_HELP}`);
    return 2;
  }
  try {
    const token = await issueAgentToken(broker, secret, scopes, {
      orchId: flagString(args, 'orch-id') ?? 'cli',
      taskId: flagString(args, 'task-id') ?? `task-${Math.random().toString(16).slice(2, 10)}`,
      maxTtl: ttl ? Number(ttl) : undefined,
    });
    process.stdout.write(`${token}\n`);
    return 0;
  } catch (err) {
    const msg = err instanceof BrokerHttpError ? err.message : `cannot reach the broker at ${broker}: ${(err as Error).message}`;
    process.stderr.write(`agentwrit-sidecar token: ${msg}\n`);
    return 1;
  }
}
