/**
 * Shared set-up for the broker tests: a broker on 127.0.0.1 port 0, the broker command in this
 * process or in one of its own, and a raw HTTP helper.
 */
import { spawn } from 'node:child_process';
import type { IncomingHttpHeaders } from 'node:http';
import { PassThrough } from 'node:stream';
import { request } from 'undici';
import { type BrokerOptions, type RunningBroker, startBroker } from '../../src/broker/index.js';
import { type BrokerCommandIo, runBrokerCommand } from '../../src/cli/broker.js';

export const ADMIN_SECRET = 'test-admin-secret-0123456789';

export interface Teardown {
  teardown(fn: () => unknown): void;
}

export async function withBroker(t: Teardown, opts: Partial<BrokerOptions> = {}): Promise<RunningBroker> {
  const b = await startBroker({ listen: '127.0.0.1:0', adminSecret: ADMIN_SECRET, ...opts });
  t.teardown(() => b.close());
  return b;
}

export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: test responses are inspected field by field
  json: any;
}

export async function http(
  base: string,
  method: string,
  path: string,
  opts: { json?: unknown; body?: string | Buffer; headers?: Record<string, string>; token?: string } = {},
): Promise<RawResponse> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  let body = opts.body;
  if (opts.json !== undefined) {
    body = JSON.stringify(opts.json);
    headers['content-type'] ??= 'application/json';
  }
  const res = await request(`${base}${path}`, { method: method as 'GET', headers, body });
  const text = await res.body.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.statusCode, headers: res.headers, text, json };
}

/** The decoded payload of a JWT (no verification). */
// biome-ignore lint/suspicious/noExplicitAny: claims are inspected field by field
export function payload(token: string): any {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8'));
}

export async function isValid(base: string, token: string): Promise<boolean> {
  const r = await http(base, 'POST', '/v1/token/validate', { json: { token } });
  if (r.status !== 200) throw new Error(`validate answered ${r.status}`);
  return r.json.valid === true;
}

/** A stream for a command's output, and what was written to it so far. */
export function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let buf = '';
  stream.on('data', (c: Buffer) => {
    buf += c.toString('utf8');
  });
  return { stream, text: () => buf };
}

/**
 * `agentwrit-sidecar broker ARGS` run in this process until `stop()`, which resolves with its exit
 * code. Rejects when the command ends before the broker is ready.
 */
export async function runBrokerInProcess(
  argv: string[],
  io: Omit<BrokerCommandIo, 'stop' | 'onReady'>,
): Promise<{ broker: RunningBroker; stop: () => Promise<number> }> {
  let stop!: () => void;
  const stopped = new Promise<void>((r) => {
    stop = r;
  });
  let ready!: (b: RunningBroker) => void;
  const readyP = new Promise<RunningBroker>((r) => {
    ready = r;
  });
  const exit = runBrokerCommand(argv, { ...io, stop: stopped, onReady: ready });
  const broker = await Promise.race([readyP, exit.then((code) => Promise.reject(new Error(`broker command ended with ${code} before it was ready`)))]);
  return {
    broker,
    stop: () => {
      stop();
      return exit;
    },
  };
}

/**
 * The broker CLI in a process of its own (so that it can be signalled or killed outright), with
 * AA_ADMIN_SECRET set. `signal` sends a signal and resolves with the exit code.
 */
export async function spawnBrokerProcess(
  t: Teardown,
  args: string[],
  adminSecret = ADMIN_SECRET,
): Promise<{
  url: string;
  output: () => string;
  signal: (sig: NodeJS.Signals) => Promise<number | null>;
  /** Stops reading the broker's stdout: its next writes fail with EPIPE. */
  closeStdout: () => void;
  exitCode: () => number | null;
}> {
  const loader = process.execArgv.filter((a) => a.includes('typescript'));
  const child = spawn(process.execPath, [...loader, 'src/cli/main.ts', 'broker', '--listen', '127.0.0.1:0', ...args], {
    env: { ...process.env, AA_ADMIN_SECRET: adminSecret },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let out = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /API on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`broker exited early with ${code}`)));
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    url,
    output: () => out,
    signal: (sig) => {
      child.kill(sig);
      return exited;
    },
    closeStdout: () => child.stdout.destroy(),
    exitCode: () => child.exitCode,
  };
}
