/**
 * Signing leaves with the CA key. The certificate generator signs through a WebCrypto-shaped
 * provider; WebCrypto's own sign hops to the libuv thread pool, which on a small, busy machine
 * costs more (and jitters more) than the signature itself, so this provider signs synchronously
 * with node:crypto and produces the same signature encoding WebCrypto would.
 */
import { createPrivateKey, type KeyObject, sign } from 'node:crypto';
import type { CaMaterial } from './ca.js';
import { type Algorithm, type CryptoKey, EC_P256, ECDSA_SHA256, subtle } from './x509.js';

export interface CaSigner {
  /** Non-extractable; the generator reads its algorithm to name the signature algorithm. */
  key: CryptoKey;
  algorithm: Algorithm;
  /** Pass as the `crypto` argument of X509CertificateGenerator.create. */
  crypto: { subtle: { sign(alg: unknown, key: unknown, data: ArrayBuffer | ArrayBufferView): Promise<ArrayBuffer> } };
}

interface SignerSpec {
  importAlg: Algorithm;
  signAlg: Algorithm;
  hash: string;
}

/** How this CA key signs; a loaded CA may be RSA or use another EC curve. Throws naming `label`. */
export function signerSpecFor(key: KeyObject, label: string): SignerSpec {
  const type = key.asymmetricKeyType;
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return { importAlg: EC_P256, signAlg: ECDSA_SHA256, hash: 'sha256' };
    if (curve === 'secp384r1') {
      return {
        importAlg: { name: 'ECDSA', namedCurve: 'P-384' } as Algorithm,
        signAlg: { name: 'ECDSA', hash: 'SHA-384' } as Algorithm,
        hash: 'sha384',
      };
    }
  } else if (type === 'rsa') {
    const alg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as Algorithm;
    return { importAlg: alg, signAlg: alg, hash: 'sha256' };
  }
  throw new Error(`${label}: unsupported CA key type (use ECDSA P-256, P-384 or RSA)`);
}

export async function importCaSigner(ca: CaMaterial): Promise<CaSigner> {
  let key: KeyObject;
  try {
    key = createPrivateKey(ca.keyPem);
  } catch {
    throw new Error('CA key: not a usable PEM private key');
  }
  const spec = signerSpecFor(key, 'CA key');
  const der = key.export({ format: 'der', type: 'pkcs8' });
  const cryptoKey = await subtle.importKey('pkcs8', der, spec.importAlg, false, ['sign']);
  return {
    key: cryptoKey,
    algorithm: spec.signAlg,
    crypto: {
      subtle: {
        async sign(_alg, _key, data) {
          const bytes = ArrayBuffer.isView(data) ? Buffer.from(data.buffer, data.byteOffset, data.byteLength) : Buffer.from(data);
          // ieee-p1363 (r||s) is WebCrypto's ECDSA output, which the generator converts to DER.
          const sig = sign(spec.hash, bytes, { key, dsaEncoding: 'ieee-p1363' });
          return sig.buffer.slice(sig.byteOffset, sig.byteOffset + sig.byteLength) as ArrayBuffer;
        },
      },
    },
  };
}
