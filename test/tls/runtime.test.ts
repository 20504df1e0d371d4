import t from 'tap';
import { SidecarConfigSchema } from '../../src/config/schema.js';
import { startTlsRuntime } from '../../src/tls/runtime.js';

const tlsDefaults = SidecarConfigSchema.shape.tls.parse(undefined);

t.test('the warm-up rounds are done when start returns and count in no statistic', async (t) => {
  const rt = await startTlsRuntime(tlsDefaults, { warmRounds: 4 });
  t.equal(rt.warmRounds, 4);
  t.equal(rt.leaves.size(), 0, 'no throwaway leaf is kept');
  t.equal(rt.leaves.stats().minted, 0);
  await rt.leafContext('api.example.com');
  t.equal(rt.leaves.stats().minted, 1, 'the first real host is the first mint counted');
  t.equal(rt.warmRounds, 4, 'nothing runs after start');
});

t.test('one round always runs, so a CA key that cannot sign is found at start', async (t) => {
  const rt = await startTlsRuntime(tlsDefaults, { warmRounds: 0 });
  t.equal(rt.warmRounds, 1);
});

t.test('by default, 40 rounds unless the time budget ran out first', async (t) => {
  const started = performance.now();
  const rt = await startTlsRuntime(tlsDefaults);
  const elapsed = performance.now() - started;
  t.ok(rt.warmRounds >= 1 && rt.warmRounds <= 40, `rounds: ${rt.warmRounds}`);
  if (rt.warmRounds < 40) t.ok(elapsed >= 400, `stopped after ${rt.warmRounds} rounds in ${elapsed.toFixed(0)} ms: only the budget may stop it early`);
});
