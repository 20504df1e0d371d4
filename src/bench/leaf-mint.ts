/**
 * Leaf certificate cost: what the first intercepted request to a new host pays (one mint), and what
 * every later request to it pays (a cache hit). Run: node dist/bench/leaf-mint.js [hosts] [hits]
 */
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { generateEphemeralCa } from '../tls/ca.js';
import { LeafCache } from '../tls/leaf.js';

export interface LatencySummary {
  n: number;
  meanMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface LeafMintResult {
  caGenerateMs: number;
  warmMs: number;
  firstEverMintMs: number;
  newHostMint: LatencySummary;
  cacheHit: LatencySummary;
}

function summarize(samples: number[]): LatencySummary {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { n: s.length, meanMs: s.reduce((a, b) => a + b, 0) / s.length, p50Ms: at(0.5), p90Ms: at(0.9), p99Ms: at(0.99), maxMs: s[s.length - 1] };
}

export async function runLeafMintBench(opts: { hosts?: number; hits?: number } = {}): Promise<LeafMintResult> {
  const hosts = opts.hosts ?? 300;
  const hits = opts.hits ?? 20_000;
  let t = performance.now();
  const ca = await generateEphemeralCa();
  const caGenerateMs = performance.now() - t;
  const cache = new LeafCache(ca, { maxEntries: hosts + 1, validityMs: 24 * 3_600_000 });
  t = performance.now();
  await cache.warm();
  const warmMs = performance.now() - t;

  t = performance.now();
  await cache.get('first.bench.test');
  const firstEverMintMs = performance.now() - t;

  const mints: number[] = [];
  for (let i = 0; i < hosts; i++) {
    const host = `host-${i}.bench.test`;
    t = performance.now();
    await cache.get(host);
    mints.push(performance.now() - t);
  }
  const lookups: number[] = [];
  for (let i = 0; i < hits; i++) {
    const host = `host-${i % hosts}.bench.test`;
    t = performance.now();
    await cache.get(host);
    lookups.push(performance.now() - t);
  }
  return { caGenerateMs, warmMs, firstEverMintMs, newHostMint: summarize(mints), cacheHit: summarize(lookups) };
}

export function formatLeafMintResult(r: LeafMintResult): string {
  const line = (name: string, s: LatencySummary, unit: 'ms' | 'us') => {
    const k = unit === 'ms' ? 1 : 1000;
    const f = (v: number) => `${(v * k).toFixed(unit === 'ms' ? 2 : 1)} ${unit}`;
    return `${name.padEnd(22)} n=${s.n}  mean ${f(s.meanMs)}  p50 ${f(s.p50Ms)}  p90 ${f(s.p90Ms)}  p99 ${f(s.p99Ms)}  max ${f(s.maxMs)}`;
  };
  return [
    'leaf certificates (ECDSA P-256, one shared leaf key)',
    `${'CA generation'.padEnd(22)} ${r.caGenerateMs.toFixed(2)} ms`,
    `${'LeafCache.warm()'.padEnd(22)} ${r.warmMs.toFixed(2)} ms`,
    `${'first mint after warm'.padEnd(22)} ${r.firstEverMintMs.toFixed(2)} ms`,
    line('mint, new host', r.newHostMint, 'ms'),
    line('cache hit', r.cacheHit, 'us'),
  ].join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [hosts, hits] = process.argv.slice(2).map(Number);
  const result = await runLeafMintBench({ hosts: hosts || undefined, hits: hits || undefined });
  process.stdout.write(`${formatLeafMintResult(result)}\n`);
}
