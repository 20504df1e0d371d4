/**
 * The token watch of long-lived connections, against a real offline verifier: the cut comes when
 * the verifier's own rule says the token has expired (valid through its exp second, plus leeway).
 */
import t from 'tap';
import { createTokenVerifier } from '../../src/auth/verifier.js';
import { watchToken } from '../../src/ingress/token-watch.js';
import { agentToken, brokerConfig, nowSeconds, writeKeyFiles } from '../auth/helpers.js';
import { startValidateBroker } from '../helpers/validate-broker.js';

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

t.test('online, the broker refusing every token: cut at expiry as token_expired, at a recheck before it as token_revoked', async (t) => {
  const broker = await startValidateBroker('valid');
  t.teardown(() => broker.close());
  const verifier = await createTokenVerifier(brokerConfig({ verify: 'online', url: broker.url, revalidateAfter: '1s' }));
  t.teardown(() => verifier.close());
  /** Watches `token` (only its expiry unless `recheckMs`); resolves with the reason of the cut. */
  const watch = async (token: string, recheckMs?: number) => {
    const { identity } = await verifier.verify(token);
    // From here on the broker refuses every token, without saying why, as a real one does.
    broker.mode = 'invalid';
    return new Promise<string>((resolve) => {
      const giveUp = setTimeout(() => {
        stop();
        resolve('never');
      }, 6000);
      const stop = watchToken({ verifier, token, identity, leewayMs: 0, recheckMs }, (reason) => {
        clearTimeout(giveUp);
        resolve(reason);
      });
    });
  };
  t.equal(await watch(agentToken({ exp: nowSeconds() + 1 })), 'token_expired', 'asked at its expiry');
  broker.mode = 'valid';
  t.equal(await watch(agentToken({ exp: nowSeconds() + 600 }), 1000), 'token_revoked', 'asked at a recheck long before it');
});

t.test('online, the broker unreachable when the token expires: cut at expiry all the same', async (t) => {
  const broker = await startValidateBroker('valid');
  t.teardown(() => broker.close());
  // cacheSize 1: verifying another token evicts this one, so the check at expiry asks the broker.
  const verifier = await createTokenVerifier(brokerConfig({ verify: 'online', url: broker.url, revalidateAfter: '1s', timeout: '300ms', cacheSize: 1 }));
  t.teardown(() => verifier.close());
  const exp = nowSeconds() + 1;
  const token = agentToken({ exp });
  const { identity } = await verifier.verify(token);
  await verifier.verify(agentToken({ exp: nowSeconds() + 600 }));
  broker.mode = 'error500';
  const deadline = (exp + 1) * 1000;
  const cut = await new Promise<{ reason: string; at: number }>((resolve) => {
    const giveUp = setTimeout(() => {
      stop();
      resolve({ reason: 'never', at: Date.now() });
    }, 6000);
    const stop = watchToken({ verifier, token, identity, leewayMs: 0 }, (reason) => {
      clearTimeout(giveUp);
      resolve({ reason, at: Date.now() });
    });
  });
  t.equal(cut.reason, 'token_expired');
  t.ok(cut.at < deadline + 1500, `${cut.at - deadline} ms after the deadline`);
});
