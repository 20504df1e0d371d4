/**
 * A small Dockerfile reader (instructions, stages, ARG substitution) and .dockerignore matcher,
 * enough to check the repository's Dockerfile and to replay its COPY/RUN steps without a
 * container engine.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

export interface Instruction {
  op: string;
  /** The raw argument text (continuations joined). */
  args: string;
  /** --name=value flags before the arguments (FROM, COPY, ADD, RUN). */
  flags: Record<string, string>;
  /** Arguments after the flags, split on whitespace (JSON form decoded). */
  words: string[];
  json: boolean;
  line: number;
}

export interface Stage {
  name: string;
  image: string;
  platform?: string;
  instructions: Instruction[];
}

export interface Dockerfile {
  globalArgs: Record<string, string>;
  stages: Stage[];
  all: Instruction[];
}

function parseInstruction(text: string, line: number): Instruction {
  const m = /^(\S+)\s*([\s\S]*)$/.exec(text.trim())!;
  const op = m[1].toUpperCase();
  let rest = m[2].trim();
  const flags: Record<string, string> = {};
  for (let f = /^--([a-z-]+)(?:=(\S*))?\s+/.exec(rest); f; f = /^--([a-z-]+)(?:=(\S*))?\s+/.exec(rest)) {
    flags[f[1]] = f[2] ?? '';
    rest = rest.slice(f[0].length);
  }
  let words: string[];
  let json = false;
  if (rest.startsWith('[')) {
    words = JSON.parse(rest) as string[];
    json = true;
  } else words = rest.split(/\s+/).filter(Boolean);
  return { op, args: rest, flags, words, json, line };
}

export function parseDockerfile(text: string): Dockerfile {
  const all: Instruction[] = [];
  let buf = '';
  let start = 0;
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (buf === '' && /^\s*(#|$)/.test(line)) return;
    if (buf !== '' && /^\s*#/.test(line)) return;
    if (buf === '') start = i + 1;
    if (line.endsWith('\\')) buf += `${line.slice(0, -1)} `;
    else {
      all.push(parseInstruction(buf + line, start));
      buf = '';
    }
  });
  const globalArgs: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const ins of all) {
    if (ins.op === 'FROM') {
      const image = substitute(ins.words[0], globalArgs);
      const as = ins.words[1]?.toUpperCase() === 'AS' ? ins.words[2] : String(stages.length);
      stages.push({ name: as, image, platform: ins.flags.platform, instructions: [] });
    } else if (stages.length === 0) {
      if (ins.op === 'ARG') {
        const [k, v = ''] = ins.args.split('=');
        globalArgs[k] = v;
      }
    } else stages[stages.length - 1].instructions.push(ins);
  }
  return { globalArgs, stages, all };
}

export function substitute(s: string, vars: Record<string, string>): string {
  return s.replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (_, name: string) => vars[name] ?? '');
}

/** ENV instruction -> pairs (KEY=value forms only). */
export function envPairs(ins: Instruction): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of ins.args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)/g)) out[m[1]] = m[2].replace(/^"|"$/g, '');
  return out;
}

/** .dockerignore patterns in order; the last matching pattern decides, "!" re-includes. */
export function dockerignore(text: string): { pattern: RegExp; include: boolean; raw: string }[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const include = l.startsWith('!');
      const raw = (include ? l.slice(1) : l).replace(/^\/+/, '').replace(/\/+$/, '');
      const re = raw
        .split('/')
        .map((seg) => (seg === '**' ? '.*' : seg.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')))
        .join('/');
      // A pattern matching a directory also matches everything below it.
      return { pattern: new RegExp(`^${re}(/.*)?$`), include, raw };
    });
}

export function isExcluded(path: string, rules: ReturnType<typeof dockerignore>): boolean {
  let excluded = false;
  for (const r of rules) if (r.pattern.test(path)) excluded = !r.include;
  return excluded;
}

function mayReachInside(pattern: string, dir: string): boolean {
  const literal = pattern.slice(0, pattern.search(/[*?[]|$/));
  return pattern === dir || literal.startsWith(`${dir}/`) || `${dir}/`.startsWith(literal);
}

/** The files Docker would send as build context: every file under dir not excluded by .dockerignore. */
export function buildContext(dir: string, rules: ReturnType<typeof dockerignore>): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        // Skip an excluded directory unless a re-include pattern could reach inside it.
        if (isExcluded(p, rules) && !rules.some((r) => r.include && mayReachInside(r.raw, p))) continue;
        walk(p);
      } else if (!isExcluded(p, rules)) out.push(p);
    }
  };
  walk('');
  return out.sort();
}
