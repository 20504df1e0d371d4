/**
 * Trust for upstream TLS: the system CAs, `upstream.caFile`, and a route's `caFile` when it has one.
 *
 * The CA files are followed as they are renewed (a CA bundle from cert-manager's trust-manager, a
 * Kubernetes Secret or ConfigMap update, a replaced file): before a request to an https upstream,
 * each file behind its trust is looked at, at most once a second (a `stat`; requests arriving
 * meanwhile wait for that look, at most LOOK_WAIT_MS). A file whose identity changed is read again;
 * if it held still while it was read and every certificate in it parses, it is the trust for new
 * connections from then on, and `onRenewed` tells the owner of the connection pools built on the old
 * trust, which should take no new requests. A file that is missing, unreadable, changing or does not
 * parse leaves the current trust in service and is reported once per state of the file; it is looked
 * at again a second later, and read again as soon as it can be.
 */
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import { errorReason, SidecarError } from '../errors.js';
import { fileIdentity, fileIdentitySync, readNamedFile } from '../file-identity.js';

/** How often an upstream CA file is looked at for a renewed bundle. */
export const UPSTREAM_CA_RECHECK_MS = 1000;
/** The longest a request waits for a look (a `stat` that hangs, say on a network filesystem). */
export const LOOK_WAIT_MS = 100;

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/**
 * Why a CA file's text cannot serve as trust, or undefined when it can: it must hold at least one
 * PEM certificate, every one must parse, and none may be cut short (a BEGIN line without its END, as
 * a file caught half-written shows). node's TLS context takes a bundle that is garbage without
 * complaint, and then no certificate verifies. Text between certificates (comments) is allowed.
 */
export function caBundleProblem(text: string): string | undefined {
  const blocks = text.match(PEM_CERTIFICATE);
  if (!blocks) return 'holds no PEM certificate';
  const begins = text.split('-----BEGIN').length - 1;
  if (begins !== blocks.length) return `holds ${begins - blocks.length} PEM block(s) without their END line (cut short?)`;
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
  /** fileIdentity of the bundle in service, or of a later state of the file that cannot serve. */
  identity: string;
  /** The last failure reported (so each is reported once), cleared by a bundle that serves. */
  reported: string | undefined;
  checkedAt: number;
  /** The look under way, if one is, and what requests wait for (the look, at most LOOK_WAIT_MS). */
  looking: Promise<void> | undefined;
  waitFor: Promise<void> | undefined;
}

/**
 * Reads a CA file at start or on a route's first use: identity first, so that a change during the
 * read shows as a new identity at the next look; then the text, checked. Throws `what path problem`.
 */
function readBundleSync(path: string, what: string): { pem: string; identity: string } {
  let identity: string;
  try {
    identity = fileIdentitySync(path);
  } catch (e) {
    throw new Error(`${what} ${path} cannot be read: ${errorReason(e)}`);
  }
  const pem = readNamedFile(path, what);
  const problem = caBundleProblem(pem);
  if (problem) throw new Error(`${what} ${path} ${problem}`);
  return { pem, identity };
}

export class UpstreamTrust {
  private readonly upstreamCa: FollowedCa | undefined;
  private readonly routeCas = new Map<string, FollowedCa>();
  /** Route CA files that could not be used on first use: when, why, and the refusal to repeat meanwhile. */
  private readonly unusable = new Map<string, { reason: string; at: number; error: SidecarError }>();
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
    if (caFile !== undefined) this.upstreamCa = followed(caFile, readBundleSync(caFile, 'upstream.caFile'));
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

  /** Lets go of route CA files not in `files` (routes a reload removed): their bundles and contexts. */
  retain(files: ReadonlySet<string>): void {
    for (const map of [this.routeCas, this.unusable, this.contexts]) {
      for (const file of map.keys()) if (file !== '' && !files.has(file)) map.delete(file);
    }
  }

  /**
   * Starts a look at the files behind this trust where one is due. Returns what to wait for before
   * choosing a connection when a look is under way, else undefined (the common case: nothing to wait for).
   */
  follow(routeCaFile?: string): Promise<void> | undefined {
    if (!this.upstreamCa && routeCaFile === undefined) return undefined;
    const now = Date.now();
    const a = this.upstreamCa && this.lookIfDue(this.upstreamCa, now, undefined);
    const f = routeCaFile === undefined ? undefined : this.routeCas.get(routeCaFile);
    const b = f && this.lookIfDue(f, now, routeCaFile);
    return a && b ? Promise.all([a, b]).then(() => {}) : (a ?? b);
  }

  /**
   * A route's CA file, read on first use (it was checked when its generation was built). One that
   * went bad since is reported, and its requests fail as a certificate that does not verify would.
   */
  private routeCa(file: string): FollowedCa {
    let f = this.routeCas.get(file);
    if (f) return f;
    const bad = this.unusable.get(file);
    const now = Date.now();
    // Read again at most once a second, and each reason reported once.
    if (bad && now - bad.at < UPSTREAM_CA_RECHECK_MS) throw bad.error;
    try {
      f = followed(file, readBundleSync(file, 'route caFile'));
    } catch (e) {
      const reason = errorReason(e);
      if (bad?.reason !== reason) this.report({ file, result: 'failure', reason });
      const error = new SidecarError('upstream_tls_error', 'the trust for the upstream TLS connection could not be set up', { cause: e });
      this.unusable.set(file, { reason, at: now, error });
      throw error;
    }
    this.unusable.delete(file);
    this.routeCas.set(file, f);
    return f;
  }

  private lookIfDue(f: FollowedCa, now: number, routeCaFile: string | undefined): Promise<void> | undefined {
    if (f.looking || now - f.checkedAt < UPSTREAM_CA_RECHECK_MS) return f.waitFor;
    const looking = this.look(f, routeCaFile)
      .catch((e) => this.failed(f, undefined, errorReason(e)))
      .finally(() => {
        f.looking = undefined;
        f.waitFor = undefined;
        f.checkedAt = Date.now();
      });
    f.looking = looking;
    f.waitFor = Promise.race([looking, delay(LOOK_WAIT_MS, undefined, { ref: false })]);
    return f.waitFor;
  }

  private async look(f: FollowedCa, routeCaFile: string | undefined): Promise<void> {
    let identity: string;
    try {
      identity = await fileIdentity(f.path);
    } catch (e) {
      this.failed(f, undefined, errorReason(e));
      return;
    }
    if (identity === f.identity) return;
    let pem: string;
    let after: string;
    try {
      pem = await readFile(f.path, 'utf8');
      after = await fileIdentity(f.path);
    } catch (e) {
      // Not remembered as seen: the next look reads it again.
      this.failed(f, undefined, errorReason(e));
      return;
    }
    if (after !== identity) {
      this.failed(f, undefined, 'the file changed while it was read');
      return;
    }
    const problem = caBundleProblem(pem);
    if (problem) {
      // Remembered as seen: read again only once it changes.
      this.failed(f, identity, problem);
      return;
    }
    f.identity = identity;
    f.reported = undefined;
    if (pem === f.pem) return;
    f.pem = pem;
    if (routeCaFile === undefined) this.contexts.clear();
    else this.contexts.delete(routeCaFile);
    this.onRenewed(routeCaFile);
    this.report({ file: f.path, result: 'success' });
  }

  /**
   * A state of the file that cannot serve: the trust in service stays, and the reason is reported
   * unless it was the last one reported. With `identity`, that state is not read again.
   */
  private failed(f: FollowedCa, identity: string | undefined, reason: string): void {
    if (identity !== undefined) f.identity = identity;
    if (reason === f.reported) return;
    f.reported = reason;
    this.report({ file: f.path, result: 'failure', reason });
  }
}

function followed(path: string, read: { pem: string; identity: string }): FollowedCa {
  return { path, ...read, reported: undefined, checkedAt: Date.now(), looking: undefined, waitFor: undefined };
}
