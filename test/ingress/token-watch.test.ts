/**
 * The token watch of long-lived connections, against a real offline verifier: the cut comes when
 * the verifier's own rule says the token has expired (valid through its exp second, plus leeway).
 */
import t from 'tap';
import { createTokenVerifier } from '../../src/auth/verifier.js';
import { watchToken } from '../../src/ingress/token-watch.js';
import { agentToken, brokerConfig, nowSeconds, writeKeyFiles } from '../auth/helpers.js';

const files = writeKeyFiles(t.testdir({}));

for (const leewayMs of [0, 1000]) {
  t.test(`offline, leeway ${leewayMs} ms: cut at expiry, not before`, async (t) => {
    const verifier = await createTokenVerifier(brokerConfig({ verify: 'offline', publicKeyFile: files.spki, leeway: `${leewayMs}ms` }));
    t.teardown(() => verifier.close());
    const exp = nowSeconds() + 1;
    const token = agentToken({ exp });
    const { identity } = await verifier.verify(token);
    const deadline = (exp + 1) * 1000 + leewayMs;
    const cut = await new Promise<{ reason: string; at: number }>((resolve) => {
      // Held (not unref'd): the watch's own timers do not keep a process alive.
      const giveUp = setTimeout(() => {
        stop();
        resolve({ reason: 'never', at: Date.now() });
      }, 6000);
      const stop = watchToken({ verifier, token, identity, leewayMs }, (reason) => {
        clearTimeout(giveUp);
        resolve({ reason, at: Date.now() });
      });
    });
    t.equal(cut.reason, 'token_expired');
    t.ok(cut.at >= deadline && cut.at < deadline + 1500, `${cut.at - deadline} ms after the deadline`);
  });
}
