/**
 * Trust material handed to agent containers, and the atomic write used for every file we publish:
 * a reader (an agent starting up, a file watcher) must see the old file or the new one, never half.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { rootCertificates } from 'node:tls';

/**
 * System CAs (Node's bundled Mozilla store) followed by the sidecar CA. Clients configured with
 * SSL_CERT_FILE, REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE replace their trust store with this file, so
 * it must still trust the public CAs used by pass-through hosts.
 */
export function buildTrustBundle(caCertPem: string): string {
  const parts = rootCertificates.map((c) => c.trim());
  parts.push(`# agentwrit-sidecar CA\n${caCertPem.trim()}`);
  return `${parts.join('\n')}\n`;
}

/** Write via a temp file in the same directory, fsync, then rename over the target. */
export async function writeFileAtomic(path: string, data: string, mode: number): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    // The creation mode is reduced by the umask; published files must have exactly `mode`.
    await fh.chmod(mode);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}
