/**
 * Trust for upstream TLS: the system CAs, `upstream.caFile`, and a route's `caFile` when it has one.
 *
 * The CA files are followed as they are renewed (a CA bundle from cert-manager's trust-manager, a
 * Kubernetes Secret or ConfigMap update, a replaced file): before a request to an https upstream,
 * each file behind its trust is looked at, at most once a second (a `stat`; requests arriving
 * meanwhile wait for that look). A file whose identity changed is read again; if it still holds
 * certificates that parse, it is the trust for new connections from that request on, and
 * `onRenewed` tells the owner of the connection pools built on the old trust, which should take no
 * new requests (their connections were verified against the old one). A file that is missing or does
 * not parse leaves the current trust in service and is reported once per state of the file.
 */
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import { errorReason, SidecarError } from '../errors.js';
import { fileIdentity, fileIdentitySync, readNamedFile } from '../file-identity.js';

/** How often an upstream CA file is looked at for a renewed bundle. */
export const UPSTREAM_CA_RECHECK_MS = 1000;

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/**
 * Why a CA file's text cannot serve as trust, or undefined when it can: it must hold at least one
 * PEM certificate, and every one must parse. (node's TLS context takes a bundle that is garbage
 * without complaint, and then no certificate verifies.)
 */
export function caBundleProblem(text: string): string | undefined {
  const blocks = text.match(PEM_CERTIFICATE);
  if (!blocks) return 'holds no PEM certificate';
  for (const [i, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch (e) {
      return `certificate ${i + 1} of ${blocks.length} does not parse: ${errorReason(e)}`;
    }
  }
  return undefined;
}

/** What a look at a CA file found: a new bundle in service, or a change that cannot be used. */
export type TrustReport = { file: string; result: 'success' } | { file: string; result: 'failure'; reason: string };

interface FollowedCa {
  readonly path: string;
  pem: string;
  /** fileIdentity of the last state looked at (or why it could not be looked at). */
  identity: string;
  checkedAt: number;
  /** The look under way, if one is. */
  looking: Promise<void> | undefined;
}

export class UpstreamTrust {
  private readonly upstreamCa: FollowedCa | undefined;
  private readonly routeCas = new Map<string, FollowedCa>();
  /** One context per route CA file ('' for none): building one parses every CA (≈17 ms with the system store). */
  private readonly contexts = new Map<string, SecureContext>();

  /**
   * `caFile` is `upstream.caFile`, read now: one that cannot be read or holds no usable certificate
   * throws, naming it. `onRenewed(routeCaFile)` is called after a file changed: with the route's
   * file, for trust that includes it; with undefined when `upstream.caFile` changed, for all of it.
   */
  constructor(
    caFile: string | undefined,
    private readonly onRenewed: (routeCaFile: string | undefined) => void,
    private readonly report: (r: TrustReport) => void = () => {},
  ) {
    if (caFile !== undefined) {
      const pem = readNamedFile(caFile, 'upstream.caFile');
      const problem = caBundleProblem(pem);
      if (problem) throw new Error(`upstream.caFile ${caFile} ${problem}`);
      this.upstreamCa = { path: caFile, pem, identity: fileIdentitySync(caFile), checkedAt: Date.now(), looking: undefined };
    }
  }

  /** The TLS context for an upstream reached with this route CA file (or none). */
  context(routeCaFile?: string): SecureContext {
    const key = routeCaFile ?? '';
    let ctx = this.contexts.get(key);
    if (!ctx) {
      const ca = [...rootCertificates];
      if (this.upstreamCa) ca.push(this.upstreamCa.pem);
      if (routeCaFile !== undefined) ca.push(this.routeCa(routeCaFile).pem);
      ctx = createSecureContext({ ca, minVersion: 'TLSv1.2' });
      this.contexts.set(key, ctx);
    }
    return ctx;
  }

  /**
   * Starts a look at the files behind this trust where one is due. Returns what to wait for before
   * choosing a connection when a look is under way, else undefined (the common case: nothing to wait for).
   */
  follow(routeCaFile?: string): Promise<void> | undefined {
    const now = Date.now();
    const a = this.upstreamCa && this.lookIfDue(this.upstreamCa, now, undefined);
    const f = routeCaFile === undefined ? undefined : this.routeCas.get(routeCaFile);
    const b = f && this.lookIfDue(f, now, routeCaFile);
    return a && b ? Promise.all([a, b]).then(() => {}) : (a ?? b);
  }

  private routeCa(file: string): FollowedCa {
    let f = this.routeCas.get(file);
    if (!f) {
      let pem: string;
      let identity: string;
      try {
        pem = readNamedFile(file, 'route caFile');
        identity = fileIdentitySync(file);
      } catch (e) {
        // Checked when its generation was built (runtime/generation.ts): the file went away since.
        throw new SidecarError('upstream_tls_error', 'the trust for the upstream TLS connection could not be set up', { cause: e });
      }
      f = { path: file, pem, identity, checkedAt: Date.now(), looking: undefined };
      this.routeCas.set(file, f);
    }
    return f;
  }

  private lookIfDue(f: FollowedCa, now: number, routeCaFile: string | undefined): Promise<void> | undefined {
    if (f.looking || now - f.checkedAt < UPSTREAM_CA_RECHECK_MS) return f.looking;
    f.looking = this.look(f, routeCaFile)
      .catch(() => {})
      .finally(() => {
        f.looking = undefined;
        f.checkedAt = Date.now();
      });
    return f.looking;
  }

  private async look(f: FollowedCa, routeCaFile: string | undefined): Promise<void> {
    let identity: string;
    try {
      identity = await fileIdentity(f.path);
    } catch (e) {
      this.failed(f, `unreadable:${errorReason(e)}`, errorReason(e));
      return;
    }
    if (identity === f.identity) return;
    let pem: string;
    try {
      pem = await readFile(f.path, 'utf8');
    } catch (e) {
      this.failed(f, identity, errorReason(e));
      return;
    }
    const problem = caBundleProblem(pem);
    if (problem) {
      this.failed(f, identity, problem);
      return;
    }
    f.identity = identity;
    if (pem === f.pem) return;
    f.pem = pem;
    if (routeCaFile === undefined) this.contexts.clear();
    else this.contexts.delete(routeCaFile);
    this.onRenewed(routeCaFile);
    this.report({ file: f.path, result: 'success' });
  }

  /** A state of the file that cannot serve: reported once, the trust in service stays. */
  private failed(f: FollowedCa, identity: string, reason: string): void {
    if (identity === f.identity) return;
    f.identity = identity;
    this.report({ file: f.path, result: 'failure', reason });
  }
}
