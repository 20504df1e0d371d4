/**
 * `npm run bench`: direct-to-upstream versus through the sidecar (hybrid verification with cache,
 * static credential injection, audit on, the default log level: one log line per request), in one
 * run on loopback. Not a test: it prints figures.
 *
 * Layout on a 2-core machine: the sidecar is pinned to CPU 1 (taskset), the load generator, the
 * upstream and the broker (a process of its own) to CPU 0. Saturation uses wrk (apt-get install wrk); the fixed-rate
 * latency runs are an open-loop generator in this process (1,000 req/s over keep-alive). They come
 * first, direct then sidecar: each target gets 5 s at that rate that are not counted, then two
 * measured windows back to back (the second shows where the first was still warming up). Before
 * all of that, three requests in a row time a freshly started sidecar.
 */
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Agent, Pool, request } from 'undici';
import { stringify } from 'yaml';
import { issueAgentToken } from '../broker/client.js';
import { formatHttpsBench, runHttpsBench } from './https.js';
import { fixedRate, freePort, has, logPipe, pinned, scratch, waitLine, waitReady } from './load.js';

const here = new URL('.', import.meta.url).pathname;
const MAIN = resolve(here, '../cli/main.js');
const DURATION = Number(process.env.BENCH_SECONDS ?? 10);
/** Seconds at 1,000 req/s before the first of the two latency windows: warm connections and code. */
const LATENCY_WARMUP = 5;


/** User + system CPU time of a process so far, in microseconds (from /proc; clock ticks are 10 ms). */
function cpuMicros(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

const execFileAsync = promisify(execFile);

/** Asynchronous on purpose: the RSS sampler keeps running in this process meanwhile. */
async function wrk(url: string, lua: string, dir: string): Promise<number> {
  const script = join(dir, `wrk-${Math.random().toString(36).slice(2)}.lua`);
  writeFileSync(script, lua);
  const [cmd, args] = pinned(0, ['wrk', '-t1', '-c64', `-d${DURATION}s`, '-s', script, url]);
  const { stdout: out } = await execFileAsync(cmd, args, { encoding: 'utf8' });
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  if (non2xx) throw new Error(`wrk saw ${non2xx[1]} error responses:\n${out}`);
  return rps ? Number(rps[1]) : 0;
}


async function main(): Promise<void> {
  if (!has('wrk')) {
    process.stderr.write('npm run bench needs wrk for the saturation runs: apt-get install wrk\n');
    process.exit(2);
  }
  // This process (the latency generator) belongs on CPU 0 too, away from
  // the sidecar's core; threads started later inherit the main thread's affinity.
  if (has('taskset')) spawnSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)], { stdio: 'ignore' });
  const work = scratch('agentwrit-bench-');
  const dir = work.dir;
  const [ucmd, uargs] = pinned(0, [process.execPath, join(here, 'upstream-server.js')]);
  const upstream = work.spawn(ucmd, uargs, { stdio: ['ignore', 'pipe', 'inherit'] });
  const upPort = Number((await waitLine(upstream, (l) => /^\d+$/.test(l.trim()), 'upstream')).trim());

  // The broker in a process of its own, as a real one is: its revalidation answers (every 1.5 s,
  // refreshed ahead of revalidateAfter) are not work of the latency generator's process.
  const [bcmd0, bargs0] = pinned(0, [process.execPath, MAIN, 'broker', '--listen', '127.0.0.1:0', '--public-key-out', join(dir, 'broker.pem'), '--log-level', 'warn']);
  const broker = work.spawn(bcmd0, bargs0, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, AA_ADMIN_SECRET: 'bench-admin-secret' } });
  const brokerUrl = /AgentWrit v1 API on (\S+)/.exec(await waitLine(broker, (l) => l.includes('AgentWrit v1 API on'), 'broker'))?.[1] as string;
  const token = await issueAgentToken(brokerUrl, 'bench-admin-secret', ['read:billing:customer-12345']);

  writeFileSync(
    join(dir, 'policy.yaml'),
    stringify({
      version: 'v1',
      connectors: [{ name: 'billing-api', type: 'static', secret: { env: 'BILLING_API_KEY' }, format: 'Bearer ${secret}' }],
      routes: [{ id: 'billing-read', host: 'api.example.com', methods: ['GET'], path: '/customers/{customer}/billing', scopes: ['read:billing:customer-{customer}'], connector: 'billing-api' }],
    }),
  );
  const proxyPort = await freePort();
  const adminPort = await freePort();
  writeFileSync(
    join(dir, 'sidecar.yaml'),
    stringify({
      proxy: { listen: `127.0.0.1:${proxyPort}` },
      admin: { listen: `127.0.0.1:${adminPort}` },
      broker: { url: brokerUrl, verify: 'hybrid', publicKeyFile: join(dir, 'broker.pem'), revalidateAfter: '2s' },
      policies: [join(dir, 'policy.yaml')],
      audit: { path: join(dir, 'audit.jsonl') },
      upstream: { connectTo: { 'api.example.com:80': `127.0.0.1:${upPort}` } },
    }),
  );
  const nodeArgs = (process.env.BENCH_SIDECAR_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const [scmd, sargs] = pinned(1, [process.env.BENCH_SIDECAR_NODE ?? process.execPath, ...nodeArgs, MAIN, 'serve', '--config', join(dir, 'sidecar.yaml')]);
  // Its log (one line per request at the default level) goes down a pipe read by another process.
  const log = await logPipe(dir);
  const sidecar = work.spawn(scmd, sargs, { stdio: ['ignore', log.fd, 'inherit'], env: { ...process.env, BILLING_API_KEY: 'bench-upstream-key' } });
  await waitReady(adminPort);
  const idleRss = rssKb(sidecar.pid as number);

  const path = '/customers/12345/billing';
  const directLua = `wrk.headers["Authorization"] = "Bearer bench-upstream-key"\n`;
  const proxyLua = `wrk.path = "http://api.example.com${path}"\nwrk.headers["Host"] = "api.example.com"\nwrk.headers["Proxy-Authorization"] = "Bearer ${token}"\n`;

  const direct = new Agent({ connections: 32 });
  const viaProxy = new Pool(`http://127.0.0.1:${proxyPort}`, { connections: 32 });
  const sendDirect = async () => {
    const r = await request(`http://127.0.0.1:${upPort}${path}`, { dispatcher: direct, headers: { authorization: 'Bearer bench-upstream-key' } });
    await r.body.dump();
    return r.statusCode;
  };
  const sendProxy = async () => {
    const r = await viaProxy.request({
      method: 'GET',
      path: `http://api.example.com${path}`,
      headers: { host: 'api.example.com', 'proxy-authorization': `Bearer ${token}` },
    });
    await r.body.dump();
    return r.statusCode;
  };
  // The first requests through a sidecar that has just become ready (cold code, first token, first
  // upstream connection), one after the other.
  const firstMs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    if ((await sendProxy()) !== 200) throw new Error('the first request through the sidecar failed');
    firstMs.push(performance.now() - t0);
  }

  // Latency next, on a quiet machine, each target after its own warm-up at the same rate.
  const directLat = await fixedRate(sendDirect, 1000, DURATION, LATENCY_WARMUP);
  const directLat2 = await fixedRate(sendDirect, 1000, DURATION, 0);
  const proxyLat = await fixedRate(sendProxy, 1000, DURATION, LATENCY_WARMUP);
  const proxyLat2 = await fixedRate(sendProxy, 1000, DURATION, 0);

  process.stdout.write(`warming up (${DURATION}s runs)...\n`);
  await wrk(`http://127.0.0.1:${proxyPort}${path}`, proxyLua, dir);
  const directRps = await wrk(`http://127.0.0.1:${upPort}${path}`, directLua, dir);
  let peakRss = 0;
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, rssKb(sidecar.pid as number));
  }, 200);
  const cpuBefore = cpuMicros(sidecar.pid as number);
  const sidecarRps = await wrk(`http://127.0.0.1:${proxyPort}${path}`, proxyLua, dir);
  const sidecarCpuPerReq = (cpuMicros(sidecar.pid as number) - cpuBefore) / (sidecarRps * DURATION);
  clearInterval(sampler);
  peakRss = Math.max(peakRss, rssKb(sidecar.pid as number));

  // The same request through a bare node:http + undici forwarder on the same core.
  const [bcmd, bargs] = pinned(1, [process.execPath, join(here, 'bare-forwarder.js'), String(upPort)]);
  const bare = work.spawn(bcmd, bargs, { stdio: ['ignore', 'pipe', 'inherit'] });
  const barePort = Number((await waitLine(bare, (l) => /^\d+$/.test(l.trim()), 'bare forwarder')).trim());
  await wrk(`http://127.0.0.1:${barePort}${path}`, proxyLua, dir);
  const bareCpuBefore = cpuMicros(bare.pid as number);
  const bareRps = await wrk(`http://127.0.0.1:${barePort}${path}`, proxyLua, dir);
  const bareCpuPerReq = (cpuMicros(bare.pid as number) - bareCpuBefore) / (bareRps * DURATION);
  bare.kill('SIGTERM');

  const f = (n: number) => n.toFixed(0).padStart(8);
  const ms = (n: number) => `${n.toFixed(3)} ms`;
  process.stdout.write(
    [
      '',
      `agentwrit-sidecar benchmark (${DURATION}s per run, sidecar on 1 core, loopback)`,
      `  saturation req/s      direct ${f(directRps)}   bare forwarder ${f(bareRps)}   sidecar ${f(sidecarRps)}   sidecar/bare ${(sidecarRps / bareRps).toFixed(2)}`,
      `  CPU per request       bare forwarder ${bareCpuPerReq.toFixed(1)} µs   sidecar ${sidecarCpuPerReq.toFixed(1)} µs`,
      `  first requests after ready   ${firstMs.map((x) => ms(x)).join(', ')}`,
      `  1000 req/s, after ${LATENCY_WARMUP} s at that rate:`,
      `    p50                 direct ${ms(directLat.p50)}   sidecar ${ms(proxyLat.p50)}`,
      `    p99                 direct ${ms(directLat.p99)}   sidecar ${ms(proxyLat.p99)}   (errors: direct ${directLat.errors}, sidecar ${proxyLat.errors})`,
      `  1000 req/s, the next ${DURATION} s (after ${LATENCY_WARMUP + DURATION} s at that rate):`,
      `    p50                 direct ${ms(directLat2.p50)}   sidecar ${ms(proxyLat2.p50)}`,
      `    p99                 direct ${ms(directLat2.p99)}   sidecar ${ms(proxyLat2.p99)}   (errors: direct ${directLat2.errors}, sidecar ${proxyLat2.errors})`,
      `  sidecar RSS           idle ${(idleRss / 1024).toFixed(1)} MB   under load (peak) ${(peakRss / 1024).toFixed(1)} MB`,
      '',
    ].join('\n'),
  );
  await direct.close();
  await viaProxy.close();
  await work.stop(); // before the log reader goes: the sidecar's last lines go down its pipe
  log.close();

  process.stdout.write(formatHttpsBench(await runHttpsBench({ seconds: DURATION })));
  // The token cache is measured in its own process: heap figures need --expose-gc and a quiet heap.
  const mem = await execFileAsync(process.execPath, ['--expose-gc', join(here, 'token-cache-memory.js')], { encoding: 'utf8' });
  process.stdout.write(`\n${mem.stdout}`);
}



main().catch((err: Error) => {
  process.stderr.write(`bench failed: ${err.stack}\n`);
  process.exit(1);
});
