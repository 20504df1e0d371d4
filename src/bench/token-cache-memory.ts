/**
 * Memory held by the verified-token cache per 10,000 tokens, and the cost of a cache hit.
 *
 *   npm run build && node --expose-gc dist/bench/token-cache-memory.js [count]
 *
 * Tokens are broker-shaped: SPIFFE subject, 32-hex jti, an audience, task and orchestrator ids,
 * three scopes of which one names a single customer. Not a test: it prints figures.
 */
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTokenVerifier } from '../auth/verifier.js';
import { SidecarConfigSchema } from '../config/schema.js';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error('run with node --expose-gc');
  process.exit(2);
}

const count = Number(process.argv[2] ?? 10_000);
const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const b64 = (s: string) => Buffer.from(s).toString('base64url');
const header = b64('{"alg":"EdDSA","typ":"JWT"}');
const hex = (n: number) => randomBytes(n).toString('hex');

function token(i: number, now: number): string {
  const orch = `orch-${i % 20}`;
  const task = `task-${hex(4)}`;
  const claims = {
    iss: '',
    sub: `spiffe://agentwrit.local/agent/${orch}/${task}/${hex(8)}`,
    aud: ['agentwrit-sidecar'],
    exp: now + 900,
    nbf: now,
    iat: now,
    jti: hex(16),
    scope: [`read:billing:customer-${10000 + (i % 90000)}`, 'read:customers:*', 'write:tickets:*'],
    task_id: task,
    orch_id: orch,
  };
  const input = `${header}.${b64(JSON.stringify(claims))}`;
  return `${input}.${sign(null, Buffer.from(input), privateKey).toString('base64url')}`;
}

function heap(): number {
  for (let i = 0; i < 4; i++) gc?.();
  return process.memoryUsage().heapUsed;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'token-cache-'));
  const keyFile = join(dir, 'broker.pem');
  writeFileSync(keyFile, publicKey.export({ type: 'spki', format: 'pem' }));
  const broker = SidecarConfigSchema.parse({
    broker: { verify: 'offline', publicKeyFile: keyFile, audience: 'agentwrit-sidecar', cacheSize: count },
  }).broker;
  try {
    const now = Math.floor(Date.now() / 1000);
    // Warm the code paths (jose key import, interning) on a throwaway verifier first.
    const warm = await createTokenVerifier(broker);
    for (let i = 0; i < 200; i++) await warm.verify(token(i, now));
    await warm.close();

    const tokens = Array.from({ length: count }, (_, i) => token(i, now));
    const verifier = await createTokenVerifier(broker);
    const before = heap();
    for (const t of tokens) await verifier.verify(t);
    const after = heap();
    const bytes = after - before;
    const per10k = (bytes * 10_000) / count;
    const avgTokenLength = tokens.reduce((n, t) => n + t.length, 0) / count;

    // Cache hits: every token is cached; walk them repeatedly.
    const rounds = Math.max(1, Math.floor(500_000 / count));
    let hits = 0;
    const started = process.hrtime.bigint();
    for (let r = 0; r < rounds; r++) {
      for (const t of tokens) {
        if ((await verifier.verify(t)).source === 'cache') hits++;
      }
    }
    const hitNs = Number(process.hrtime.bigint() - started) / (rounds * count);
    if (hits !== rounds * count) throw new Error(`expected only cache hits, got ${hits}/${rounds * count}`);

    console.log(
      JSON.stringify({
        tokens: count,
        cached: verifier.cacheSize(),
        avgTokenChars: Math.round(avgTokenLength),
        heapBytes: bytes,
        bytesPerToken: Math.round(bytes / count),
        mibPer10k: Number((per10k / 1024 / 1024).toFixed(2)),
        mbPer10k: Number((per10k / 1e6).toFixed(2)),
        cacheHitMicros: Number((hitNs / 1000).toFixed(3)),
      }),
    );
    console.log(
      `token cache: ${(per10k / 1024 / 1024).toFixed(2)} MiB (${(per10k / 1e6).toFixed(2)} MB) per 10k tokens, ` +
        `${Math.round(bytes / count)} B/token; ` +
        `cache hit ${(hitNs / 1000).toFixed(2)} µs per verify()`,
    );
    await verifier.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
