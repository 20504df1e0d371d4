/**
 * Building a generation reads what its routes name: a route's caFile that is missing or holds no
 * certificate refuses the generation with the route's position (at start, and at a reload, which
 * then keeps the running one), instead of answering 500 to every request on that route.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { ConfigError } from '../../src/errors.js';
import { buildGeneration } from '../../src/runtime/generation.js';
import { generateEphemeralCa } from '../../src/tls/ca.js';

const policy = (caFile: string) =>
  `version: v1\nroutes:\n  - id: internal\n    mount: /internal\n    upstream: https://internal.example\n    methods: [GET]\n    path: /{rest*}\n    scopes: ["read:internal:*"]\n    caFile: ${caFile}\n`;

t.test("a route's caFile is read when its generation is built", async (t) => {
  const dir = t.testdir({ 'garbage.pem': 'not a certificate\n' });
  writeFileSync(join(dir, 'ca.pem'), (await generateEphemeralCa()).certPem);
  const build = async (caFile: string) => {
    writeFileSync(join(dir, 'policy.yaml'), policy(caFile));
    return buildGeneration(1, [join(dir, 'policy.yaml')], dir, {});
  };
  const good = await build('ca.pem');
  t.equal(good.policy.routes[0].def.caFile, join(dir, 'ca.pem'));
  await good.connectors.dispose();
  for (const [caFile, message] of [
    ['missing.pem', /^.*policy\.yaml:3:5 route internal: caFile .*missing\.pem cannot be read: ENOENT$/],
    ['garbage.pem', /^.*policy\.yaml:3:5 route internal: caFile .*garbage\.pem holds no PEM certificate$/],
  ] as const) {
    const err = await build(caFile).catch((e: unknown) => e);
    t.ok(err instanceof ConfigError, `${caFile}: a configuration error`);
    t.match((err as Error).message, message);
  }
});
