/**
 * Real upstreams for HTTPS tests: one HTTPS server with its own CA (not the sidecar's) presenting
 * leaves for names such as api.example.com, and one plain HTTP server. Both answer with what they
 * received and speak enough WebSocket to echo frames.
 */
import { writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { generateEphemeralCa } from '../../src/tls/ca.js';
import { LeafCache } from '../../src/tls/leaf.js';
import { encodeFrame, FrameReader, OP_CLOSE, OP_TEXT, wsAccept } from './ws.js';

export interface SeenRequest {
  scheme: 'http' | 'https';
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
  servername?: string;
}

export interface EchoUpstreams {
  httpsPort: number;
  httpPort: number;
  /** PEM file of the CA that signed the HTTPS upstream's certificates. */
  caFile: string;
  caPem: string;
  received: SeenRequest[];
  /** WebSocket connections currently open on the upstream side. */
  wsOpen(): number;
  wsMessages: string[];
  /**
   * Sockets of upgrades answered on /ws-refuse-stall (a refusal whose body stops coming) and on
   * /ws-fake-101 (a 101 that does not answer the key, or does not name websocket), and whether each is closed.
   */
  stalled: Duplex[];
  close(): Promise<void>;
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

export async function startEchoUpstreams(dir: string): Promise<EchoUpstreams> {
  const ca = await generateEphemeralCa();
  const leaves = new LeafCache(ca, { maxEntries: 50, validityMs: 3_600_000 });
  const caFile = join(dir, 'upstream-ca.crt');
  writeFileSync(caFile, ca.certPem);
  const received: SeenRequest[] = [];
  const wsMessages: string[] = [];
  const wsSockets = new Set<Duplex>();
  const stalled: Duplex[] = [];

  const onRequest = (scheme: 'http' | 'https') => (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const seen: SeenRequest = {
        scheme,
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
        servername: (req.socket as { servername?: string }).servername,
      };
      received.push(seen);
      const body = JSON.stringify(seen);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-upstream': scheme });
      res.end(body);
    });
  };

  const onUpgrade = (scheme: 'http' | 'https') => (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    received.push({ scheme, method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: '' });
    if (req.url === '/ws-refuse-stall') {
      // A refusal that announces 100 bytes of body, sends 7 and then nothing.
      stalled.push(socket);
      socket.once('end', () => socket.destroy()); // closed once the sidecar closes its side
      socket.write('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\npartial');
      return;
    }
    if (req.url === '/ws-fake-101' || req.url === '/ws-fake-101?no-upgrade') {
      stalled.push(socket);
      socket.once('end', () => socket.destroy());
      const accept = req.url.endsWith('no-upgrade') ? wsAccept(String(req.headers['sec-websocket-key'])) : wsAccept('not the key');
      const upgrade = req.url.endsWith('no-upgrade') ? 'h2c' : 'websocket';
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${upgrade}\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
      return;
    }
    if (!req.url?.startsWith('/ws') || req.url.startsWith('/ws-refuse')) {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 14\r\nx-upstream-refused: yes\r\n\r\nnot a ws path\n');
      return;
    }
    const key = String(req.headers['sec-websocket-key'] ?? '');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${wsAccept(key)}\r\n\r\n`);
    wsSockets.add(socket);
    socket.once('close', () => wsSockets.delete(socket));
    const reader = new FrameReader();
    const onData = (chunk: Buffer) => {
      for (const f of reader.push(chunk)) {
        if (f.opcode === OP_TEXT) {
          const text = f.payload.toString();
          wsMessages.push(text);
          if (text === 'bye') {
            // Server-initiated close.
            socket.end(encodeFrame(OP_CLOSE, Buffer.from([0x03, 0xe8]), false));
          } else {
            socket.write(encodeFrame(OP_TEXT, `echo:${text}`, false));
          }
        } else if (f.opcode === OP_CLOSE) {
          socket.end(encodeFrame(OP_CLOSE, f.payload, false));
        }
      }
    };
    if (head.length > 0) onData(head);
    socket.on('data', onData);
  };

  const https = createHttpsServer(
    {
      SNICallback: (name, cb) => {
        leaves.get(name).then(
          (ctx) => cb(null, ctx),
          (e: Error) => cb(e),
        );
      },
    },
    onRequest('https'),
  );
  https.on('upgrade', onUpgrade('https'));
  const http = createHttpServer(onRequest('http'));
  http.on('upgrade', onUpgrade('http'));
  const httpsPort = await listen(https);
  const httpPort = await listen(http);
  const sockets = new Set<Socket>();
  for (const s of [https, http]) s.on('connection', (c: Socket) => {
    sockets.add(c);
    c.once('close', () => sockets.delete(c));
  });
  https.on('secureConnection', (c: Socket) => {
    sockets.add(c);
    c.once('close', () => sockets.delete(c));
  });
  return {
    httpsPort,
    httpPort,
    caFile,
    caPem: ca.certPem,
    received,
    wsOpen: () => wsSockets.size,
    wsMessages,
    stalled,
    async close() {
      for (const s of [...sockets, ...wsSockets, ...stalled]) s.destroy();
      await Promise.all([https, http].map((s) => new Promise((r) => s.close(() => r(undefined)))));
    },
  };
}
