/**
 * UpstreamTrust on its own: which bundles serve, how often a file is looked at, and that a file
 * that cannot be read for a moment, disappears, is caught half-written or goes bad before first use
 * never replaces the trust in service and never keeps a later good bundle out. (The end-to-end
 * behaviour through the sidecar is in test/https/upstream-ca-renewal.test.ts.)
 */
import { rmSync, writeFileSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import * as identityModule from '../../src/file-identity.js';
import { generateEphemeralCa } from '../../src/tls/ca.js';
import { caBundleProblem, type TrustReport, UPSTREAM_CA_RECHECK_MS, UpstreamTrust } from '../../src/upstream/trust.js';
import { tempDir } from '../helpers/tmp.js';

const [ca1, ca2] = await Promise.all([generateEphemeralCa(), generateEphemeralCa()]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Lets the next look be due. */
const nextLook = () => sleep(UPSTREAM_CA_RECHECK_MS + 50);

t.test('caBundleProblem: what may serve as trust', async (t) => {
  t.equal(caBundleProblem(ca1.certPem), undefined);
  t.equal(caBundleProblem(`# a comment\n${ca1.certPem}\n# another\n${ca2.certPem}`), undefined, 'text between certificates is allowed');
  t.equal(caBundleProblem('nothing here\n'), 'holds no PEM certificate');
  t.match(caBundleProblem(`${ca1.certPem}${ca2.certPem.slice(0, 200)}`), /1 PEM block\(s\) without their END line/, 'a file cut short');
  t.match(caBundleProblem(`${ca1.certPem}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`), /^certificate 2 of 2 does not parse/);
});

/** A CA file holding ca1, in a directory of its own. */
function setup(): { file: string } {
  const file = join(tempDir('aws-trust-'), 'ca.pem');
  writeFileSync(file, ca1.certPem);
  return { file };
}

/** The trust module with some of its imports replaced (fault injection, counting). */
const trustModuleWith = (t: Test, mocks: Record<string, unknown>) =>
  t.mockImport<typeof import('../../src/upstream/trust.js')>('../../src/upstream/trust.js', mocks);

t.test('a read that fails for a moment does not keep the renewed bundle out', async (t) => {
  const { file } = setup();
  let failReads = 0;
  const { UpstreamTrust: Faulty } = await trustModuleWith(t, {
    'node:fs/promises': {
      ...fsp,
      readFile: async (...args: Parameters<typeof fsp.readFile>) => {
        // Fault injection: the next reads fail as under descriptor exhaustion.
        if (failReads > 0) {
          failReads--;
          throw Object.assign(new Error('EMFILE: too many open files, open'), { code: 'EMFILE' });
        }
        return fsp.readFile(...args);
      },
    },
  });
  const reports: TrustReport[] = [];
  const renewed: Array<string | undefined> = [];
  const trust = new Faulty(file, (f) => renewed.push(f), (r) => reports.push(r));
  const before = trust.context();
  await nextLook();
  writeFileSync(file, ca2.certPem);
  failReads = 1;
  await trust.follow();
  t.match(reports, [{ result: 'failure', reason: 'EMFILE' }]);
  t.equal(trust.context(), before, 'the trust in service stays');
  await nextLook();
  await trust.follow();
  t.match(reports.at(-1), { result: 'success', file });
  t.same(renewed, [undefined], 'upstream.caFile renewed: every https pool is told');
  t.not(trust.context(), before, 'a new context with the renewed bundle');
});

t.test('a file is looked at once a second, however many requests ask', async (t) => {
  const { file } = setup();
  let stats = 0;
  const { UpstreamTrust: Counted } = await trustModuleWith(t, {
    '../../src/file-identity.js': {
      ...identityModule,
      fileIdentity: async (p: string) => {
        stats++;
        return identityModule.fileIdentity(p);
      },
    },
  });
  const trust = new Counted(undefined, () => {});
  trust.context(file);
  const started = Date.now();
  const waits: Array<Promise<void> | undefined> = [];
  // Looks are due 1 s after the last one ended: two fit in 2.5 s, a third cannot start before 3 s.
  while (Date.now() - started < 2 * UPSTREAM_CA_RECHECK_MS + 500) {
    waits.push(trust.follow(file));
    await sleep(5);
  }
  await Promise.all(waits);
  t.equal(stats, 2, 'two looks in 2.5 s (none was due in the first second)');
  t.ok(waits.filter((w) => w === undefined).length > waits.length - 10, 'nearly every request had nothing to wait for');
});

t.test('a file that disappears keeps the trust, and comes back unchanged without a renewal', async (t) => {
  const { file } = setup();
  const reports: TrustReport[] = [];
  const trust = new UpstreamTrust(undefined, () => {}, (r) => reports.push(r));
  const before = trust.context(file);
  await nextLook();
  rmSync(file);
  await trust.follow(file);
  await nextLook();
  await trust.follow(file);
  t.match(reports, [{ result: 'failure', reason: 'ENOENT' }], 'reported once while it stays away');
  writeFileSync(file, ca1.certPem);
  await nextLook();
  await trust.follow(file);
  t.equal(reports.length, 1, 'the same bundle back: nothing to report');
  t.equal(trust.context(file), before, 'and no new context');
  writeFileSync(file, ca2.certPem);
  await nextLook();
  await trust.follow(file);
  t.match(reports.at(-1), { result: 'success' });
  t.not(trust.context(file), before);
});

t.test('a bundle caught half-written is not used; the finished file is', async (t) => {
  const { file } = setup();
  const reports: TrustReport[] = [];
  const renewed: Array<string | undefined> = [];
  const trust = new UpstreamTrust(undefined, (f) => renewed.push(f), (r) => reports.push(r));
  const before = trust.context(file);
  await nextLook();
  writeFileSync(file, `${ca1.certPem}${ca2.certPem.slice(0, 300)}`);
  await trust.follow(file);
  t.match(reports, [{ result: 'failure', reason: /without their END line/ }]);
  t.equal(trust.context(file), before);
  writeFileSync(file, `${ca1.certPem}${ca2.certPem}`);
  await nextLook();
  await trust.follow(file);
  t.match(reports.at(-1), { result: 'success' });
  t.same(renewed, [file], 'a route file renewed: only the pools on that file are told');
});

t.test('a route file that went bad before its first use: refused as upstream_tls_error, and reported', async (t) => {
  const { file } = setup();
  writeFileSync(file, 'not a bundle\n');
  const reports: TrustReport[] = [];
  const trust = new UpstreamTrust(undefined, () => {}, (r) => reports.push(r));
  t.throws(() => trust.context(file), { code: 'upstream_tls_error' });
  t.match(reports, [{ result: 'failure', file, reason: /route caFile .* holds no PEM certificate/ }]);
  writeFileSync(file, ca1.certPem);
  t.throws(() => trust.context(file), { code: 'upstream_tls_error' }, 'within the second: not read again');
  await nextLook();
  t.ok(trust.context(file), 'a second later, good again: the next request reads it');
  t.equal(reports.length, 1, 'reported once');
});

t.test('route files let go of (a reload removed their routes) are read afresh if asked for again', async (t) => {
  const { file } = setup();
  const other = setup().file;
  const trust = new UpstreamTrust(undefined, () => {});
  const ctx = trust.context(file);
  const otherCtx = trust.context(other);
  t.equal(trust.context(file), ctx, 'one context per file while it is in use');
  trust.retain(new Set([other]));
  t.equal(trust.context(other), otherCtx, 'a file still in use keeps its context');
  rmSync(file);
  t.throws(() => trust.context(file), { code: 'upstream_tls_error' }, 'the removed file is not held: asked for again, it is read again');
});

t.test('upstream.caFile is checked at start', async (t) => {
  const { file } = setup();
  writeFileSync(file, `${ca1.certPem}-----BEGIN CERTIFICATE-----\nMIIB`);
  t.throws(() => new UpstreamTrust(file, () => {}), /^upstream\.caFile .*ca\.pem holds 1 PEM block\(s\) without their END line/);
});
