/**
 * A broker key kept in a file (PEM or JWKS), followed as the file is replaced.
 *
 * The AgentWrit broker has one signing key and no rotation of its own (reference §5): an operator
 * who replaces the key file, or a broker that starts without its key file and makes a new one,
 * changes the `kid`, and the broker refuses every token signed before. Sidecars get the new public
 * key the way they got the first one, usually through a mounted Kubernetes Secret. This source
 * checks the file's identity every second and, when it changed, reads and checks the new key before
 * it replaces the old one:
 * - a usable new key replaces the old one and `changed` is reported; the verifier then forgets every
 *   answer it gave under the old key;
 * - the same key in a new file (touched, re-synced) only updates the identity;
 * - a file that cannot be read or holds no usable key leaves the old key in service, and `failed`
 *   is reported once for each state of the file, not every second.
 */
import type { KeyObject } from 'node:crypto';
import type { JWSHeaderParameters } from 'jose';
import { errorReason } from '../errors.js';
import { fileIdentity } from '../file-identity.js';

/** How often the key file's identity is checked. */
export const KEY_RECHECK_MS = 1000;

/** Keys read from one file. */
export interface FileKeys {
  resolve(header: JWSHeaderParameters): KeyObject;
  /** RFC 7638 thumbprints of the keys, sorted: what tells one key set from another. */
  readonly kids: readonly string[];
}

export interface KeyFileEvents {
  changed(file: string, kids: readonly string[]): void;
  failed(file: string, reason: string): void;
}

export class KeyFile {
  private readonly timer: NodeJS.Timeout;
  private checking: Promise<void> | undefined;
  private lastFailure: string | undefined;

  private constructor(
    private readonly file: string,
    private keys: FileKeys,
    private identity: string,
    private readonly load: (file: string) => Promise<FileKeys>,
    private readonly events: KeyFileEvents | undefined,
    recheckMs: number,
  ) {
    this.timer = setInterval(() => void this.check(), recheckMs);
    this.timer.unref();
  }

  /** Reads the file once (errors are the caller's: a key that cannot be loaded at start is fatal). */
  static async open(file: string, load: (file: string) => Promise<FileKeys>, events?: KeyFileEvents, recheckMs = KEY_RECHECK_MS): Promise<KeyFile> {
    // Identity first: should the file change between the two, the next check sees it and reads again.
    const identity = await fileIdentity(file);
    return new KeyFile(file, await load(file), identity, load, events, recheckMs);
  }

  resolve(header: JWSHeaderParameters): KeyObject {
    return this.keys.resolve(header);
  }

  ready(): boolean {
    return true;
  }

  close(): void {
    clearInterval(this.timer);
  }

  /** Looks at the file now; resolves when done. One check at a time. */
  check(): Promise<void> {
    this.checking ??= this.recheck().finally(() => {
      this.checking = undefined;
    });
    return this.checking;
  }

  private async recheck(): Promise<void> {
    let identity = '';
    try {
      identity = await fileIdentity(this.file);
      if (identity === this.identity) return;
      const next = await this.load(this.file);
      const same = next.kids.join() === this.keys.kids.join();
      this.keys = next;
      this.identity = identity;
      this.lastFailure = undefined;
      if (!same) this.events?.changed(this.file, next.kids);
    } catch (e) {
      const reason = errorReason(e);
      const failure = `${identity}|${reason}`;
      if (failure === this.lastFailure) return;
      this.lastFailure = failure;
      this.events?.failed(this.file, reason);
    }
  }
}
