/** Minimal flag parsing shared by the subcommands: --name value, --name=value, --flag, positionals. */
export interface ParsedArgs {
  flags: Map<string, string | true>;
  positionals: string[];
}

export function parseArgs(argv: string[], booleanFlags: readonly string[] = []): ParsedArgs {
  const flags = new Map<string, string | true>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      if (eq > 0) {
        flags.set(a.slice(2, eq), a.slice(eq + 1));
      } else if (booleanFlags.includes(a.slice(2)) || i + 1 >= argv.length || argv[i + 1].startsWith('--')) {
        flags.set(a.slice(2), true);
      } else {
        flags.set(a.slice(2), argv[++i]);
      }
    } else if (a === '-h') {
      flags.set('help', true);
    } else {
      positionals.push(a);
    }
  }
  return { flags, positionals };
}

export function flagString(args: ParsedArgs, name: string): string | undefined {
  const v = args.flags.get(name);
  return typeof v === 'string' ? v : undefined;
}
