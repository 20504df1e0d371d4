import { Counter, Histogram, Registry } from 'prom-client';
import t from 'tap';
import { HotCounter, HotHistogram } from '../../src/telemetry/hot.js';

/** The exposition text of one registry, with one metric name swapped for another. */
async function text(registry: Registry, from: string, to: string): Promise<string> {
  return (await registry.metrics()).replaceAll(from, to);
}

t.test('a hot histogram exposes what prom-client writes for the same observations', async (t) => {
  const buckets = [0.001, 0.01, 0.1, 1];
  const reg = new Registry();
  const ref = new Registry();
  const hot = new HotHistogram('h_seconds', 'Latency "quoted" \\ help.', ['route', 'decision'], buckets, reg);
  const real = new Histogram({ name: 'r_seconds', help: 'Latency "quoted" \\ help.', labelNames: ['route', 'decision'], buckets, registers: [ref] });
  const values = [0, 0.0005, 0.001, 0.0011, 0.01, 0.5, 1, 1.5, 100, 0.3];
  for (const [i, v] of values.entries()) {
    const labels = i % 3 === 0 ? (['a"b\\c\nd', 'allow'] as const) : (['r1', 'deny'] as const);
    hot.child(...labels).observe(v);
    real.observe({ route: labels[0], decision: labels[1] }, v);
  }
  t.equal(await text(reg, 'h_seconds', 'x'), await text(ref, 'r_seconds', 'x'));
  t.same(
    (await reg.getMetricsAsJSON()).map((m) => m.values.length),
    (await ref.getMetricsAsJSON()).map((m) => m.values.length),
  );
  reg.resetMetrics();
  ref.resetMetrics();
  t.equal(await text(reg, 'h_seconds', 'x'), await text(ref, 'r_seconds', 'x'), 'reset empties both alike');
});

t.test('a hot counter exposes what prom-client writes for the same increments', async (t) => {
  const reg = new Registry();
  const ref = new Registry();
  const hot = new HotCounter('h_total', 'Requests.', ['route', 'code'], reg);
  const real = new Counter({ name: 'r_total', help: 'Requests.', labelNames: ['route', 'code'], registers: [ref] });
  const a = hot.child('r', 'ok');
  for (let i = 0; i < 5; i++) a.value++;
  hot.child('r', 'scope_violation').value++;
  t.equal(hot.child('r', 'ok'), a, 'one series per label values');
  real.inc({ route: 'r', code: 'ok' }, 5);
  real.inc({ route: 'r', code: 'scope_violation' });
  t.equal(await text(reg, 'h_total', 'x'), await text(ref, 'r_total', 'x'));
  t.throws(() => hot.child('only-one'), /expected 2 label values/);
  t.throws(() => new HotCounter('h_total', 'again', [], reg), /already been registered/);
});
