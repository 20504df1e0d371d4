/**
 * The small API that stands in for api.example.com in the embedded default. It answers with the
 * credential it received, so a person can see the sidecar swap the agent's token for the real key
 * — acceptable only because the key is a demo value made up by `dev`.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

const CUSTOMERS: Record<string, { name: string; balance: number; plan: string }> = {
  '12345': { name: 'Lewis Smith', balance: 42.5, plan: 'pro' },
  '67890': { name: 'Jane Doe', balance: 0, plan: 'free' },
  '24680': { name: 'Carlos Reyes', balance: 310.75, plan: 'enterprise' },
};

function looksLikeJwt(v: string | undefined): boolean {
  return typeof v === 'string' && /[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/.test(v);
}

export interface SampleUpstream {
  server: Server;
  port: number;
  close(): Promise<void>;
}

export async function startSampleUpstream(host: string, port: number): Promise<SampleUpstream> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://api.example.com');
    const parts = url.pathname.split('/').filter(Boolean);
    const auth = req.headers.authorization;
    const seen = {
      received_credential: auth ?? url.searchParams.get('api_key') ?? null,
      agent_token_seen: looksLikeJwt(auth) || looksLikeJwt(req.headers['proxy-authorization'] as string | undefined),
    };
    const send = (status: number, body: unknown) => {
      const text = `${JSON.stringify({ ...(body as object), ...seen }, null, 2)}\n`;
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    const drain = () => new Promise<void>((r) => req.resume().once('end', r));
    void drain().then(() => {
      if (parts[0] === 'customers' && parts.length === 1) return send(200, { customers: Object.keys(CUSTOMERS) });
      if (parts[0] === 'customers' && parts.length >= 2) {
        const c = CUSTOMERS[parts[1]];
        if (!c) return send(404, { error: 'no such customer' });
        if (parts.length === 2) return send(200, { id: parts[1], name: c.name, plan: c.plan });
        if (parts[2] === 'billing' && parts.length === 3) return send(200, { customer: parts[1], balance: c.balance, currency: 'USD' });
        if (parts[2] === 'refunds' && req.method === 'POST') return send(201, { customer: parts[1], refund: 'accepted' });
      }
      if (parts[0] === 'accounts' && parts.length === 2) return send(200, { account: parts[1], status: 'active' });
      return send(404, { error: 'not found' });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(err.code === 'EADDRINUSE' ? `sample upstream port ${port} is already in use; pick another with --upstream-port` : err.message)),
    );
    server.listen(port, host, () => resolve());
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
