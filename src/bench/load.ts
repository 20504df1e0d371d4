/** Pieces shared by the benchmarks: ports, readiness, the open-loop load generator. */
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { request } from 'undici';

export const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];

/** Open loop: request i starts at start + i/rate whatever the earlier ones are doing. */
export async function fixedRate(send: () => Promise<number>, rate: number, seconds: number): Promise<{ p50: number; p99: number; errors: number }> {
  const lat: number[] = [];
  let errors = 0;
  const pending: Promise<void>[] = [];
  const start = performance.now();
  for (let i = 0; i < rate * seconds; i++) {
    const wait = start + (i * 1000) / rate - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const t0 = performance.now();
    pending.push(
      send().then(
        (status) => {
          if (status !== 200) errors++;
          lat.push(performance.now() - t0);
        },
        () => {
          errors++;
        },
      ),
    );
  }
  await Promise.all(pending);
  lat.sort((a, b) => a - b);
  return { p50: quantile(lat, 0.5), p99: quantile(lat, 0.99), errors };
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
