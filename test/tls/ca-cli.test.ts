import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import t from 'tap';
import { runCaCommand } from '../../src/cli/ca.js';
import { loadCaDir } from '../../src/tls/ca.js';

function capture() {
  const io = {
    stdout: '',
    stderr: '',
    out(s: string) {
      io.stdout += s;
    },
    err(s: string) {
      io.stderr += s;
    },
  };
  return io;
}

const base = await mkdtemp(join(tmpdir(), 'aw-cli-'));
t.teardown(() => rm(base, { recursive: true, force: true }));

t.test('ca init creates a loadable CA and prints how to trust it', async (t) => {
  const dir = join(base, 'ca');
  const io = capture();
  t.equal(await runCaCommand(['init', '--out', dir], io), 0);
  t.equal(io.stderr, '');
  const ca = await loadCaDir(dir);
  t.match(io.stdout, `CA certificate: ${join(dir, 'ca.crt')}`);
  t.match(io.stdout, `Subject:        ${ca.subject}`);
  t.match(io.stdout, `SHA-256:        ${ca.fingerprint256}`);
  t.match(io.stdout, `caDir: ${dir}`);
  for (const v of ['SSL_CERT_FILE', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE']) t.match(io.stdout, `export ${v}=<the file written to tls.bundleOut>`);
  t.match(io.stdout, `export NODE_EXTRA_CA_CERTS=${join(dir, 'ca.crt')}`);
  t.notMatch(io.stdout, /PRIVATE KEY/);
  t.notOk(io.stdout.includes(ca.keyPem.split('\n')[1]), 'the key is never printed');
  t.equal((await stat(join(dir, 'ca.key'))).mode & 0o777, 0o600);

  const again = capture();
  t.equal(await runCaCommand(['init', '--out', dir], again), 1);
  t.match(again.stderr, /ca init failed: refusing to overwrite .*--force/);
  t.equal((await loadCaDir(dir)).fingerprint256, ca.fingerprint256, 'the existing CA is untouched');

  const forced = capture();
  t.equal(await runCaCommand(['init', `--out=${dir}`, '--force', '--days', '30'], forced), 0);
  const replaced = await loadCaDir(dir);
  t.not(replaced.fingerprint256, ca.fingerprint256);
  t.ok(replaced.notAfter.getTime() < Date.now() + 31 * 86_400_000);
});

t.test('ca init --bundle writes system CAs plus the new CA and names it in the variables', async (t) => {
  const dir = join(base, 'with-bundle');
  const bundle = join(base, 'trust', 'bundle.pem');
  const io = capture();
  t.equal(await runCaCommand(['init', '--out', dir, '--bundle', bundle], io), 0);
  const text = await readFile(bundle, 'utf8');
  t.equal(text.match(/-----BEGIN CERTIFICATE-----/g)?.length, rootCertificates.length + 1);
  t.ok(text.includes(new X509Certificate(await readFile(join(dir, 'ca.crt'))).toString().trim()));
  t.notMatch(text, /PRIVATE KEY/);
  t.match(io.stdout, `export SSL_CERT_FILE=${bundle}`);
  t.match(io.stdout, `export REQUESTS_CA_BUNDLE=${bundle}`);
});

t.test('usage errors and help', async (t) => {
  const help = capture();
  t.equal(await runCaCommand(['--help'], help), 0);
  t.match(help.stdout, /Usage: agentwrit-sidecar ca init --out DIR/);

  const cases: [string[], RegExp][] = [
    [[], /missing subcommand/],
    [['rotate'], /unknown arguments: rotate/],
    [['init'], /ca init needs --out DIR/],
    [['init', '--out', join(base, 'x'), '--days', 'ten'], /--days must be a whole number/],
    [['init', '--out', join(base, 'x'), '--days', '0'], /--days must be a whole number/],
    [['init', '--out', join(base, 'x'), '--bogus'], /unknown option --bogus/],
  ];
  for (const [argv, re] of cases) {
    const io = capture();
    t.equal(await runCaCommand(argv, io), 2, argv.join(' '));
    t.match(io.stderr, re);
    t.equal(io.stdout, '');
  }
  await t.rejects(stat(join(base, 'x')), 'nothing created on a usage error');
});
