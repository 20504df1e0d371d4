import { generateEphemeralCa } from '../../src/tls/ca.js';
import { LeafCache } from '../../src/tls/leaf.js';
const t0 = performance.now();
const ca = await generateEphemeralCa();
console.log('ca ms', performance.now() - t0, ca.subject, ca.notAfter, ca.fingerprint256);
const c = new LeafCache(ca, { maxEntries: 100, validityMs: 86400000 });
await c.warm();
for (const h of ['a.test', '127.0.0.1', '::1', 'x'.repeat(63) + '.' + 'y'.repeat(20)]) {
  const t = performance.now();
  const pem = await c.certificatePem(h);
  console.log(h.slice(0, 10), performance.now() - t);
  if (h === '::1' || h.length > 64) console.log(pem);
}
const t1 = performance.now();
for (let i = 0; i < 500; i++) await c.get(`h${i}.test`);
console.log('per mint', (performance.now() - t1) / 500, c.stats(), c.size());
