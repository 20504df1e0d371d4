/**
 * Leaf certificates for intercepted hosts. One ECDSA P-256 key pair serves every leaf, so minting
 * costs a single signature; leaves are cached in a bounded LRU, minted once per host even under
 * concurrent requests, and re-minted shortly before they expire. Private keys live only in memory.
 */
import { constants, createPrivateKey } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import { canonicalIPv6 } from '../ipv6.js';
import { performance } from 'node:perf_hooks';
import { createSecureContext, type SecureContext } from 'node:tls';
import { type CaMaterial, randomSerial } from './ca.js';
import { type CaSigner, importCaSigner } from './signer.js';
import { type CryptoKeyPair, EC_P256, subtle, x509 } from './x509.js';

export interface LeafCacheOptions {
  maxEntries: number;
  validityMs: number;
  now?: () => number;
}

/** Clients whose clock lags ours must not reject a leaf minted a moment ago. */
const LEAF_BACKDATE_MS = 5 * 60_000;
/** Re-mint once less than this share of a leaf's lifetime remains. */
const REFRESH_FRACTION = 0.1;
/** X.520 upper bound for commonName; longer hosts are named by the SAN alone. */
const MAX_CN_LENGTH = 64;

const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * The canonical form of a host a leaf may be minted for: a lower-case DNS name (trailing dot
 * dropped) or an IP literal (IPv6 in compressed form, brackets optional). Anything else —
 * wildcards, underscores, empty labels, zone ids, non-ASCII — is refused.
 */
export function normalizeLeafHost(input: string): string {
  if (typeof input !== 'string' || input.length === 0 || input.length > 255) throw badHost(input);
  const bracketed = input.startsWith('[') && input.endsWith(']');
  const bare = bracketed ? input.slice(1, -1) : input;
  const v6 = canonicalIPv6(bare);
  if (v6 !== undefined) return v6;
  if (bracketed) throw badHost(input);
  if (isIPv4(bare)) return bare;
  const name = (bare.endsWith('.') ? bare.slice(0, -1) : bare).toLowerCase();
  if (name.length === 0 || name.length > 253) throw badHost(input);
  const labels = name.split('.');
  if (!labels.every((l) => DNS_LABEL.test(l))) throw badHost(input);
  // An all-numeric last label would make "10.1.1" look like a name while clients read an address.
  if (/^\d+$/.test(labels[labels.length - 1])) throw badHost(input);
  return name;
}

function badHost(input: unknown): Error {
  const shown = typeof input === 'string' ? JSON.stringify(input.length > 80 ? `${input.slice(0, 80)}…` : input) : typeof input;
  return new Error(`cannot mint a certificate for ${shown}: not a DNS host name or IP address`);
}

interface Entry {
  context: SecureContext;
  certPem: string;
  notAfter: number;
  refreshAt: number;
}

/** Everything that is the same for every leaf, prepared once. */
interface Material {
  signer: CaSigner;
  issuer: x509.Name;
  caNotAfter: number;
  leafPublicKey: x509.PublicKey;
  leafKeyPem: string;
  extensions: x509.Extension[];
}

export class LeafCache {
  readonly #ca: CaMaterial;
  readonly #maxEntries: number;
  readonly #validityMs: number;
  readonly #now: () => number;
  #material: Promise<Material> | undefined;
  /** Map iteration order is insertion order: the first key is the least recently used. */
  readonly #entries = new Map<string, Entry>();
  readonly #inflight = new Map<string, Promise<Entry>>();
  #minted = 0;
  #hits = 0;
  #lastMintMs = 0;

  constructor(ca: CaMaterial, opts: LeafCacheOptions) {
    if (!Number.isInteger(opts.maxEntries) || opts.maxEntries < 1) throw new Error('leaf cache maxEntries must be a positive integer');
    if (!Number.isFinite(opts.validityMs) || opts.validityMs <= 0) throw new Error('leaf validity must be a positive duration');
    this.#ca = ca;
    this.#maxEntries = opts.maxEntries;
    this.#validityMs = opts.validityMs;
    this.#now = opts.now ?? Date.now;
  }

  /** A TLS context presenting a leaf for exactly this host (SAN dNSName, or iPAddress for IP literals). */
  async get(hostname: string): Promise<SecureContext> {
    return (await this.#entry(hostname)).context;
  }

  /** The PEM of the leaf certificate served for this host (never its key), minted if needed. */
  async certificatePem(hostname: string): Promise<string> {
    return (await this.#entry(hostname)).certPem;
  }

  /**
   * Import the CA key, generate the shared leaf key and issue one throwaway leaf now, so the first
   * intercepted request pays only for its own signature (not for key setup and cold code), and a
   * CA key that cannot sign is found at start rather than mid-request. Counts in no statistic.
   */
  async warm(): Promise<void> {
    const m = await this.#prepare();
    // .invalid (RFC 6761) can never be a real host; the result is discarded.
    await this.#issue(m, 'warm-up.invalid');
  }

  size(): number {
    return this.#entries.size;
  }

  /**
   * `hits` counts requests answered from the cache (callers that joined an in-flight mint are not
   * counted); `lastMintMs` is the latest mint's signing and context set-up, without one-time setup.
   */
  stats(): { minted: number; hits: number; lastMintMs: number } {
    return { minted: this.#minted, hits: this.#hits, lastMintMs: this.#lastMintMs };
  }

  async #entry(hostname: string): Promise<Entry> {
    const host = normalizeLeafHost(hostname);
    const cached = this.#entries.get(host);
    if (cached && this.#now() < cached.refreshAt) {
      this.#entries.delete(host);
      this.#entries.set(host, cached);
      this.#hits++;
      return cached;
    }
    let pending = this.#inflight.get(host);
    if (!pending) {
      pending = this.#mint(host).finally(() => this.#inflight.delete(host));
      this.#inflight.set(host, pending);
    }
    return pending;
  }

  #prepare(): Promise<Material> {
    if (!this.#material) {
      const building = buildMaterial(this.#ca);
      this.#material = building;
      // A failure is reported to the callers awaiting it; the next request tries again.
      building.catch(() => {
        if (this.#material === building) this.#material = undefined;
      });
    }
    return this.#material;
  }

  async #mint(host: string): Promise<Entry> {
    const m = await this.#prepare();
    const started = performance.now();
    const entry = await this.#issue(m, host);
    this.#minted++;
    this.#lastMintMs = performance.now() - started;
    this.#entries.delete(host);
    this.#entries.set(host, entry);
    while (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next().value as string;
      this.#entries.delete(oldest);
    }
    return entry;
  }

  async #issue(m: Material, host: string): Promise<Entry> {
    const now = this.#now();
    if (now >= m.caNotAfter) {
      throw new Error(`the sidecar CA expired on ${new Date(m.caNotAfter).toISOString()}: no leaf certificate can be minted`);
    }
    // A leaf must not outlive the CA that vouches for it.
    const notAfter = Math.min(now + this.#validityMs, m.caNotAfter);
    const ip = isIPv4(host) || isIPv6(host);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: host.length <= MAX_CN_LENGTH ? [{ CN: [host] }] : [],
      issuer: m.issuer,
      notBefore: new Date(now - LEAF_BACKDATE_MS),
      notAfter: new Date(notAfter),
      publicKey: m.leafPublicKey,
      signingKey: m.signer.key,
      signingAlgorithm: m.signer.algorithm,
      extensions: [
        ...m.extensions,
        // With an empty subject the SAN is the only name and RFC 5280 wants it critical.
        new x509.SubjectAlternativeNameExtension([{ type: ip ? 'ip' : 'dns', value: host }], host.length > MAX_CN_LENGTH),
      ],
    }, m.signer.crypto as never);
    const certPem = cert.toString('pem');
    return {
      // No session tickets: a resumed session skips the SNI check (intercept.ts), naming any host.
      context: createSecureContext({ key: m.leafKeyPem, cert: certPem, secureOptions: constants.SSL_OP_NO_TICKET }),
      certPem,
      notAfter,
      refreshAt: notAfter - (notAfter - now) * REFRESH_FRACTION,
    };
  }
}

async function buildMaterial(ca: CaMaterial): Promise<Material> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const ski = caCert.getExtension(x509.SubjectKeyIdentifierExtension);
  // Chain building matches a leaf's AKI to its issuer's SKI; a CA without SKI gets the RFC 5280 method-1 id.
  const aki = ski
    ? new x509.AuthorityKeyIdentifierExtension(ski.keyId)
    : await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey);
  const signer = await importCaSigner(ca);
  const leafKeys = (await subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
  const spki = await subtle.exportKey('spki', leafKeys.publicKey);
  const pkcs8 = Buffer.from(await subtle.exportKey('pkcs8', leafKeys.privateKey));
  return {
    signer,
    issuer: caCert.subjectName,
    caNotAfter: caCert.notAfter.getTime(),
    leafPublicKey: new x509.PublicKey(spki),
    leafKeyPem: createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }).toString(),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
      aki,
    ],
  };
}
