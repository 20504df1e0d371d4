/**
 * Test certificates beyond the sidecar's own CA: a server certificate for 127.0.0.1 and a client
 * certificate (clientAuth), both signed by a throwaway CA, as files in a directory.
 */
import { createPrivateKey } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateEphemeralCa, randomSerial } from '../../src/tls/ca.js';
import { importCaSigner } from '../../src/tls/signer.js';
import { type CryptoKeyPair, EC_P256, subtle, x509 } from '../../src/tls/x509.js';

export interface PkiFiles {
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

async function issue(ca: Awaited<ReturnType<typeof generateEphemeralCa>>, name: string, usage: 'server' | 'client'): Promise<{ cert: string; key: string }> {
  const signer = await importCaSigner(ca);
  const keys = (await subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject: [{ CN: [name] }],
      issuer: new x509.X509Certificate(ca.certPem).subjectName,
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 3_600_000),
      publicKey: new x509.PublicKey(await subtle.exportKey('spki', keys.publicKey)),
      signingKey: signer.key,
      signingAlgorithm: signer.algorithm,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([usage === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth], false),
        ...(usage === 'server' ? [new x509.SubjectAlternativeNameExtension([{ type: 'ip', value: name }], false)] : []),
      ],
    },
    signer.crypto as never,
  );
  const der = Buffer.from(await subtle.exportKey('pkcs8', keys.privateKey));
  return { cert: cert.toString('pem'), key: createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }).toString() };
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate, written into `dir`. */
export async function writePki(dir: string, clientName = 'sidecar-test-client'): Promise<PkiFiles> {
  const ca = await generateEphemeralCa();
  const server = await issue(ca, '127.0.0.1', 'server');
  const client = await issue(ca, clientName, 'client');
  const files: PkiFiles = {
    caCert: join(dir, 'ca.crt'),
    serverCert: join(dir, 'server.crt'),
    serverKey: join(dir, 'server.key'),
    clientCert: join(dir, 'client.crt'),
    clientKey: join(dir, 'client.key'),
  };
  writeFileSync(files.caCert, ca.certPem);
  writeFileSync(files.serverCert, server.cert);
  writeFileSync(files.serverKey, server.key);
  writeFileSync(files.clientCert, client.cert);
  writeFileSync(files.clientKey, client.key);
  return files;
}
