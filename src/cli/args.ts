/**
 * Flag parsing shared by the subcommands: --name value, --name=value, boolean --flag, -h, and
 * positionals. Each command declares its options; an unknown option or a value option without a
 * value is reported as `error` (commands answer it with their usage and exit 2), so a mistyped
 * flag is never silently ignored.
 */
export interface ParsedArgs {
  flags: Map<string, string | true>;
  positionals: string[];
  /** "unknown option --x" or "--x needs a value", for the first such problem. */
  error?: string;
}

export interface OptionSpec {
  /** Options taking a value. */
  values?: readonly string[];
  /** Options without a value; "help" is always accepted. */
  booleans?: readonly string[];
}

export function parseArgs(argv: string[], spec: OptionSpec = {}): ParsedArgs {
  const values = new Set(spec.values ?? []);
  const booleans = new Set(['help', ...(spec.booleans ?? [])]);
  const flags = new Map<string, string | true>();
  const positionals: string[] = [];
  let error: string | undefined;
  const problem = (msg: string) => {
    error ??= msg;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a === '-h') {
      flags.set('help', true);
    } else if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
      if (booleans.has(name)) {
        if (eq > 0) problem(`--${name} takes no value`);
        flags.set(name, true);
      } else if (values.has(name)) {
        if (eq > 0) flags.set(name, a.slice(eq + 1));
        else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) flags.set(name, argv[++i]);
        else problem(`--${name} needs a value`);
      } else {
        problem(`unknown option --${name}`);
      }
    } else {
      positionals.push(a);
    }
  }
  return { flags, positionals, error };
}

/** For commands that take no positional arguments: the first usage problem, or undefined. */
export function noArgsProblem(args: ParsedArgs): string | undefined {
  return args.error ?? (args.positionals.length > 0 ? `unexpected argument "${args.positionals[0]}"` : undefined);
}

export function flagString(args: ParsedArgs, name: string): string | undefined {
  const v = args.flags.get(name);
  return typeof v === 'string' ? v : undefined;
}
