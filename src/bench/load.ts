/** Pieces shared by the benchmarks: ports, readiness, the open-loop load generator. */
import { type ChildProcess, type SpawnOptions, spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { request } from 'undici';

export const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];

/**
 * Open loop: request i starts at start + i/rate whatever the earlier ones are doing. The first
 * `warmupSeconds` run at the same rate and are not counted: the measured window starts with warm
 * connections, code and heap, for the direct and the proxied target alike. The generator keeps
 * nothing per request but one number, so its own garbage collection stays out of the figures.
 */
export async function fixedRate(
  send: () => Promise<number>,
  rate: number,
  seconds: number,
  warmupSeconds = 2,
): Promise<{ p50: number; p99: number; errors: number }> {
  const total = Math.round(rate * (warmupSeconds + seconds));
  const skip = Math.round(rate * warmupSeconds);
  const lat = new Float64Array(total - skip);
  let measured = 0;
  let errors = 0;
  let outstanding = 0;
  let allSent = false;
  let finished: () => void = () => {};
  const done = new Promise<void>((r) => {
    finished = r;
  });
  const settle = () => {
    outstanding--;
    if (allSent && outstanding === 0) finished();
  };
  const start = performance.now();
  for (let i = 0; i < total; i++) {
    const wait = start + (i * 1000) / rate - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const t0 = performance.now();
    const counted = i >= skip;
    outstanding++;
    send().then(
      (status) => {
        if (counted) {
          if (status !== 200) errors++;
          lat[measured++] = performance.now() - t0;
        }
        settle();
      },
      () => {
        if (counted) errors++;
        settle();
      },
    );
  }
  allSent = true;
  if (outstanding > 0) await done;
  const sorted = Array.from(lat.subarray(0, measured)).sort((a, b) => a - b);
  return { p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), errors };
}

/** A port free right now on loopback (the sidecar binds it a moment later). */
export function freePort(): Promise<number> {
  return new Promise((resolveP, reject) => {
    const srv = createNetServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolveP(port));
    });
  });
}

export async function waitReady(adminPort: number): Promise<void> {
  const until = Date.now() + 15_000;
  while (Date.now() < until) {
    const r = await request(`http://127.0.0.1:${adminPort}/readyz`).catch(() => undefined);
    if (r) {
      await r.body.dump();
      if (r.statusCode === 200) return;
    }
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error('sidecar did not become ready');
}

export function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

/** The command line run on one CPU (taskset), or as it is where taskset is missing. */
export function pinned(cpu: number, args: string[]): [string, string[]] {
  return has('taskset') ? ['taskset', ['-c', String(cpu), ...args]] : [args[0], args.slice(1)];
}

/**
 * A pipe for a sidecar's stdout, read and dropped by its own process on CPU 0, as a container
 * runtime reads a container's log: the log costs the sidecar what it costs in a pod, and neither
 * the load generator nor this process spends a turn on it. `fd` is the write end, for spawn.
 */
export async function logPipe(dir: string): Promise<{ fd: number; close(): void }> {
  const fifo = join(dir, `log-${process.pid}-${Math.random().toString(36).slice(2)}`);
  if (spawnSync('mkfifo', [fifo]).status !== 0) throw new Error('mkfifo failed');
  const [cmd, args] = pinned(0, ['sh', '-c', 'exec cat > /dev/null < "$0"', fifo]);
  const reader = spawn(cmd, args, { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 50));
  const fd = openSync(fifo, 'w');
  return {
    fd,
    close: () => {
      closeSync(fd);
      reader.kill();
    },
  };
}

/**
 * A bench part's temporary directory and child processes. stop() ends the children, waits for
 * them (a sidecar finishes its audit log first) and removes the directory, audit log included;
 * if the bench fails before that, the same happens, without the wait, when this process exits.
 */
export interface Scratch {
  dir: string;
  spawn(cmd: string, args: string[], opts: SpawnOptions): ChildProcess;
  stop(): Promise<void>;
}

export function scratch(prefix: string): Scratch {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const children: ChildProcess[] = [];
  const running = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;
  const atExit = () => {
    for (const c of children) if (running(c)) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  process.on('exit', atExit);
  return {
    dir,
    spawn(cmd, args, opts) {
      const child = spawn(cmd, args, opts);
      children.push(child);
      return child;
    },
    async stop() {
      await Promise.all(
        children.filter(running).map(
          (c) =>
            new Promise<void>((done) => {
              c.once('exit', () => done());
              c.kill('SIGTERM');
            }),
        ),
      );
      process.off('exit', atExit);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The first line of a child's stdout that `pred` accepts; fails if it exits or takes 15 s. */
export async function waitLine(child: ChildProcess, pred: (line: string) => boolean, what: string): Promise<string> {
  return new Promise((resolveP, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`${what} did not start: ${buf}`)), 15_000);
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      for (const l of buf.split('\n')) {
        if (pred(l)) {
          clearTimeout(t);
          resolveP(l);
          return;
        }
      }
    });
    child.once('exit', () => reject(new Error(`${what} exited: ${buf}`)));
  });
}
