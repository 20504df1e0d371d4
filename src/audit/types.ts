/** One decision, as handed to the audit sink. The sink adds seq, prev_hash and hash. */
export interface AuditEvent {
  /** tunnel: a CONNECT decision; tunnel_closed: the end of an allowed tunnel or WebSocket. */
  type: 'request' | 'config_applied' | 'tunnel' | 'tunnel_closed';
  time: string;
  request_id?: string;
  sub?: string;
  jti?: string;
  task_id?: string;
  orch_id?: string;
  deleg_depth?: number;
  chain_root?: string;
  route?: string;
  method?: string;
  host?: string;
  /** The route's path template; the raw path only when audit.recordRawPath is on (field raw_path). */
  path_template?: string;
  raw_path?: string;
  scopes?: string[];
  decision?: 'allow' | 'deny';
  error_code?: string;
  connector?: string;
  upstream_status?: number;
  duration_ms?: number;
  /** Tunnels: bytes from the agent towards the upstream, and back. */
  bytes_in?: number;
  bytes_out?: number;
  /** Tunnels: what was decided (intercepted, passed_through, refused) or spliced (websocket). */
  outcome?: 'intercepted' | 'passed_through' | 'refused' | 'websocket';
  /**
   * Requests and WebSockets inside an intercepted tunnel: the request_id of the CONNECT that opened
   * it, which ties them to that tunnel's `tunnel` and `tunnel_closed` records.
   */
  tunnel_id?: string;
  /** Tunnels: the CONNECT port (host holds the host alone, as for requests). */
  port?: number;
  /** tunnel_closed: why it ended (client_closed, upstream_closed, idle_timeout, sni_mismatch, ...). */
  close_reason?: string;
  /** config_applied */
  generation?: number;
  policy_digest?: string;
}

export interface AuditSink {
  /**
   * Never blocks on disk. Returns false when the sink is failing (queue full or write errors).
   * `served`: the record of something already let through (admitted while the log was healthy, a
   * generation in service, a tunnel's end): with onFailure closed it is kept even while the sink
   * fails, since refusing it would leave a served decision unaudited.
   */
  append(event: AuditEvent, served?: boolean): boolean;
  /** True while records are being written successfully. */
  healthy(): boolean;
  /** Records waiting to be written. */
  queueDepth(): number;
  /** Write everything queued. */
  flush(): Promise<void>;
  close(): Promise<void>;
}
