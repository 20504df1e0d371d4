/**
 * The embedded default as a person runs it: `demo` end to end, and `dev` started, used with the
 * walkthrough's own commands (token + curl through http_proxy), refused on a taken port, and stopped
 * with SIGINT.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { tempDir } from '../helpers/tmp.js';

const run = promisify(execFile);
const MAIN = resolve(import.meta.dirname, '../../dist/cli/main.js');

function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    });
  });
}

/** `dev` on free ports with `extra` arguments, once it prints its walkthrough; its output so far, and its exit. */
async function startDev(extra: string[], env: NodeJS.ProcessEnv = process.env) {
  const [b, p, a, u] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const child = spawn(process.execPath, [MAIN, 'dev', '--quiet', ...extra, '--broker-port', String(b), '--proxy-port', String(p), '--admin-port', String(a), '--upstream-port', String(u)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  const out: string[] = [];
  child.stdout.on('data', (d: Buffer) => out.push(d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  const until = Date.now() + 20_000;
  while (!out.join('').includes('Press Ctrl-C') && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  return { child, output: () => out.join(''), exited };
}

t.test('npm run demo: every step behaves as stated and it exits 0', async (t) => {
  const tmp = tempDir('aws-demo-');
  const { stdout } = await run(process.execPath, [MAIN, 'demo'], { timeout: 60_000, env: { ...process.env, TMPDIR: tmp } });
  t.same(readdirSync(tmp), [], 'its temporary directory is gone');
  const steps = stdout.split('\n').filter((l) => /^(PASS|FAIL) /.test(l));
  t.equal(steps.length, 11, 'eleven steps');
  t.same(
    steps.filter((l) => l.startsWith('FAIL')),
    [],
  );
  t.match(stdout, /all steps behaved as stated/);
  t.match(stdout, /PASS +3 +200 .*injected key/);
  t.match(stdout, /PASS +4 +403 .*scope_violation/);
  t.match(stdout, /PASS 10 +401 .*revocation/);
});

t.test('dev: the walkthrough commands work, Ctrl-C stops everything and removes its files', async (t) => {
  const [b, p, a, u] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const tmp = tempDir('aws-dev-');
  const devEnv = { ...process.env, TMPDIR: tmp };
  const child = spawn(process.execPath, [MAIN, 'dev', '--quiet', '--broker-port', String(b), '--proxy-port', String(p), '--admin-port', String(a), '--upstream-port', String(u)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: devEnv,
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  const until = Date.now() + 20_000;
  while (!out.includes('Press Ctrl-C') && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  t.match(out, /development/);
  const files = /files +(\S+) +\(removed on stop; --dir DIR keeps them\)/.exec(out)?.[1] ?? '';
  t.ok(files.startsWith(join(tmp, 'agentwrit-dev-')), 'a temporary directory of its own');
  t.ok(existsSync(join(files, 'sidecar-audit.jsonl')), 'the audit log is there while it runs');
  t.match(out, new RegExp(`http_proxy=http://agent:\\$TOKEN@127\\.0\\.0\\.1:${p} curl`));
  // As the walkthrough prints it: npx runs the package's own bin, which needs its executable bit.
  const { stdout: token } = await run('npx', ['agentwrit-sidecar', 'token', '--broker', `http://127.0.0.1:${b}`, '--admin-secret', 'dev-admin-secret', '--scope', 'read:billing:customer-12345'], {
    cwd: resolve(import.meta.dirname, '../..'),
  });
  const env = { ...process.env, http_proxy: `http://agent:${token.trim()}@127.0.0.1:${p}` };
  const { stdout: answer } = await run('curl', ['-s', 'http://api.example.com/customers/12345/billing'], { env });
  const body = JSON.parse(answer) as { received_credential: string; agent_token_seen: boolean };
  t.equal(body.received_credential, 'Bearer demo-billing-key-not-a-real-secret');
  t.equal(body.agent_token_seen, false);
  const { stdout: refused } = await run('curl', ['-s', 'http://api.example.com/customers/67890/billing'], { env });
  t.equal((JSON.parse(refused) as { error_code: string }).error_code, 'scope_violation');

  // A second dev on the same ports: a clear message, not a stack trace.
  const second = await run(process.execPath, [MAIN, 'dev', '--quiet', '--broker-port', String(b), '--proxy-port', String(p), '--admin-port', String(a), '--upstream-port', String(u)], {
    env: devEnv,
  }).catch((e: { code: number; stderr: string }) => e);
  t.equal((second as { code: number }).code, 1);
  t.match((second as { stderr: string }).stderr, /already in use/);
  t.same(readdirSync(tmp), [files.slice(tmp.length + 1)], 'the refused start left no directory');

  child.kill('SIGINT');
  t.equal(await exited, 0);
  t.same(readdirSync(tmp), [], 'stopping removed the temporary directory');
});

t.test('dev --dir DIR: the files stay after stop', async (t) => {
  const dir = join(tempDir('aws-devdir-'), 'keep');
  const { child, output, exited } = await startDev(['--dir', dir]);
  t.match(output(), new RegExp(`files +${dir}\n`), 'no removal notice');
  child.kill('SIGINT');
  t.equal(await exited, 0);
  for (const f of ['sidecar-audit.jsonl', 'broker-public.pem', 'broker-signing.key']) t.ok(existsSync(join(dir, f)), `${f} kept`);
  const verified = await run(process.execPath, [MAIN, 'audit', 'verify', join(dir, 'sidecar-audit.jsonl')]);
  t.match(verified.stdout, /^ok: [1-9]\d* records, chain intact/);
});

t.test('token: usage errors are explained', async (t) => {
  const r = await run(process.execPath, [MAIN, 'token', '--broker', 'http://127.0.0.1:1']).catch((e: { code: number; stderr: string }) => e);
  t.equal((r as { code: number }).code, 2);
  t.match((r as { stderr: string }).stderr, /admin secret is required|--scope/);
});

t.test('a mistyped option is refused with usage, never ignored', async (t) => {
  for (const [args, pattern] of [
    [['serve', '--confg', 'x.yaml'], /unknown option --confg/],
    [['dev', '--proxy-prot', '1'], /unknown option --proxy-prot/],
    [['token', '--broker'], /--broker needs a value/],
    [['broker', '--stat', 'state.json'], /unknown option --stat/],
    [['policy', 'explain', '--config'], /--config needs a value/],
    [['audit', 'verify', '--jsn', 'audit.jsonl'], /unknown option --jsn/],
    [['ca', 'init', '--out'], /--out needs a value/],
    [['demo', '--foo'], /unknown option --foo/],
    [['demo', 'extra'], /unexpected argument "extra"/],
    [['token', '--admin-secret', 's', '--scope', 'a:b:c', '--ttl', 'abc'], /--ttl must be a whole number of seconds above 0, got "abc"/],
    [['token', '--admin-secret', 's', '--scope', 'a:b:c', '--ttl', '0'], /--ttl must be a whole number/],
    [['broker', '--admin-secret', 's', '--log-level', 'bogus'], /--log-level must be one of debug, info, warn, error, silent, got "bogus"/],
    [['dev', '--proxy-port', 'abc', '--upstream-port', '0', '--broker-port', '0'], /--proxy-port must be a port number, got "abc"/],
    [[], /^Usage: agentwrit-sidecar <command>/],
  ] as const) {
    const r = (await run(process.execPath, [MAIN, ...args]).catch((e: unknown) => e)) as { code: number; stderr: string };
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr, pattern, args.join(' '));
  }
});

t.test('dev -h and demo -h print their help', async (t) => {
  for (const cmd of ['dev', 'demo']) {
    const { stdout } = await run(process.execPath, [MAIN, cmd, '-h']);
    t.match(stdout, new RegExp(`^Usage: agentwrit-sidecar ${cmd}`), cmd);
  }
});

t.test('dev closed by SIGHUP (its terminal went away) stops cleanly and removes its files', async (t) => {
  const tmp = tempDir('aws-devhup-');
  const { child, exited } = await startDev([], { ...process.env, TMPDIR: tmp });
  t.equal(readdirSync(tmp).length, 1, 'its directory, holding the broker key');
  child.kill('SIGHUP');
  t.equal(await exited, 0);
  t.same(readdirSync(tmp), [], 'removed');
});

t.test('demo whose output is closed early (| head) still runs to its end and removes its files', async (t) => {
  const tmp = tempDir('aws-demopipe-');
  const child = spawn(process.execPath, [MAIN, 'demo'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TMPDIR: tmp } });
  let err = '';
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
  });
  // Read the first line, then close the pipe, as `head -1` does.
  await new Promise<void>((r) => child.stdout.once('data', () => r()));
  child.stdout.destroy();
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  t.equal(code, 0, err);
  t.notMatch(err, /EPIPE|Error/, 'no stack trace');
  t.same(readdirSync(tmp), [], 'its temporary directory is gone');
});
