/**
 * A replaced broker key file: the new key goes into service within about a second, answers given
 * under the old key are dropped, and a file that cannot be used leaves the old key in service.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdirSync, renameSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { computeKid } from '../../src/auth/keys.js';
import { createTokenVerifier } from '../../src/auth/verifier.js';
import { startValidateBroker } from '../helpers/validate-broker.js';
import { agentToken, brokerConfig, code, nowSeconds, privateKey, publicKey } from './helpers.js';

const next = generateKeyPairSync('ed25519');
const pem = (k: KeyObject) => k.export({ type: 'spki', format: 'pem' }) as string;
const header = (k: KeyObject) => JSON.stringify({ alg: 'EdDSA', typ: 'JWT', kid: computeKid(k) });
/** A token of the first key and one of the next key; each signed by its key and naming it. */
const tokenA = () => agentToken({ exp: nowSeconds() + 300 }, privateKey, header(publicKey));
const tokenB = () => agentToken({ exp: nowSeconds() + 300 }, next.privateKey, header(next.publicKey));

/** Replaces a file the way `mv` and most tools do: a new inode renamed over the old name. */
function replace(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

interface Events {
  changed: string[][];
  failed: string[];
  sources: string[];
}

async function verifierFor(t: Test, b: Record<string, unknown>) {
  const ev: Events = { changed: [], failed: [], sources: [] };
  const v = await createTokenVerifier(brokerConfig({ verify: 'offline', ...b }), {
    observer: {
      verification: (outcome, source) => {
        ev.sources.push(`${outcome}/${source}`);
      },
      revalidation: () => {},
      keyReload: (result, d) => {
        if (result === 'success') ev.changed.push([d.file, ...(d.kids ?? [])]);
        else ev.failed.push(`${d.reason}`);
      },
    },
  });
  t.teardown(() => v.close());
  return { v, ev };
}

/** A verifier on a PEM file holding the first key, with one of its tokens verified (and cached). */
async function onFirstKey(t: Test) {
  const file = join(t.testdir({}), 'broker-public.pem');
  writeFileSync(file, pem(publicKey));
  const { v, ev } = await verifierFor(t, { publicKeyFile: file });
  const a = tokenA();
  t.equal(await code(v.verify(a)), 'ok');
  return { file, v, ev, a };
}

/** Once the next key is in service: its tokens verify, the first key's do not. */
async function nextKeyServes(t: Test, v: Awaited<ReturnType<typeof verifierFor>>['v']): Promise<void> {
  t.equal(await code(v.verify(tokenB())), 'ok', 'a token of the new key is accepted');
  t.equal(await code(v.verify(tokenA())), 'token_invalid', 'a token of the replaced key is refused');
}

/** Polls until `cond` holds; the file is checked once a second. */
async function until(t: Test, cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 4000;
  while (!cond()) {
    if (Date.now() > end) {
      t.fail(`timed out waiting for ${what}`);
      return;
    }
    await sleep(25);
  }
}

t.test('a PEM file replaced: the new key is used and answers cached under the old one are dropped', async (t) => {
  const { file, v, ev, a } = await onFirstKey(t);
  t.equal(v.cached(a)?.source, 'cache', 'the first key’s token is cached');
  t.equal(await code(v.verify(tokenB())), 'token_invalid', 'the next key is not trusted yet');

  replace(file, pem(next.publicKey));
  await until(t, () => ev.changed.length === 1, 'the key change');
  t.same(ev.changed[0], [file, computeKid(next.publicKey)]);
  t.equal(v.cached(a), undefined, 'the cached answer is gone');
  t.equal(await code(v.verify(a)), 'token_invalid', 'the token verified before is refused now');
  await nextKeyServes(t, v);
  t.same(ev.failed, []);
});

t.test('hybrid: a key replaced while the broker is asked about a token is not undone by the answer', async (t) => {
  for (const when of ['first sight', 'revalidation'] as const) {
    const broker = await startValidateBroker('valid');
    t.teardown(() => broker.close());
    const file = join(t.testdir({}), 'broker-public.pem');
    writeFileSync(file, pem(publicKey));
    const { v, ev } = await verifierFor(t, { verify: 'hybrid', url: broker.url, publicKeyFile: file, revalidateAfter: '1s', timeout: '5s' });
    const a = tokenA();
    if (when === 'revalidation') {
      t.equal(await code(v.verify(a)), 'ok', `${when}: verified and cached`);
      await sleep(1100); // past revalidateAfter: the next request asks the broker again
    }
    broker.delayMs = 2500; // the key file changes while the broker has not answered yet
    const pending = code(v.verify(a));
    await sleep(100);
    replace(file, pem(next.publicKey));
    await until(t, () => ev.changed.length === 1, 'the key change');
    broker.delayMs = 0;
    t.equal(await pending, 'token_invalid', `${when}: the broker's "valid" does not stand for the replaced key`);
    t.equal(v.cached(a), undefined, `${when}: nothing cached for it`);
    t.equal(await code(v.verify(a)), 'token_invalid', `${when}: refused from then on`);
    t.equal(await code(v.verify(tokenB())), 'ok', `${when}: the new key serves`);
  }
});

t.test('a Kubernetes Secret update (the ..data symlink swapped) is followed', async (t) => {
  const dir = t.testdir({});
  mkdirSync(join(dir, '..v1'));
  mkdirSync(join(dir, '..v2'));
  writeFileSync(join(dir, '..v1', 'key.pem'), pem(publicKey));
  writeFileSync(join(dir, '..v2', 'key.pem'), pem(next.publicKey));
  symlinkSync('..v1', join(dir, '..data'));
  symlinkSync(join('..data', 'key.pem'), join(dir, 'key.pem'));
  const { v, ev } = await verifierFor(t, { publicKeyFile: join(dir, 'key.pem') });
  t.equal(await code(v.verify(tokenA())), 'ok');

  symlinkSync('..v2', join(dir, '..data_tmp'));
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  await until(t, () => ev.changed.length === 1, 'the key change');
  await nextKeyServes(t, v);
});

t.test('an unusable file keeps the old key, is reported once, and a good file then takes over', async (t) => {
  const { file, v, ev, a } = await onFirstKey(t);

  replace(file, '-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n');
  await until(t, () => ev.failed.length === 1, 'the failure');
  t.match(ev.failed[0], /not a PEM public key/);
  await sleep(2200);
  t.equal(ev.failed.length, 1, 'reported once while the file stays as it is');
  t.same(ev.changed, []);
  t.equal(v.cached(a)?.source, 'cache', 'answers under the kept key stay');
  t.equal(await code(v.verify(tokenA())), 'ok', 'the old key still verifies');

  unlinkSync(file);
  await until(t, () => ev.failed.length === 2, 'the second failure');
  t.equal(ev.failed[1], 'ENOENT', 'a removed file is a new failure');
  t.equal(await code(v.verify(tokenA())), 'ok', 'the old key stays in service');

  replace(file, pem(next.publicKey));
  await until(t, () => ev.changed.length === 1, 'the key change');
  await nextKeyServes(t, v);
});

t.test('the same key written again changes nothing', async (t) => {
  const { file, v, ev, a } = await onFirstKey(t);
  replace(file, pem(publicKey));
  const later = new Date(Date.now() + 5000);
  utimesSync(file, later, later);
  await sleep(2200);
  t.same(ev.changed, [], 'no change reported');
  t.same(ev.failed, []);
  t.equal(v.cached(a)?.source, 'cache', 'cached answers are kept');
});

t.test('a JWKS file that adds the next key: tokens of both keys verify', async (t) => {
  const dir = t.testdir({});
  const file = join(dir, 'jwks.json');
  const jwk = (k: KeyObject) => k.export({ format: 'jwk' });
  writeFileSync(file, JSON.stringify({ keys: [jwk(publicKey)] }));
  const { v, ev } = await verifierFor(t, { jwksFile: file });
  t.equal(await code(v.verify(tokenB())), 'token_invalid');
  replace(file, JSON.stringify({ keys: [jwk(publicKey), { ...jwk(next.publicKey), kid: 'broker-2027' }] }));
  await until(t, () => ev.changed.length === 1, 'the key change');
  t.same(ev.changed[0].slice(1), [computeKid(publicKey), computeKid(next.publicKey), 'broker-2027'].sort());
  t.equal(await code(v.verify(tokenA())), 'ok');
  t.equal(await code(v.verify(tokenB())), 'ok');
  t.equal(await code(v.verify(agentToken({ exp: nowSeconds() + 300 }, next.privateKey, JSON.stringify({ alg: 'EdDSA', kid: 'broker-2027' })))), 'ok');
});
