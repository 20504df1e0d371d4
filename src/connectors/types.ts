/** The request that will be sent upstream, mutable until forwarding starts. */
export interface OutboundRequest {
  method: string;
  /** Path plus optional "?query", exactly as it will be sent. */
  path: string;
  /** Lower-case header names. */
  headers: Record<string, string | string[]>;
  origin: { scheme: 'http' | 'https'; host: string; port: number };
  /**
   * Text the credential put into the request line (a query `name=value` pair) that an upstream may
   * echo back in a response header (a redirect keeping the query): never relayed to the agent.
   */
  echoes?: string[];
}

/** An opaque credential value; `expiresAt` (ms epoch) lets caches refresh ahead. */
export interface Credential {
  readonly kind: string;
  readonly expiresAt?: number;
}

export interface CredentialContext {
  routeId: string;
  /** Subject and task of the verified agent, for per-task credentials. */
  sub: string;
  taskId?: string;
  /** Token expiry (unix s): task-keyed credentials must not outlive it. */
  tokenExp: number;
}

/** Lifecycle: create (no I/O) -> provision -> getCredential/apply -> dispose. */
export interface Connector {
  readonly name: string;
  readonly type: string;
  provision(): Promise<void>;
  /** Rejects with SidecarError connector_unavailable when the credential cannot be had. */
  getCredential(ctx: CredentialContext): Promise<Credential>;
  /**
   * The credential getCredential() would resolve with at once, when it is at hand without any
   * I/O or check due; undefined otherwise (then call getCredential). Optional.
   */
  credentialNow?(ctx: CredentialContext): Credential | undefined;
  /** Cheap and synchronous: put the credential on the outbound request. */
  apply(credential: Credential, outbound: OutboundRequest): void;
  dispose(): Promise<void>;
}
