/**
 * What an intercepted CONNECT tunnel hands to the requests that travel inside it. Attached to the
 * decrypted socket, read by the request pipeline.
 */
import type { Socket } from 'node:net';

export interface TunnelContext {
  /** CONNECT authority: requests inside must target exactly this host and port (no domain fronting). */
  host: string;
  port: number;
  /**
   * What the tunnel carries: TLS terminated by the sidecar (https, the default) or plain HTTP sent
   * inside the tunnel, as clients that tunnel http:// URLs do (http).
   */
  scheme?: 'http' | 'https';
  /** Token authenticated on the CONNECT, used when a request inside carries none of its own. */
  token?: string;
  /** Request id of the CONNECT: inner requests carry it as tunnel_id in audit records and logs. */
  connectRequestId: string;
}

export const TUNNEL_CONTEXT: unique symbol = Symbol('agentwrit.tunnel');

export function tunnelContextOf(socket: Socket | null | undefined): TunnelContext | undefined {
  return (socket as (Socket & { [TUNNEL_CONTEXT]?: TunnelContext }) | null | undefined)?.[TUNNEL_CONTEXT];
}

export function attachTunnelContext(socket: Socket, ctx: TunnelContext): void {
  (socket as Socket & { [TUNNEL_CONTEXT]?: TunnelContext })[TUNNEL_CONTEXT] = ctx;
}
