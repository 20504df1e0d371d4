/**
 * The built binary as a user runs it: `agentwrit-sidecar serve --config FILE` in a child process.
 * Covers the secret-leak scan over everything the process wrote, and SIGTERM draining.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createReadStream, existsSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import t from 'tap';
import { Pool, ProxyAgent, request } from 'undici';
import { stringify } from 'yaml';
import { verifyAuditStream } from '../../src/audit/verify.js';
import { BILLING_POLICY } from '../helpers/sidecar.js';
import { makeKey, signToken } from '../helpers/tokens.js';
import { startUpstream } from '../helpers/upstream.js';
import { startValidateBroker } from '../helpers/validate-broker.js';
import { tempDir } from '../helpers/tmp.js';

const MAIN = resolve(import.meta.dirname, '../../dist/cli/main.js');
const SECRET = 'sk-live-LEAKCHECK-7f3a9c';

const key = await makeKey();
const upstream = await startUpstream();
const vb = await startValidateBroker();
t.teardown(async () => {
  await upstream.close();
  await vb.close();
});

interface Proc {
  child: ChildProcess;
  out: string[];
  proxyUrl: string;
  adminUrl: string;
  exited: Promise<number | null>;
}

/** `whileStarting` runs right after the spawn, before the sidecar listens. */
async function startProcess(dir: string, whileStarting?: (child: ChildProcess, out: string[]) => void): Promise<Proc> {
  writeFileSync(join(dir, 'key.pem'), key.publicPem);
  writeFileSync(join(dir, 'policies.yaml'), stringify(BILLING_POLICY));
  writeFileSync(
    join(dir, 'sidecar.yaml'),
    stringify({
      proxy: { listen: '127.0.0.1:0' },
      admin: { listen: '127.0.0.1:0' },
      broker: { url: vb.url, verify: 'hybrid', publicKeyFile: './key.pem', revalidateAfter: '2s' },
      policies: ['./policies.yaml'],
      audit: { path: './audit.jsonl' },
      upstream: { connectTo: { 'api.example.com:80': `127.0.0.1:${upstream.port}` } },
      log: { level: 'debug' },
      shutdown: { grace: '5s' },
    }),
  );
  const child = spawn(process.execPath, [MAIN, 'serve', '--config', join(dir, 'sidecar.yaml')], {
    env: { ...process.env, BILLING_API_KEY: SECRET },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out: string[] = [];
  child.stdout?.on('data', (d: Buffer) => out.push(d.toString()));
  child.stderr?.on('data', (d: Buffer) => out.push(d.toString()));
  whileStarting?.(child, out);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const listening = await new Promise<{ proxy: string; admin: string }>((resolveP, reject) => {
    const timer = setTimeout(() => reject(new Error(`sidecar did not start:\n${out.join('')}`)), 15000);
    const check = () => {
      for (const line of out.join('').split('\n')) {
        if (line.includes('"sidecar listening"')) {
          clearTimeout(timer);
          const j = JSON.parse(line) as { proxy: string; admin: string };
          return resolveP(j);
        }
      }
    };
    child.stdout?.on('data', check);
    child.once('exit', () => reject(new Error(`sidecar exited:\n${out.join('')}`)));
  });
  return { child, out, proxyUrl: listening.proxy, adminUrl: listening.admin, exited };
}

t.test('no token or secret appears in logs, audit, metrics or error bodies', async (t) => {
  const dir = tempDir('aws-leak-');
  const p = await startProcess(dir);
  const tok = await signToken(key, { scope: ['read:billing:customer-12345'] });
  const other = await makeKey();
  const forged = await signToken(other, { scope: ['read:billing:customer-12345'] });
  const bodies: string[] = [];
  const pool = new Pool(p.proxyUrl);
  const send = async (token: string | undefined, path: string, extra: Record<string, string> = {}) => {
    const headers: Record<string, string> = { host: 'api.example.com', ...extra };
    if (token) headers['proxy-authorization'] = `Bearer ${token}`;
    const res = await pool.request({ method: 'GET', path: `http://api.example.com${path}`, headers });
    bodies.push(await res.body.text());
    return res.statusCode;
  };
  t.equal(await send(tok, '/customers/12345/billing', { authorization: `Bearer ${tok}`, cookie: `s=${tok}` }), 200);
  t.equal(await send(tok, '/customers/67890/billing'), 403);
  t.equal(await send(forged, '/customers/12345/billing'), 401);
  t.equal(await send(undefined, '/customers/12345/billing'), 407);
  t.equal(await send(tok, '/nowhere'), 403);
  vb.mode = 'invalid';
  await new Promise((r) => setTimeout(r, 2100));
  t.equal(await send(tok, '/customers/12345/billing'), 401);
  vb.mode = 'valid';
  const metrics = await (await request(`${p.adminUrl}/metrics`)).body.text();
  await pool.close();
  p.child.kill('SIGTERM');
  t.equal(await p.exited, 0);
  const audit = readFileSync(join(dir, 'audit.jsonl'), 'utf8');
  // bodies[0] is the upstream's echo of what it received: it legitimately holds the injected secret.
  const everything = { logs: p.out.join(''), audit, metrics, errorBodies: bodies.slice(1).join('\n') };
  for (const [where, text] of Object.entries(everything)) {
    for (const [what, value] of [
      ['agent token', tok],
      ['forged token', forged],
      ['token signature', tok.split('.')[2]],
      ['upstream secret', SECRET],
    ]) {
      t.notOk(text.includes(value), `${what} not in ${where}`);
    }
  }
  t.ok(p.out.join('').includes('"request"'), 'one log line per request was written');
  t.ok(audit.split('\n').filter(Boolean).length >= 7, 'audit holds config_applied + every decision');
  const stopped = p.out
    .join('')
    .split('\n')
    .find((l) => l.includes('"sidecar stopped"'));
  const report = await verifyAuditStream(createReadStream(join(dir, 'audit.jsonl')));
  t.equal(report.ok, true);
  t.equal((JSON.parse(stopped ?? '{}') as { audit_head?: string }).audit_head, report.headHash, 'the stop line carries the audit head hash');
});

t.test('SIGTERM drains in-flight requests, flushes the audit log and exits 0', async (t) => {
  const dir = tempDir('aws-drain-');
  upstream.handlers.set('/customers/777', (_r, res) => {
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('slow answer');
    }, 700);
  });
  const p = await startProcess(dir);
  const tok = await signToken(key, { scope: ['read:billing:customer-777'] });
  const agent = new ProxyAgent({ uri: p.proxyUrl, token: `Bearer ${tok}`, proxyTunnel: false });
  const inflight = Array.from({ length: 3 }, () =>
    request('http://api.example.com/customers/777/billing', { dispatcher: agent }).then(async (r) => ({ status: r.statusCode, body: await r.body.text() })),
  );
  await new Promise((r) => setTimeout(r, 250));
  p.child.kill('SIGTERM');
  const results = await Promise.all(inflight);
  t.same(
    results.map((r) => r.status),
    [200, 200, 200],
  );
  t.ok(results.every((r) => r.body === 'slow answer'));
  t.equal(await p.exited, 0);
  const records = readFileSync(join(dir, 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; upstream_status?: number });
  t.equal(records.filter((r) => r.type === 'request' && r.upstream_status === 200).length, 3, 'all drained requests audited');
  const lines = p.out.join('').trim().split('\n');
  t.match(JSON.parse(lines.at(-1) ?? '{}'), { msg: 'sidecar stopped' }, 'the stopped line is the last, after the drained requests\' lines');
  t.equal(lines.filter((l) => l.includes('"msg":"request"')).length, 3);
  await t.rejects(request(p.proxyUrl), 'listener closed after exit');
});

t.test('SIGTERM does not wait for an admin connection left half-open', async (t) => {
  const dir = tempDir('aws-halfopen-');
  const p = await startProcess(dir);
  const u = new URL(p.adminUrl);
  const scrape = connect(Number(u.port), u.hostname);
  scrape.on('error', () => {});
  t.teardown(() => scrape.destroy());
  // A request head never finished, from a client that stays.
  await new Promise<void>((r) => scrape.once('connect', () => r()));
  scrape.write('GET /metrics HTTP/1.1\r\nHost: x\r\n');
  await new Promise((r) => setTimeout(r, 100));
  const sent = Date.now();
  p.child.kill('SIGTERM');
  const code = await Promise.race([p.exited, new Promise((r) => setTimeout(() => r('still running'), 8000))]);
  t.equal(code, 0, `exited with 0 (${Date.now() - sent} ms after SIGTERM)`);
  t.match(p.out.join(''), /"sidecar stopped"/);
  if (code !== 0) p.child.kill('SIGKILL');
});

t.test('one writer per audit log: a second sidecar on it is refused; after a crash the next one takes over', async (t) => {
  const dir = tempDir('aws-lock-');
  const first = await startProcess(dir);
  t.teardown(() => {
    if (first.child.exitCode === null) first.child.kill('SIGKILL');
  });
  await t.rejects(startProcess(dir), new RegExp(`audit log .*audit\\.jsonl is in use by pid ${first.child.pid} on `), 'refused, naming the live holder');
  const tok = await signToken(key, { scope: ['read:billing:customer-12345'] });
  const call = async (proxyUrl: string) => {
    const agent = new ProxyAgent({ uri: proxyUrl, token: `Bearer ${tok}`, proxyTunnel: false });
    const r = await request('http://api.example.com/customers/12345/billing', { dispatcher: agent });
    await r.body.dump();
    await agent.close();
    return r.statusCode;
  };
  t.equal(await call(first.proxyUrl), 200, 'the first one serves on, untouched');
  first.child.kill('SIGKILL');
  await first.exited;
  const started = Date.now();
  const next = await startProcess(dir);
  t.ok(Date.now() - started < 5000, 'the lock of a process that is gone is taken over without waiting for it to go stale');
  t.equal(await call(next.proxyUrl), 200);
  next.child.kill('SIGTERM');
  t.equal(await next.exited, 0);
  const report = await verifyAuditStream(createReadStream(join(dir, 'audit.jsonl')));
  t.ok(report.ok, 'one chain across both writers');
  t.notOk(existsSync(join(dir, '.audit.jsonl.lock')), 'released at exit');
});

t.test('SIGHUP after an edit of the configuration file says which sections wait for a restart', async (t) => {
  const dir = tempDir('aws-hup-');
  const p = await startProcess(dir);
  t.teardown(() => {
    if (p.child.exitCode === null) p.child.kill('SIGKILL');
  });
  const file = join(dir, 'sidecar.yaml');
  writeFileSync(file, readFileSync(file, 'utf8').replace('grace: 5s', 'grace: 9s'));
  p.child.kill('SIGHUP');
  let line: string | undefined;
  for (let i = 0; i < 100 && !line; i++) {
    await new Promise((r) => setTimeout(r, 50));
    line = p.out
      .join('')
      .split('\n')
      .find((l) => l.includes('take effect at the next restart'));
  }
  t.match(JSON.parse(line ?? '{}'), { level: 'warn', reason: 'SIGHUP', sections: ['shutdown'] });
  const metrics = await (await request(`${p.adminUrl}/metrics`)).body.text();
  t.match(metrics, /^agentwrit_sidecar_config_restart_pending 1$/m);
  p.child.kill('SIGTERM');
  t.equal(await p.exited, 0, 'still running until asked to stop');
});

t.test('SIGHUP while the sidecar starts does not end it; the reload it asks for runs once started', async (t) => {
  const dir = tempDir('aws-early-hup-');
  // The lock of a writer on another host: the start waits on it (up to 10 s, until it goes stale),
  // and is signalled meanwhile; then the lock goes away and the start goes on. Nothing here depends
  // on how fast the process starts.
  const lock = join(dir, '.audit.jsonl.lock');
  writeFileSync(lock, `${JSON.stringify({ pid: 1, host: 'another-host.example', since: new Date().toISOString() })}\n`);
  const p = await startProcess(dir, (child, out) => {
    const poll = setInterval(() => {
      if (!out.join('').includes('audit log is locked by another writer')) return;
      clearInterval(poll);
      // The configuration file changed after it was read: the reload asked for must say so.
      const config = join(dir, 'sidecar.yaml');
      writeFileSync(config, readFileSync(config, 'utf8').replace('grace: 5s', 'grace: 6s'));
      child.kill('SIGHUP');
      setTimeout(() => unlinkSync(lock), 100);
    }, 20);
    child.once('exit', () => clearInterval(poll));
  });
  t.teardown(() => {
    if (p.child.exitCode === null) p.child.kill('SIGKILL');
  });
  const warned = () => p.out.join('').includes('sidecar configuration file changed; these sections take effect at the next restart');
  const until = Date.now() + 5000;
  while (!warned() && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  t.ok(warned(), 'the reload asked for during the start ran once started');
  t.match(p.out.join(''), /"reason":"SIGHUP during start"/);
  p.child.kill('SIGTERM');
  t.equal(await p.exited, 0);
});
