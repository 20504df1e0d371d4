/**
 * The one place @peculiar/x509 is loaded: its ASN.1 schemas use decorators that need
 * reflect-metadata installed before the library evaluates, and it must use Node's WebCrypto
 * rather than looking for a browser global.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

// The library's typings name the DOM `Crypto` type, absent from a Node-only build; Node's
// implementation provides the same interface.
x509.cryptoProvider.set(webcrypto as never);

export { x509 };
export const subtle = webcrypto.subtle;
export type CryptoKey = webcrypto.CryptoKey;
export type CryptoKeyPair = webcrypto.CryptoKeyPair;
export type Algorithm = webcrypto.Algorithm;

/** ECDSA P-256 for every key the sidecar generates: small, fast to sign, accepted by every client. */
export const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
export const ECDSA_SHA256 = { name: 'ECDSA', hash: 'SHA-256' } as const;
