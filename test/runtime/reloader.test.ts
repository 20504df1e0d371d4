/**
 * Reloads that overlap: a reload asked for while one runs is answered by the one after it (which
 * reads the files again), and every caller of that time shares it.
 */
import t from 'tap';
import type { Generation } from '../../src/runtime/types.js';
import { createLogger } from '../../src/telemetry/logger.js';

/** Builds are held until released, in order; each yields a generation with its own digest. */
const pending: Array<() => void> = [];
let builds = 0;
const { PolicyReloader } = await t.mockImport<typeof import('../../src/runtime/reloader.js')>('../../src/runtime/reloader.js', {
  '../../src/runtime/generation.js': {
    buildGeneration: async (id: number) => {
      const n = ++builds;
      await new Promise<void>((r) => pending.push(r));
      return { id, digest: `d${n}`, policy: { routes: [] }, connectors: { dispose: async () => {} } } as unknown as Generation;
    },
  },
});

t.test('a reload asked for while one runs gets the next one, shared', async (t) => {
  let current: Generation | undefined;
  const reloader = new PolicyReloader({
    policyPaths: [],
    baseDir: '.',
    env: {},
    logger: createLogger('silent'),
    current: () => current,
    swap: (g) => {
      current = g;
    },
    onResult: () => {},
  });
  const first = reloader.reload('a');
  await new Promise((r) => setImmediate(r));
  const second = reloader.reload('b');
  const third = reloader.reload('c');
  t.equal(second, third, 'callers during one reload share the next');
  t.not(first, second);
  t.equal(builds, 1, 'the next one waits for the running one');
  pending.shift()?.();
  t.equal(await first, true);
  t.equal(current?.digest, 'd1');
  await new Promise((r) => setImmediate(r));
  t.equal(builds, 2, 'then the files are read again');
  pending.shift()?.();
  t.equal(await second, true);
  t.equal(current?.digest, 'd2', 'the later callers were answered by the later build');
  reloader.stop();
});
