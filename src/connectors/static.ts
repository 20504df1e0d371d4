/**
 * The static connector: a long-lived secret put on every request of its routes, as a header
 * (format string, default `Authorization: ${secret}`), a query parameter, or HTTP Basic.
 *
 * getCredential() renders the value once per secret value and hands out the same Credential
 * object until the secret changes, so a request costs a comparison. A secret holding control
 * characters (CR/LF would split a header), or characters a header cannot carry, is refused.
 */
import type { ConnectorInput } from '../config/schema.js';
import { SidecarError } from '../errors.js';
import { CONTROL, headerCannotCarry, NOT_LATIN1 } from '../header-text.js';
import { createSecretReader, type SecretReader, secretUnavailable } from './secrets.js';
import type { Connector, Credential, OutboundRequest } from './types.js';

export interface ConnectorContext {
  /** Relative secret file paths are resolved from here (the policy file's directory). */
  baseDir: string;
  env?: NodeJS.ProcessEnv;
}

interface HeaderCredential extends Credential {
  readonly kind: 'static-header';
  readonly header: string;
  readonly value: string;
  /** The header's name with "_" for some of its "-": CGI-style upstreams read them as the header itself. */
  readonly aliases: readonly string[];
}

/**
 * Every other spelling of `header` with "-" and "_" exchanged, which CGI-style upstreams read as the
 * same variable: `x-api-key` for `x_api_key` and the reverse (none for a name with neither; at most 64).
 */
function underscoreAliases(header: string): string[] {
  const dashed = header.replaceAll('_', '-');
  const parts = dashed.split('-');
  const gaps = Math.min(parts.length - 1, 6);
  const out: string[] = [];
  for (let mask = 1; mask < 1 << gaps; mask++) {
    let name = parts[0];
    for (let i = 1; i < parts.length; i++) name += (i <= gaps && mask & (1 << (i - 1)) ? '_' : '-') + parts[i];
    out.push(name);
  }
  out.push(dashed);
  return out.filter((name) => name !== header);
}

interface QueryCredential extends Credential {
  readonly kind: 'static-query';
  readonly name: string;
  /** "name=value", both percent-encoded. */
  readonly pair: string;
}

type StaticCredential = HeaderCredential | QueryCredential;

/** Headers that frame or route the message: a connector setting them would corrupt the request. */
const FORBIDDEN_HEADERS = new Set([
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'upgrade',
]);

const LONE_SURROGATE = /\p{Cs}/u;
const PLACEHOLDER = '${secret}';

function checkSecret(value: string, source: SecretReader, forHeader: boolean): void {
  if (CONTROL.test(value)) throw secretUnavailable(`secret from ${source.describe()} contains control characters`);
  if (forHeader && NOT_LATIN1.test(value)) {
    throw secretUnavailable(`secret from ${source.describe()} contains characters a header cannot carry`);
  }
  if (LONE_SURROGATE.test(value)) throw secretUnavailable(`secret from ${source.describe()} is not valid text`);
  // A header value loses its leading and trailing whitespace on the wire: the upstream would get another credential.
  if (forHeader && value.trim() !== value) throw secretUnavailable(`secret from ${source.describe()} starts or ends with whitespace, which a header does not keep`);
}

/** Decodes percent-escapes (invalid ones stay as they are) and "+" as space, as form parsers do. */
function looseDecode(s: string): string {
  const plus = s.replaceAll('+', ' ');
  if (!plus.includes('%')) return plus;
  const bytes: number[] = [];
  for (let i = 0; i < plus.length; i++) {
    const c = plus.charCodeAt(i);
    if (c === 0x25 && /^[0-9a-fA-F]{2}$/.test(plus.slice(i + 1, i + 3))) {
      bytes.push(Number.parseInt(plus.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      for (const b of Buffer.from(plus[i], 'utf8')) bytes.push(b);
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

const nameOf = (part: string) => {
  const eq = part.indexOf('=');
  return looseDecode(eq < 0 ? part : part.slice(0, eq));
};
/** How some upstream frameworks read a parameter name: case-insensitively, trimmed, "[]" for lists. */
const loosely = (n: string) => n.trim().toLowerCase().replace(/\[\]$/, '');

/**
 * Replaces every `name` parameter in the path's query (however it was percent-encoded) with
 * `pair`. A copy the agent sent under a name that upstream frameworks may still read as `name` — other
 * case, spaces, a "[]" suffix, or after a ";" that some take for a separator — cannot be told
 * from the credential there: such a request is refused rather than sent with two.
 */
export function setQueryParam(path: string, name: string, pair: string): string {
  const q = path.indexOf('?');
  if (q < 0) return `${path}?${pair}`;
  const wanted = loosely(name);
  const kept = path
    .slice(q + 1)
    .split('&')
    .filter((part) => {
      if (part === '') return false;
      const n = nameOf(part);
      if (n === name) return false;
      if (loosely(n) === wanted || part.split(';').some((p) => loosely(nameOf(p)) === wanted)) {
        throw new SidecarError('bad_request', 'the query holds a parameter that the credential of this request would be confused with');
      }
      return true;
    });
  kept.push(pair);
  return `${path.slice(0, q)}?${kept.join('&')}`;
}

abstract class StaticConnector implements Connector {
  readonly type = 'static';
  private cached: StaticCredential | undefined;
  private cachedFrom: string[] = [];

  constructor(
    readonly name: string,
    private readonly sources: SecretReader[],
  ) {}

  /** Renders the credential from the current secret values; throws connector_unavailable. */
  protected abstract render(values: string[]): StaticCredential;

  async provision(): Promise<void> {
    await this.getCredential();
  }

  credentialNow(): Credential | undefined {
    const c = this.cached;
    if (!c) return undefined;
    for (let i = 0; i < this.sources.length; i++) {
      const v = this.sources[i].peek();
      if (v === undefined || v !== this.cachedFrom[i]) return undefined;
    }
    return c;
  }

  async getCredential(): Promise<Credential> {
    const values = await Promise.all(this.sources.map((s) => s.read()));
    const c = this.cached;
    if (c && values.every((v, i) => v === this.cachedFrom[i])) return c;
    const fresh = this.render(values);
    this.cached = fresh;
    this.cachedFrom = values;
    return fresh;
  }

  apply(credential: Credential, outbound: OutboundRequest): void {
    const c = credential as StaticCredential;
    if (c.kind === 'static-header') {
      // The agent's own copy under another spelling would reach the upstream beside the credential.
      for (const a of c.aliases) if (outbound.headers[a] !== undefined) delete outbound.headers[a];
      outbound.headers[c.header] = c.value;
    }
    else if (c.kind === 'static-query') {
      outbound.path = setQueryParam(outbound.path, c.name, c.pair);
      outbound.echoes = [...(outbound.echoes ?? []), c.pair];
    }
    else throw new TypeError(`connector ${this.name}: not a static credential`);
  }

  async dispose(): Promise<void> {
    this.cached = undefined;
    this.cachedFrom = [];
  }
}

class HeaderConnector extends StaticConnector {
  constructor(
    name: string,
    private readonly secret: SecretReader,
    private readonly header: string,
    private readonly parts: string[],
    private readonly aliases = underscoreAliases(header),
  ) {
    super(name, [secret]);
  }

  protected render([value]: string[]): StaticCredential {
    checkSecret(value, this.secret, true);
    // join, not String.replace: a "$&" inside a secret must stay literal.
    return { kind: 'static-header', header: this.header, value: this.parts.join(value), aliases: this.aliases };
  }
}

class QueryConnector extends StaticConnector {
  constructor(
    name: string,
    private readonly secret: SecretReader,
    private readonly param: string,
  ) {
    super(name, [secret]);
  }

  protected render([value]: string[]): StaticCredential {
    checkSecret(value, this.secret, false);
    return { kind: 'static-query', name: this.param, pair: `${encodeURIComponent(this.param)}=${encodeURIComponent(value)}` };
  }
}

class BasicConnector extends StaticConnector {
  constructor(
    name: string,
    private readonly user: SecretReader,
    private readonly pass: SecretReader,
  ) {
    super(name, [user, pass]);
  }

  protected render([user, pass]: string[]): StaticCredential {
    checkSecret(user, this.user, false);
    checkSecret(pass, this.pass, false);
    // RFC 7617: the user-id cannot contain a colon, the password may.
    if (user.includes(':')) throw secretUnavailable(`user name from ${this.user.describe()} contains ":"`);
    const token = Buffer.from(`${user}:${pass}`, 'utf8').toString('base64');
    return { kind: 'static-header', header: 'authorization', value: `Basic ${token}`, aliases: [] };
  }
}

/** Builds a static connector from its policy definition; reads nothing yet. */
export function createStaticConnector(def: ConnectorInput, ctx: ConnectorContext): Connector {
  const secret = (src: Parameters<typeof createSecretReader>[0]) => createSecretReader(src, ctx.baseDir, ctx.env);
  if ('basic' in def) return new BasicConnector(def.name, secret(def.basic.username), secret(def.basic.password));
  if ('query' in def) return new QueryConnector(def.name, secret(def.secret), def.query);
  const header = def.header ?? 'Authorization';
  const format = def.format ?? PLACEHOLDER;
  if (FORBIDDEN_HEADERS.has(header.toLowerCase())) {
    throw new Error(`connector ${def.name}: header ${header} cannot carry a credential`);
  }
  if (!format.includes(PLACEHOLDER)) throw new Error(`connector ${def.name}: format must contain ${PLACEHOLDER}`);
  if (headerCannotCarry(format)) {
    throw new Error(`connector ${def.name}: format holds characters a header cannot carry`);
  }
  return new HeaderConnector(def.name, secret(def.secret), header.toLowerCase(), format.split(PLACEHOLDER));
}
