/**
 * A start that fails once its policy generation is built (the proxy port is taken) serves nothing,
 * so it leaves no config_applied record: the audit log says what was in service, not what was tried.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { startTestSidecar } from '../helpers/sidecar.js';
import { tempDir } from '../helpers/tmp.js';
import { startUpstream } from '../helpers/upstream.js';
import { makeKey } from '../helpers/tokens.js';

t.test('a start that cannot listen (proxy or admin port taken) leaves no config_applied record; the next start records its generation', async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const key = await makeKey();
  const dir = tempDir('aws-startfail-');
  writeFileSync(join(dir, 'k.pem'), key.publicPem);
  const taken = createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
  t.teardown(() => taken.close());
  const port = (taken.address() as AddressInfo).port;
  const broker = { verify: 'offline', publicKeyFile: join(dir, 'k.pem') };
  await t.rejects(startTestSidecar({ upstreamPort: up.port, dir, broker, config: { proxy: { listen: `127.0.0.1:${port}` } } }), /EADDRINUSE|in use/);
  await t.rejects(startTestSidecar({ upstreamPort: up.port, dir, broker, config: { admin: { listen: `127.0.0.1:${port}` } } }), /EADDRINUSE|in use/, 'the admin port taken');
  const records = () =>
    readFileSync(join(dir, 'audit.jsonl'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  t.same(records().filter((r) => r.type === 'config_applied'), [], 'nothing recorded as in service');

  const sc = await startTestSidecar({ upstreamPort: up.port, dir, broker });
  await sc.close();
  t.match(records(), [{ type: 'config_applied', generation: 1, seq: 1 }], 'the start that served records generation 1 first');
});
