/**
 * A stand-in for the broker's POST /v1/token/validate, for fault injection: tests flip it to
 * answer valid:false (revocation), stall, or go away. The embedded broker is used elsewhere.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ValidateBroker {
  url: string;
  calls: number;
  mode: 'valid' | 'invalid' | 'stall' | 'error';
  server: Server;
  close(): Promise<void>;
}

export async function startValidateBroker(): Promise<ValidateBroker> {
  const state = { calls: 0, mode: 'valid' as ValidateBroker['mode'] };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      state.calls++;
      if (req.url !== '/v1/token/validate' || req.method !== 'POST') {
        res.writeHead(404);
        res.end('404 page not found\n');
        return;
      }
      if (state.mode === 'stall') return; // never answers
      if (state.mode === 'error') {
        res.writeHead(500);
        res.end();
        return;
      }
      const { token } = JSON.parse(Buffer.concat(chunks).toString()) as { token: string };
      if (state.mode === 'invalid') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"valid":false,"error":"token is invalid or expired"}');
        return;
      }
      const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ valid: true, claims }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const vb: ValidateBroker = {
    url: `http://127.0.0.1:${port}`,
    get calls() {
      return state.calls;
    },
    set calls(v) {
      state.calls = v;
    },
    get mode() {
      return state.mode;
    },
    set mode(m) {
      state.mode = m;
    },
    server,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
  return vb;
}
