/**
 * The sidecar configuration file is read at start only. A reload that is asked for (SIGHUP, the
 * admin endpoint) reads it again and says which sections wait for a restart, or that the file
 * would not load now.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { parse, stringify } from 'yaml';
import { loadSidecarConfig } from '../../src/config/load.js';
import { configDrift } from '../../src/runtime/config-drift.js';
import { startTestSidecar } from '../helpers/sidecar.js';
import { makeKey } from '../helpers/tokens.js';
import { startUpstream } from '../helpers/upstream.js';

const key = await makeKey();

t.test('configDrift: same settings in another order are the same; changed sections are named; a broken file says why', async (t) => {
  const dir = t.testdir({ 'k.pem': key.publicPem, policies: { 'p.yaml': 'version: v1\nroutes: []\n' } });
  const file = join(dir, 'sidecar.yaml');
  writeFileSync(file, 'proxy: { listen: 127.0.0.1:15101 }\nbroker: { verify: offline, publicKeyFile: k.pem }\npolicies: [ policies ]\n');
  const running = await loadSidecarConfig(file, {});
  t.same(await configDrift(running, {}), { kind: 'same' });
  writeFileSync(file, '# reordered\npolicies: [ ./policies ]\nbroker: { publicKeyFile: ./k.pem, verify: offline }\nproxy: { listen: "127.0.0.1:15101" }\n');
  t.same(await configDrift(running, {}), { kind: 'same' }, 'order, quoting and comments do not count');
  writeFileSync(file, 'proxy: { listen: 127.0.0.1:15201 }\nbroker: { verify: offline, publicKeyFile: k.pem }\npolicies: [ policies ]\naudit: { path: other.jsonl }\n');
  t.same(await configDrift(running, {}), { kind: 'changed', sections: ['audit', 'proxy'] });
  writeFileSync(file, 'proxy: { listen: 127.0.0.1:15101 }\nbroker: { verify: offline, publicKeyFile: k.pem }\npolicies: [ policies ]\nbogus: 1\n');
  const bad = await configDrift(running, {});
  t.equal(bad.kind, 'invalid');
  t.match(bad.kind === 'invalid' ? bad.problems : [], [/sidecar\.yaml:4:1 .*bogus/]);
});

t.test('a running sidecar: SIGHUP-style reload and POST /reload report what waits for a restart', async (t) => {
  const upstream = await startUpstream();
  t.teardown(() => upstream.close());
  const dir = t.testdir({ 'k.pem': key.publicPem });
  const sc = await startTestSidecar({ upstreamPort: upstream.port, broker: { verify: 'offline', publicKeyFile: join(dir, 'k.pem') } });
  t.teardown(() => sc.close());
  const file = join(sc.dir, 'sidecar.yaml');
  const original = readFileSync(file, 'utf8');
  const pending = async () => {
    const text = await (await request(`${sc.adminUrl}/metrics`)).body.text();
    return Number(/^agentwrit_sidecar_config_restart_pending (\d+)$/m.exec(text)?.[1]);
  };
  const warnings = () => sc.logs.filter((l) => l.includes('take effect at the next restart')).map((l) => JSON.parse(l));

  t.equal(await sc.reload('SIGHUP'), true);
  t.equal(await pending(), 0, 'unchanged file: nothing pending');
  t.same(warnings(), []);

  const edited = parse(original);
  edited.shutdown = { grace: '7s' };
  edited.log = { level: 'debug' };
  writeFileSync(file, stringify(edited));
  t.equal(await sc.reload('SIGHUP'), true, 'policies still reload');
  t.equal(await pending(), 1);
  t.match(warnings(), [{ level: 'warn', reason: 'SIGHUP', file, sections: ['log', 'shutdown'] }]);

  const admin = await request(`${sc.adminUrl}/reload`, { method: 'POST' });
  t.same(await admin.body.json(), { reloaded: true, generation: 1, restartNeededFor: ['log', 'shutdown'] });

  writeFileSync(file, `${original}proxy: 3\n`);
  const broken = await request(`${sc.adminUrl}/reload`, { method: 'POST' });
  t.match(await broken.body.json(), { reloaded: true, configFileInvalid: true });
  t.ok(
    sc.logs.some((l) => l.includes('does not load now') && l.includes('"level":"error"')),
    'a file that would not load is an error: a restart would fail',
  );
  t.equal(await pending(), 1);

  writeFileSync(file, original);
  await sc.reload('SIGHUP');
  t.equal(await pending(), 0, 'back to the configuration in service');
});
