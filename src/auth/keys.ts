/**
 * The broker's Ed25519 verification key(s): from a PEM file, a JWKS file or a JWKS URL.
 * Every source resolves a token header to a Node KeyObject, which both jose (JWT signature) and
 * node:crypto (delegation record signatures, signed with the same broker key) accept.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { JWSHeaderParameters } from 'jose';
import { durationMs, type SidecarConfig } from '../config/schema.js';
import { errorReason, SidecarError } from '../errors.js';
import type { BrokerTransport } from './broker-transport.js';
import { type FileKeys, KeyFile, type KeyFileEvents } from './key-file.js';
import { shownUrl } from '../url-text.js';

export interface KeySource {
  /** The key that must have signed a token with this header; rejects with a SidecarError. */
  resolve(header: JWSHeaderParameters): KeyObject | Promise<KeyObject>;
  /** True once key material is available. */
  ready(): boolean;
  close(): void;
}

const BAD_SIGNATURE = 'token signature or format is invalid';
const KEYS_UNAVAILABLE = 'token signing keys are unavailable';

function invalidKey(): SidecarError {
  return new SidecarError('token_invalid', BAD_SIGNATURE);
}

/**
 * RFC 7638 thumbprint of an Ed25519 key: SHA-256 over the required members in lexicographic order
 * with no whitespace, base64url without padding. This is the `kid` the AgentWrit broker puts in
 * every token header. A private key is accepted and its public half is used.
 */
export function computeKid(publicKey: KeyObject): string {
  const pub = publicKey.type === 'private' ? createPublicKey(publicKey) : publicKey;
  if (pub.asymmetricKeyType !== 'ed25519') throw new TypeError('computeKid expects an Ed25519 key');
  const jwk = pub.export({ format: 'jwk' });
  return createHash('sha256').update(`{"crv":"Ed25519","kty":"OKP","x":"${jwk.x}"}`).digest('base64url');
}

function requireEd25519(key: KeyObject, origin: string): KeyObject {
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`${origin}: the broker key must be Ed25519`);
  return key;
}

/**
 * Reads a PEM key file. An SPKI PUBLIC KEY is the normal case, but operators of a real AgentWrit
 * broker only have the broker's PKCS#8 PRIVATE KEY file (the broker publishes no key), so a private
 * key PEM is accepted too: only its public half is derived and kept.
 */
export async function loadPemPublicKey(file: string): Promise<KeyObject> {
  const pem = await readFile(file, 'utf8');
  if (pem.includes('-----BEGIN ENCRYPTED PRIVATE KEY-----')) {
    throw new Error(`${file}: encrypted private keys are not supported; provide the public key (SPKI PEM)`);
  }
  let key: KeyObject;
  try {
    // createPublicKey derives the public key from a private key PEM without exposing the private one.
    key = createPublicKey(pem);
  } catch {
    throw new Error(`${file}: not a PEM public key (SPKI) or PKCS#8 private key`);
  }
  return requireEd25519(key, file);
}

class StaticKey implements FileKeys {
  readonly kid: string;
  readonly kids: readonly string[];
  constructor(readonly key: KeyObject) {
    this.kid = computeKid(key);
    this.kids = [this.kid];
  }
  resolve(header: JWSHeaderParameters): KeyObject {
    // The broker accepts an absent kid; a present one must name our key.
    if (header.kid !== undefined && header.kid !== this.kid) throw invalidKey();
    return this.key;
  }
}

interface JwkLike {
  kty?: unknown;
  crv?: unknown;
  kid?: unknown;
  use?: unknown;
  alg?: unknown;
  key_ops?: unknown;
  x?: unknown;
}

function usableJwk(jwk: JwkLike): boolean {
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') return false;
  if (jwk.use !== undefined && jwk.use !== 'sig') return false;
  if (jwk.alg !== undefined && jwk.alg !== 'EdDSA' && jwk.alg !== 'Ed25519') return false;
  if (jwk.key_ops !== undefined && !(Array.isArray(jwk.key_ops) && jwk.key_ops.includes('verify'))) return false;
  return true;
}

/** A JWKS document on disk: keys are selected by `kid` (the JWK's own kid or its RFC 7638 thumbprint). */
class FileJwks implements FileKeys {
  private readonly byKid = new Map<string, KeyObject>();
  private readonly only: KeyObject | undefined;
  readonly kids: readonly string[];

  constructor(doc: unknown, file: string) {
    const keys = (doc as { keys?: unknown } | null)?.keys;
    if (!Array.isArray(keys)) throw new Error(`${file}: not a JWKS document (expected {"keys": [...]})`);
    const distinct: KeyObject[] = [];
    for (const jwk of keys as JwkLike[]) {
      if (jwk === null || typeof jwk !== 'object' || !usableJwk(jwk)) continue;
      // Only the public members are imported, so a JWK that also carries "d" never loads a private key.
      const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: jwk.x as string }, format: 'jwk' });
      distinct.push(key);
      this.byKid.set(computeKid(key), key);
      if (typeof jwk.kid === 'string' && jwk.kid !== '') this.byKid.set(jwk.kid, key);
    }
    if (distinct.length === 0) throw new Error(`${file}: no Ed25519 signing key (kty OKP, crv Ed25519) in the JWKS`);
    this.only = distinct.length === 1 ? distinct[0] : undefined;
    // Thumbprints and the JWKS's own kids: a file that renames a key is a different key set.
    this.kids = [...this.byKid.keys()].sort();
  }

  resolve(header: JWSHeaderParameters): KeyObject {
    const key = header.kid === undefined ? this.only : this.byKid.get(header.kid);
    if (!key) throw invalidKey();
    return key;
  }
}

/** A key set is a few keys; anything much larger is not one. */
const MAX_JWKS_BYTES = 256 * 1024;

/** A token naming a kid not in the set fetches the set again, at most this often. */
const KID_MISS_REFETCH_MS = 30_000;
const FIRST_RETRY_MS = 500;

/**
 * A JWKS URL (e.g. the embedded broker's), read as a JWKS file is (FileJwks). Fetched at start,
 * again every `refreshMs`, and when a token names a kid the set does not hold (at most every 30 s).
 * Not ready until a fetch succeeds; until then retried with backoff. A fetched set that differs from
 * the one in service is reported as `changed` (cached verifications are then dropped); a failed
 * fetch keeps the set in service and is reported once per reason.
 */
class RemoteJwks implements KeySource {
  private keys: FileJwks | undefined;
  private fetching: Promise<void> | undefined;
  private lastFetchAt = 0;
  private lastFailure: string | undefined;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;

  /** The URL as logs and errors show it (shownUrl): no credentials in a query or user information. */
  private readonly shown: string;

  constructor(
    private readonly url: string,
    private readonly transport: BrokerTransport,
    private readonly refreshMs: number,
    private readonly events?: KeyFileEvents,
  ) {
    this.shown = shownUrl(url);
    this.next(0, FIRST_RETRY_MS);
  }

  /** Fetches after `ms`; then every refreshMs once loaded, with backoff (from `retryMs`) before. */
  private next(ms: number, retryMs: number): void {
    if (this.closed) return;
    this.timer = setTimeout(() => {
      void this.fetch().then(() => {
        if (this.keys) this.next(this.refreshMs, FIRST_RETRY_MS);
        else this.next(retryMs, Math.min(retryMs * 2, 30_000, this.refreshMs));
      });
    }, ms);
    this.timer.unref();
  }

  /** One fetch at a time; never rejects. */
  private fetch(): Promise<void> {
    this.fetching ??= this.load().finally(() => {
      this.fetching = undefined;
    });
    return this.fetching;
  }

  private async load(): Promise<void> {
    this.lastFetchAt = Date.now();
    try {
      const res = await this.transport.get(this.url, MAX_JWKS_BYTES);
      if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
      let doc: unknown;
      try {
        doc = JSON.parse(res.text);
      } catch {
        throw new Error(`${this.shown}: not valid JSON`);
      }
      const next = new FileJwks(doc, this.shown);
      const before = this.keys;
      this.keys = next;
      this.lastFailure = undefined;
      if (before && before.kids.join() !== next.kids.join()) this.events?.changed(this.shown, next.kids);
    } catch (e) {
      const reason = errorReason(e);
      if (reason === this.lastFailure || this.closed) return;
      this.lastFailure = reason;
      this.events?.failed(this.shown, reason);
    }
  }

  async resolve(header: JWSHeaderParameters): Promise<KeyObject> {
    if (!this.keys) await this.fetch();
    const keys = this.keys;
    if (!keys) throw new SidecarError('broker_unavailable', KEYS_UNAVAILABLE);
    try {
      return keys.resolve(header);
    } catch (e) {
      // A kid the set does not hold: the broker may have a new key since the last fetch.
      if (header.kid === undefined || Date.now() - this.lastFetchAt < KID_MISS_REFETCH_MS) throw e;
      await this.fetch();
      return (this.keys ?? keys).resolve(header);
    }
  }

  ready(): boolean {
    return this.keys !== undefined;
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
  }
}

async function loadPemKeys(file: string): Promise<FileKeys> {
  return new StaticKey(await loadPemPublicKey(file));
}

async function loadJwksKeys(file: string): Promise<FileKeys> {
  let doc: unknown;
  try {
    doc = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code) throw e;
    throw new Error(`${file}: not valid JSON`);
  }
  return new FileJwks(doc, file);
}

/** A key file that cannot be read at start: the error names the setting, the file and the errno. */
async function named<T>(setting: string, file: string, opening: Promise<T>): Promise<T> {
  try {
    return await opening;
  } catch (e) {
    // Parse errors already name the file; a failed system call (stat, open, read) is only an errno.
    if ((e as NodeJS.ErrnoException).syscall) throw new Error(`${setting} ${file} cannot be read: ${errorReason(e)}`, { cause: e });
    throw e;
  }
}

/**
 * The key source the config names, or undefined when none is configured (pure online mode).
 * A key file is followed as it is replaced (key-file.ts), a JWKS URL fetched again every
 * broker.jwksRefresh (RemoteJwks); both report through `events`.
 */
export async function loadKeySource(
  broker: SidecarConfig['broker'],
  transport: BrokerTransport | undefined,
  events?: KeyFileEvents,
): Promise<KeySource | undefined> {
  if (broker.publicKeyFile) return named('broker.publicKeyFile', broker.publicKeyFile, KeyFile.open(broker.publicKeyFile, loadPemKeys, events));
  if (broker.jwksFile) return named('broker.jwksFile', broker.jwksFile, KeyFile.open(broker.jwksFile, loadJwksKeys, events));
  if (broker.jwksUrl) {
    if (!transport) throw new Error('broker.jwksUrl needs a broker transport');
    return new RemoteJwks(broker.jwksUrl, transport, durationMs(broker.jwksRefresh), events);
  }
  return undefined;
}
