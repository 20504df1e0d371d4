/**
 * The Dockerfile, without a container engine: its invariants are checked on the parsed file, then its
 * COPY/RUN steps are replayed in a clean directory (each stage a directory standing for its root
 * filesystem; the build context filtered by .dockerignore), and the runtime stage's ENTRYPOINT is
 * started as UID 10001 from files it cannot write, with writable paths only on "volumes".
 * Not covered: the base image's contents and the layer build (the replay uses this machine's Node).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import t, { type Test } from 'tap';
import { stringify } from 'yaml';
import { REPO_ROOT } from './lib/helm.js';
import { buildContext, dockerignore, envPairs, parseDockerfile, type Stage } from './lib/dockerfile.js';

t.setTimeout(600_000);

const UID = 10001;
const df = parseDockerfile(readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8'));
const ignoreRules = dockerignore(readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8'));
const runtime = df.stages[df.stages.length - 1];
const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };

t.test('Dockerfile invariants', async (t) => {
  t.ok(df.stages.length >= 2, 'multi-stage');
  t.same(
    df.stages.map((s) => s.name),
    ['build', 'deps', 'runtime'],
    'build, production deps and runtime stages',
  );
  for (const s of df.stages) t.match(s.image, /^node:(\d+)-(slim|alpine)$/, `${s.name}: a Node.js image pinned to a major line`);
  const major = Number(/^node:(\d+)/.exec(runtime.image)?.[1]);
  t.ok(major >= 24 && major % 2 === 0, `runtime on an LTS line (even major): node ${major}`);
  t.ok(df.stages.every((s) => s.image === runtime.image), 'every stage on the same base');

  const ops = (s: Stage, op: string) => s.instructions.filter((i) => i.op === op);
  const user = ops(runtime, 'USER').at(-1)?.words[0] ?? '';
  t.match(user, /^\d+:\d+$/, 'USER is numeric uid:gid');
  t.equal(Number(user.split(':')[0]), UID, `runs as UID ${UID}`);
  t.not(Number(user.split(':')[0]), 0, 'not root');
  const entry = ops(runtime, 'ENTRYPOINT').at(-1);
  const cmd = ops(runtime, 'CMD').at(-1);
  t.ok(entry?.json && cmd?.json, 'ENTRYPOINT and CMD in exec (JSON) form: signals reach node');
  t.same(entry?.words, ['node', '/app/dist/cli/main.js'], 'ENTRYPOINT is the CLI');
  t.same(cmd?.words, ['serve', '--config', '/etc/agentwrit-sidecar/config.yaml'], 'CMD serves the mounted config');
  const env = Object.assign({}, ...ops(runtime, 'ENV').map(envPairs)) as Record<string, string>;
  t.equal(env.HOME, '/tmp', 'HOME on the /tmp volume');
  t.equal(env.TMPDIR, '/tmp', 'TMPDIR on the /tmp volume');
  t.equal(env.NODE_ENV, 'production');
  t.same(ops(runtime, 'RUN'), [], 'runtime stage runs nothing (no package manager, no writes)');

  const runs = (s: string) => ops(df.stages.find((x) => x.name === s)!, 'RUN').map((i) => i.args);
  t.ok(runs('build').some((r) => /^npm ci\b/.test(r)), 'build: npm ci');
  t.ok(runs('build').includes('npm run build'), 'build: npm run build');
  t.ok(runs('deps').some((r) => /^npm ci\b.*--omit=dev\b.*--ignore-scripts\b/.test(r)), 'deps: npm ci --omit=dev --ignore-scripts');
  const runtimeSources = ops(runtime, 'COPY').map((i) => `${i.flags.from ?? 'context'}:${i.words.slice(0, -1).join(',')}`);
  t.same(runtimeSources.sort(), ['build:/build/dist', 'context:package.json', 'deps:/app/node_modules'], 'runtime gets dist, production node_modules and package.json only');

  t.same(df.all.filter((i) => i.op === 'ADD'), [], 'no ADD (no remote URLs or archives)');
  for (const i of df.all) {
    t.notMatch(i.args, /\b(curl|wget)\b|https?:\/\//, `line ${i.line}: downloads nothing itself`);
    if (i.op === 'ENV' || i.op === 'ARG') t.notMatch(i.args, /(SECRET|TOKEN|PASSWORD|API_?KEY)/i, `line ${i.line}: no secret in ENV/ARG`);
  }

  t.equal(ignoreRules[0]?.raw, '*', '.dockerignore is an allow-list');
  const context = buildContext(REPO_ROOT, ignoreRules);
  t.ok(context.includes('package-lock.json') && context.some((f) => f.startsWith('src/')), 'context has the sources and the lockfile');
  t.same(
    context.filter((f) => !/^(package\.json|package-lock\.json|tsconfig(\.build)?\.json|src\/.*)$/.test(f)),
    [],
    'context holds nothing else (no .env, node_modules, dist, .git, audit logs)',
  );
});

/** This process's environment without what npm/npx put there (it could point npm at the repository). */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) && k !== 'INIT_CWD'));
}

/** Replays every stage into root/<stage>; returns the runtime stage's directory and ENV. */
function replay(t: Test, root: string): { dir: string; env: Record<string, string> } {
  const context = buildContext(REPO_ROOT, ignoreRules);
  const stageDir = (name: string) => join(root, name);
  let last = { dir: '', env: {} as Record<string, string> };
  for (const stage of df.stages) {
    const base = stageDir(stage.name);
    mkdirSync(base, { recursive: true });
    let workdir = '/';
    const env: Record<string, string> = {};
    for (const ins of stage.instructions) {
      if (ins.op === 'WORKDIR') {
        workdir = posix.resolve(workdir, ins.words[0]);
        mkdirSync(join(base, workdir), { recursive: true });
      } else if (ins.op === 'ENV') Object.assign(env, envPairs(ins));
      else if (ins.op === 'COPY') {
        const srcs = ins.words.slice(0, -1);
        const dest = posix.resolve(workdir, ins.words[ins.words.length - 1]);
        const toDir = ins.words[ins.words.length - 1].endsWith('/') || srcs.length > 1;
        for (const src of srcs) {
          const from = ins.flags.from ? join(stageDir(ins.flags.from), src) : join(REPO_ROOT, src);
          if (!ins.flags.from) t.ok(context.some((f) => f === src || f.startsWith(`${src}/`)), `COPY ${src}: in the build context`);
          else if (!existsSync(from)) {
            t.fail(`COPY --from=${ins.flags.from} ${src}: not produced by that stage`);
            continue;
          }
          const target = toDir ? join(base, dest, posix.basename(src)) : join(base, dest);
          mkdirSync(dirname(target), { recursive: true });
          // Docker copies a directory's contents; only build-context files pass the .dockerignore.
          cpSync(from, target, { recursive: true, filter: (p) => ins.flags.from !== undefined || p === from || context.includes(p.slice(REPO_ROOT.length).replace(/^\/+/, '')) || statSync(p).isDirectory() });
        }
      } else if (ins.op === 'RUN') {
        // Absolute paths would touch this machine, not the stage: the Dockerfile must not need them.
        t.notMatch(ins.args, /(^|\s)\//, `RUN ${ins.args}: no absolute paths`);
        const r = spawnSync('sh', ['-c', ins.args], {
          cwd: join(base, workdir),
          env: { ...cleanEnv(), ...env, npm_config_prefer_offline: 'true', npm_config_update_notifier: 'false' },
          encoding: 'utf8',
          timeout: 300_000,
        });
        t.equal(r.status, 0, `${stage.name}: RUN ${ins.args}`, { output: (r.stdout + r.stderr).slice(-2000) });
      }
    }
    last = { dir: base, env };
  }
  return last;
}

function runAs(uid: number): string[] {
  if (process.getuid?.() !== 0) return []; // already not root
  const setpriv = spawnSync('setpriv', ['--version']).status === 0;
  if (setpriv) return ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--'];
  if (spawnSync('runuser', ['--help']).status === 0) return ['runuser', '-u', `#${uid}`, '--'];
  throw new Error('running as root without setpriv or runuser: cannot drop to a non-root UID');
}

function listFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: false }) as string[];
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

t.test('replayed build runs as a non-root UID from a read-only application directory', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'aw-image-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  chmodSync(root, 0o755);
  const { dir: image, env } = replay(t, root);
  if (!existsSync(join(image, 'app/dist/cli/main.js')) || !existsSync(join(image, 'app/node_modules'))) return void t.fail('runtime stage is incomplete (an earlier step failed)');

  const modules = readdirSync(join(image, 'app/node_modules'));
  t.ok(modules.includes('undici') && modules.includes('zod'), 'production dependencies present');
  t.notOk(modules.includes('typescript') || modules.includes('tap') || modules.includes('@biomejs'), 'no dev dependencies');
  t.same(readdirSync(join(image, 'app')).sort(), ['dist', 'node_modules', 'package.json'], '/app holds only what runs');

  // The image's volumes: /tmp (HOME, TMPDIR), config and policies (read-only), CA out and audit (writable).
  const vol = (p: string, writable: boolean) => {
    mkdirSync(join(image, p), { recursive: true });
    if (writable) chownSync(join(image, p), UID, UID);
  };
  vol('tmp', true);
  vol('etc/agentwrit-sidecar/policies', false);
  vol('var/run/agentwrit/ca', true);
  vol('var/lib/agentwrit-sidecar/audit', true);
  const asUser = runAs(UID);
  const vars = { PATH: process.env.PATH ?? '', ...Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v.startsWith('/') ? join(image, v) : v])) };
  const entry = ['node', ...(df.stages.at(-1)!.instructions.find((i) => i.op === 'ENTRYPOINT')!.words.slice(1).map((p) => join(image, p)))];
  const cwd = join(image, 'app');

  const probe = spawnSync(asUser[0] ?? 'sh', [...asUser.slice(1), 'sh', '-c', `id -u; touch ${JSON.stringify(join(cwd, 'x'))} 2>/dev/null && echo writable || echo read-only`], { encoding: 'utf8' });
  t.same(probe.stdout.trim().split('\n'), [String(process.getuid?.() === 0 ? UID : process.getuid?.()), 'read-only'], 'runs non-root; the application directory is not writable');

  const version = spawnSync(asUser[0] ?? entry[0], [...asUser.slice(1), ...(asUser.length ? entry : entry.slice(1)), '--version'], { cwd, env: vars, encoding: 'utf8' });
  t.equal(version.status, 0, 'ENTRYPOINT --version starts', { stderr: version.stderr });
  t.equal(version.stdout.trim(), pkg.version, 'prints the package version');

  // serve, with every path on a "volume": nothing may be written anywhere else.
  const { publicKey } = generateKeyPairSync('ed25519');
  writeFileSync(join(image, 'etc/agentwrit-sidecar/broker.pem'), publicKey.export({ format: 'pem', type: 'spki' }));
  writeFileSync(join(image, 'etc/agentwrit-sidecar/policies/p.yaml'), stringify({ version: 'v1', routes: [{ id: 'r', host: 'api.example.test', path: '/x', scopes: ['read:x:*'] }] }));
  const adminPort = await freePort();
  const config = join(image, 'etc/agentwrit-sidecar/config.yaml');
  writeFileSync(
    config,
    stringify({
      proxy: { listen: `127.0.0.1:${await freePort()}` },
      admin: { listen: `127.0.0.1:${adminPort}` },
      broker: { verify: 'offline', publicKeyFile: join(image, 'etc/agentwrit-sidecar/broker.pem') },
      policies: [join(image, 'etc/agentwrit-sidecar/policies')],
      audit: { path: join(image, 'var/lib/agentwrit-sidecar/audit/audit.jsonl') },
      tls: { caCertOut: join(image, 'var/run/agentwrit/ca/ca.crt'), bundleOut: join(image, 'var/run/agentwrit/ca/ca-bundle.crt') },
    }),
  );
  const before = new Set(listFiles(image));
  const serveArgs = [...entry, 'serve', '--config', config];
  const child: ChildProcess = spawn(asUser[0] ?? serveArgs[0], [...asUser.slice(1), ...(asUser.length ? serveArgs : serveArgs.slice(1))], { cwd, env: vars, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (c: Buffer) => {
    output += c.toString();
  });
  child.stderr?.on('data', (c: Buffer) => {
    output += c.toString();
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let ready = false;
  for (let i = 0; i < 150 && !ready && child.exitCode === null; i++) {
    ready = await fetch(`http://127.0.0.1:${adminPort}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (!ready) await new Promise((r) => setTimeout(r, 100));
  }
  t.ok(ready, 'serve becomes ready as UID 10001', { output });
  child.kill('SIGTERM');
  t.equal(await exited, 0, 'SIGTERM: exit 0');
  const written = listFiles(image).filter((f) => !before.has(f));
  t.same(
    written.filter((f) => !/^(tmp|var\/run\/agentwrit\/ca|var\/lib\/agentwrit-sidecar\/audit)\//.test(f)),
    [],
    'nothing written outside the volumes',
  );
  t.ok(written.includes('var/lib/agentwrit-sidecar/audit/audit.jsonl'), 'audit log on its volume');
});
