/**
 * A stand-in for the broker's POST /v1/token/validate, for fault injection: tests flip it to
 * answer valid:false (revocation), fail, stall or go away. The embedded broker is used elsewhere.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type ValidateMode = 'valid' | 'invalid' | 'error500' | 'badjson' | 'slow' | 'hang';

/**
 * A loopback stand-in for the broker's POST /v1/token/validate: answers as told, echoing the
 * token's own claims when valid (the broker returns the payload's claims).
 */
export interface ValidateBroker {
  url: string;
  mode: ValidateMode;
  calls: number;
  /** Extra wait before answering, ms. */
  delayMs: number;
  server: Server;
  close(): Promise<void>;
}

export async function startValidateBroker(mode: ValidateMode = 'valid'): Promise<ValidateBroker> {
  const fb = { mode, calls: 0, delayMs: 0 } as ValidateBroker;
  const handle = (req: IncomingMessage, res: ServerResponse, body: string) => {
    fb.calls++;
    if (req.method !== 'POST' || req.url !== '/v1/token/validate') {
      res.writeHead(404).end();
      return;
    }
    const answer = () => {
      if (fb.mode === 'hang') return;
      if (fb.mode === 'error500') {
        res.writeHead(500, { 'content-type': 'application/problem+json' }).end('{"title":"boom"}');
        return;
      }
      if (fb.mode === 'badjson') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"valid":tru');
        return;
      }
      const { token } = JSON.parse(body) as { token: string };
      const out =
        fb.mode === 'invalid'
          ? '{"valid":false,"error":"token is invalid or expired"}'
          : `{"valid":true,"claims":${Buffer.from(token.split('.')[1], 'base64url').toString('utf8')}}`;
      res.writeHead(200, { 'content-type': 'application/json' }).end(out);
    };
    const wait = fb.mode === 'slow' ? 1000 : fb.delayMs;
    if (wait > 0) setTimeout(answer, wait);
    else answer();
  };
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => {
      body += c;
    });
    req.on('end', () => handle(req, res, body));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  fb.server = server;
  fb.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  fb.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return fb;
}
