import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { type ConnectorInput, PolicyFileSchema } from '../../src/config/schema.js';
import { ConnectorProvisionError, ConnectorRegistry, createConnector } from '../../src/connectors/registry.js';

const PH = '${secret}';
const dir = await mkdtemp(join(tmpdir(), 'aw-registry-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

/** Connector definitions exactly as a policy file yields them. */
const connectors = (list: unknown[]): ConnectorInput[] => PolicyFileSchema.parse({ version: 'v1', connectors: list }).connectors;

t.test('creates and provisions every connector', async (t) => {
  await writeFile(join(dir, 'pw'), 'secret-pw\n');
  const defs = connectors([
    { name: 'billing-api', type: 'static', secret: { env: 'BILLING_API_KEY' }, header: 'Authorization', format: `Bearer ${PH}` },
    { name: 'maps', type: 'static', secret: { env: 'MAPS_KEY' }, query: 'key' },
    { name: 'legacy', type: 'static', basic: { username: { env: 'LEGACY_USER' }, password: { file: 'pw' } } },
  ]);
  const reg = await ConnectorRegistry.create(defs, { baseDir: dir, env: { BILLING_API_KEY: 'b', MAPS_KEY: 'm', LEGACY_USER: 'u' } });
  t.same(reg.names(), ['billing-api', 'maps', 'legacy']);
  t.equal(reg.get('billing-api')?.type, 'static');
  t.equal(reg.get('nope'), undefined);
  await reg.dispose();
});

t.test('every failure is listed, naming the source and never a value', async (t) => {
  await writeFile(join(dir, 'crlf'), 'evil\r\nX: y\n');
  const defs = connectors([
    { name: 'ok', type: 'static', secret: { env: 'GOOD' } },
    { name: 'no-env', type: 'static', secret: { env: 'MISSING_KEY' } },
    { name: 'no-file', type: 'static', secret: { file: 'absent.txt' } },
    { name: 'crlf', type: 'static', secret: { file: 'crlf' }, header: 'X-Key' },
    { name: 'host', type: 'static', secret: { env: 'GOOD' }, header: 'Host' },
    { name: 'ok', type: 'static', secret: { env: 'GOOD' }, query: 'k' },
  ]);
  const err = await ConnectorRegistry.create(defs, { baseDir: dir, env: { GOOD: 'good-secret-value' } }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof ConnectorProvisionError);
  const e = err as ConnectorProvisionError;
  t.same(e.problems.map((p) => p.connector).sort(), ['crlf', 'host', 'no-env', 'no-file', 'ok']);
  t.match(e.message, /connector ok: defined more than once/);
  t.match(e.message, /connector no-env: environment variable MISSING_KEY is not set, empty or only whitespace/);
  t.match(e.message, new RegExp(`connector no-file: secret file ${join(dir, 'absent.txt')} cannot be read \\(ENOENT\\)`));
  t.match(e.message, /connector crlf: secret from file .*crlf contains control characters/);
  t.match(e.message, /connector host: header Host cannot carry a credential/);
  t.equal(e.message.split('\n').length, 5, 'one line per problem');
  t.notMatch(e.message, /connector host: connector/);
  t.notOk(e.message.includes('evil') || e.message.includes('good-secret-value'), 'no secret value in the message');
});

t.test('createConnector refuses an unknown type', async (t) => {
  t.throws(() => createConnector({ name: 'x', type: 'oauth2' } as unknown as ConnectorInput, { baseDir: dir }), /connector x: unknown type oauth2/);
});

t.test('a new registry takes over the connectors defined exactly as in the current one, and disposes only its own', async (t) => {
  const env = { A: 'a', B: 'b' };
  const first = await ConnectorRegistry.create(
    connectors([
      { name: 'same', type: 'static', secret: { env: 'A' } },
      { name: 'changed', type: 'static', secret: { env: 'A' } },
    ]),
    { baseDir: dir, env },
  );
  // 'same' would not provision now (its variable is gone): taken over, it is not provisioned again.
  const second = await ConnectorRegistry.create(
    connectors([
      { name: 'same', type: 'static', secret: { env: 'A' } },
      { name: 'changed', type: 'static', secret: { env: 'B' } },
    ]),
    { baseDir: dir, env: { B: 'b' } },
    first,
  );
  t.equal(second.get('same'), first.get('same'), 'the same connector object');
  t.not(second.get('changed'), first.get('changed'), 'a changed definition makes a new one');
  await t.rejects(
    ConnectorRegistry.create(connectors([{ name: 'changed', type: 'static', secret: { env: 'A' } }]), { baseDir: dir, env: { B: 'b' } }, second),
    ConnectorProvisionError,
    'a changed connector is provisioned, and fails as before',
  );
  const disposed: string[] = [];
  for (const name of ['same', 'changed']) {
    const c = first.get(name)!;
    const dispose = c.dispose.bind(c);
    c.dispose = async () => {
      disposed.push(name);
      await dispose();
    };
  }
  await first.dispose(second);
  t.same(disposed, ['changed'], 'the connector the new registry shares is left alone');
});
