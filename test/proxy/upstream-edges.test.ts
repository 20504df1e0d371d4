/**
 * Upstream behaviour at the edges of HTTP, through a real sidecar: an answer before the request body
 * was read, a pipelined request whose agent leaves, a busy upstream with many waiting, a body queued
 * behind a busy connection, a failure between the response head and its body, a 304 announcing a
 * length, a response cut mid-body for an HTTP/1.0 agent.
 */
import { writeFileSync } from 'node:fs';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import t, { type Test } from 'tap';
import { Pool, request } from 'undici';
import { startTestSidecar, type TestSidecar } from '../helpers/sidecar.js';
import { tempDir } from '../helpers/tmp.js';
import { makeKey, signToken } from '../helpers/tokens.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const key = await makeKey();
const keyFile = `${tempDir('aws-edges-')}/k.pem`;
writeFileSync(keyFile, key.publicPem);
const token = await signToken(key, { scope: ['x:y:z'] });

/** An upstream speaking raw bytes: `onRequest` gets the socket once the first bytes of a request came. */
async function rawUpstream(t: Test, onRequest: (s: Socket) => void): Promise<number> {
  const srv = createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => onRequest(s));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => srv.close());
  return (srv.address() as AddressInfo).port;
}

/** A sidecar with one route taking any method and path on api.example.com, towards `port` (or a helper upstream). */
async function sidecar(t: Test, config: Record<string, unknown> = {}, port?: number) {
  const up = port === undefined ? await startUpstream() : undefined;
  const sc = await startTestSidecar({
    upstreamPort: port ?? (up as Upstream).port,
    broker: { verify: 'offline', publicKeyFile: keyFile },
    config: { shutdown: { grace: '1s' }, ...config },
    policies: [{ version: 'v1', routes: [{ id: 'any', host: 'api.example.com', methods: ['*'], path: '/{rest*}', scopes: ['x:y:z'] }] }],
  });
  t.teardown(async () => {
    await sc.close();
    await up?.close();
  });
  return { sc, up: up as Upstream };
}

function agentPool(t: Test, sc: TestSidecar, connections: number) {
  const pool = new Pool(sc.proxyUrl, { connections, pipelining: 1 });
  t.teardown(() => pool.destroy());
  return (method: string, path: string, body?: Buffer) =>
    pool.request({ method: method as 'GET', path: `http://api.example.com${path}`, headers: { host: 'api.example.com', 'proxy-authorization': `Bearer ${token}` }, body });
}

const head = (method: string, path: string, version = '1.1') =>
  `${method} http://api.example.com${path} HTTP/${version}\r\nHost: api.example.com\r\nProxy-Authorization: Bearer ${token}\r\n\r\n`;

t.test('an upstream that answers before reading the request body: the agent gets the answer and its connection still serves', async (t) => {
  const port = await rawUpstream(t, (s) => {
    s.pause();
    s.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope');
  });
  const { sc } = await sidecar(t, {}, port);
  const send = agentPool(t, sc, 1);
  const first = await send('POST', '/upload', Buffer.alloc(1 << 20));
  t.equal(first.statusCode, 401);
  t.equal(await first.body.text(), 'nope');
  t.equal(first.headers.connection, 'close', 'the connection closes after it: the rest of the body is not read');
  const next = await send('GET', '/next');
  t.equal(next.statusCode, 401, 'the next request is answered (on a new connection)');
  await next.body.dump();
});

t.test('a pipelined request whose agent leaves releases its upstream request; shutdown completes', async (t) => {
  const { sc, up } = await sidecar(t);
  let released = false;
  up.handlers.set('/slow', (_r, res) => setTimeout(() => res.end('ok'), 500));
  up.handlers.set('/stream', (_r, res) => {
    res.on('close', () => {
      released = true;
    });
    const pump = () => {
      while (!released && res.write(Buffer.alloc(65536)));
      if (!released) res.once('drain', pump);
    };
    pump();
  });
  const s = connect(sc.proxyPort, '127.0.0.1', () => s.write(head('GET', '/slow') + head('GET', '/stream')));
  s.on('error', () => {});
  await sleep(200);
  s.destroy();
  const until = Date.now() + 3000;
  while (!released && Date.now() < until) await sleep(20);
  t.ok(released, 'the upstream request was released');
  const metrics = await (await request(`${sc.adminUrl}/metrics`)).body.text();
  t.match(metrics, /^agentwrit_sidecar_inflight_requests 0$/m);
  const closed = await Promise.race([sc.close().then(() => true), sleep(5000).then(() => false)]);
  t.ok(closed, 'close() completes');
});

t.test('a busy upstream: requests beyond those that may wait get 504 at once', async (t) => {
  const { sc, up } = await sidecar(t, { upstream: { connectionsPerOrigin: 1, headersTimeout: '3s' } });
  let finish = () => {};
  up.handlers.set('/events', (_r, res) => {
    res.write('data: x\n\n');
    finish = () => res.end();
  });
  const send = agentPool(t, sc, 600);
  const events = await send('GET', '/events');
  const started = Date.now();
  const codes = await Promise.all(
    Array.from({ length: 520 }, () =>
      send('GET', '/x').then(async (r) => {
        await r.body.dump();
        return { status: r.statusCode, ms: Date.now() - started };
      }),
    ),
  );
  const quick = codes.filter((c) => c.status === 504 && c.ms < 1500).length;
  t.ok(quick >= 8, `those past the waiting limit answered at once (${quick})`);
  t.ok(codes.every((c) => c.status === 504), 'all 504 while the one connection is held');
  finish();
  await events.body.dump();
});

t.test('a request body queued behind a busy connection is not timed out for the wait', async (t) => {
  const { sc, up } = await sidecar(t, { proxy: { requestBodyTimeout: '1s' }, upstream: { connectionsPerOrigin: 1, headersTimeout: '5s' } });
  up.handlers.set('/hold', (_r, res) => {
    res.write('start');
    setTimeout(() => res.end(), 2000);
  });
  const send = agentPool(t, sc, 4);
  const holding = await send('GET', '/hold');
  const post = await send('POST', '/upload', Buffer.alloc(256 * 1024));
  t.equal(post.statusCode, 200, 'sent once the connection was free');
  t.equal(((await post.body.json()) as { body: string }).body.length, 256 * 1024);
  await holding.body.dump();
});

t.test('an upstream that fails after its response head, before any body: 502, not an empty reply', async (t) => {
  const port = await rawUpstream(t, (s) => {
    s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n');
    setTimeout(() => s.destroy(), 50);
  });
  const { sc } = await sidecar(t, {}, port);
  const r = await agentPool(t, sc, 1)('GET', '/dies');
  t.equal(r.statusCode, 502);
  t.equal(((await r.body.json()) as { error_code: string }).error_code, 'upstream_unreachable');
});

t.test('a 304 that announces a Content-Length is relayed as it came', async (t) => {
  const { sc, up } = await sidecar(t);
  up.handlers.set('/etag', (_r, res) => {
    res.writeHead(304, { etag: '"v1"', 'content-length': 50 });
    res.end();
  });
  const r = await agentPool(t, sc, 1)('GET', '/etag');
  t.equal(r.statusCode, 304);
  t.equal(r.headers.etag, '"v1"');
  await r.body.dump();
});

t.test('a response cut mid-body reaches an HTTP/1.0 agent as a reset, not as a shorter response', async (t) => {
  const { sc, up } = await sidecar(t);
  up.handlers.set('/report', (_r, res) => {
    res.write('id,amount\n1,100\n');
    setTimeout(() => res.socket?.destroy(), 100);
  });
  const s = connect(sc.proxyPort, '127.0.0.1', () => s.write(head('GET', '/report', '1.0')));
  const how = await new Promise<string>((resolve) => {
    s.on('end', () => resolve('clean end'));
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    s.resume();
  });
  t.equal(how, 'ECONNRESET');
});

t.test('thirty requests pipelined on one connection that then goes: all counted out, one close listener', async (t) => {
  const { sc, up } = await sidecar(t);
  up.handlers.set('/slow', (_r, res) => setTimeout(() => res.end('ok'), 300));
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(w.name);
  process.on('warning', onWarning);
  t.teardown(() => process.off('warning', onWarning));
  const s = connect(sc.proxyPort, '127.0.0.1', () => s.write(Array.from({ length: 30 }, () => head('GET', '/slow')).join('')));
  s.on('error', () => {});
  await sleep(150);
  s.destroy();
  await sleep(600);
  const metrics = await (await request(`${sc.adminUrl}/metrics`)).body.text();
  t.match(metrics, /^agentwrit_sidecar_inflight_requests 0$/m);
  t.same(warnings.filter((w) => w === 'MaxListenersExceededWarning'), []);
});

t.test('an agent that stops reading a response is cut after proxy.responseReadTimeout: the upstream connection is not held', async (t) => {
  const { sc, up } = await sidecar(t, { proxy: { responseReadTimeout: '1s' } });
  let released = 0;
  let sent = 0;
  up.handlers.set('/endless', (_r, res) => {
    res.on('close', () => {
      released = Date.now();
    });
    const pump = () => {
      while (!released) {
        sent += 65536;
        if (!res.write(Buffer.alloc(65536))) break;
      }
      if (!released) res.once('drain', pump);
    };
    pump();
  });
  const s = connect(sc.proxyPort, '127.0.0.1', () => s.write(head('GET', '/endless')));
  let agentClosed = false;
  s.on('error', () => {});
  s.on('close', () => {
    agentClosed = true;
  });
  // The head and the first bytes are read, then nothing more.
  await new Promise<void>((r) => s.once('data', () => r()));
  s.pause();
  const paused = Date.now();
  while (!released && Date.now() < paused + 6000) await sleep(50);
  t.ok(released, 'the upstream response was abandoned');
  t.ok(sent > 65536, `the agent had stopped reading a response that kept coming (${sent} bytes sent)`);
  t.ok(released - paused >= 900, `not before the limit (${released - paused} ms)`);
  // Reading again, the agent finds its connection closed.
  s.resume();
  const until = Date.now() + 3000;
  while (!agentClosed && Date.now() < until) await sleep(20);
  t.ok(agentClosed, "the agent's connection was closed");
  t.ok(s.bytesRead < sent, `with the response cut short (${s.bytesRead} of ${sent} bytes)`);
  s.destroy();
  await sleep(50);
  t.ok(
    sc.logs.some((l) => l.includes('response cut: the agent read none of it')),
    'a warning says why',
  );
  const metrics = await (await request(`${sc.adminUrl}/metrics`)).body.text();
  t.match(metrics, /^agentwrit_sidecar_inflight_requests 0$/m);
  // The sidecar still serves.
  up.handlers.set('/ok', (_r, res) => res.end('fine'));
  const send = agentPool(t, sc, 1);
  const next = await send('GET', '/ok');
  t.equal(await next.body.text(), 'fine');
});

t.test('an agent that reads a large response slowly but steadily is not cut by proxy.responseReadTimeout', async (t) => {
  const { sc, up } = await sidecar(t, { proxy: { responseReadTimeout: '1s' } });
  const size = 4 * 1024 * 1024;
  // The agent takes a few seconds to read it all: the upstream waits on it again and again.
  up.handlers.set('/large', (_r, res) => {
    res.writeHead(200, { 'content-length': String(size) });
    res.end(Buffer.alloc(size, 0x61));
  });
  // A slow reader: a receive buffer of 256 KiB, 64 KiB every 40 ms (about 1.6 MB/s, over 2 s in all).
  const script = `
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 262144)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.argv[2].encode())
got = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    got += d
    time.sleep(0.04)
head, _, body = got.partition(b"\\r\\n\\r\\n")
print(head.split(b"\\r\\n")[0].decode(), len(body))
`;
  const { execFile } = await import('node:child_process');
  const out = await new Promise<string>((resolve) =>
    execFile('python3', ['-c', script, String(sc.proxyPort), `${head('GET', '/large', '1.0')}`], { timeout: 30_000 }, (err, stdout, stderr) => resolve(err ? stderr : stdout)),
  );
  t.equal(out.trim(), `HTTP/1.1 200 OK ${size}`, 'the whole body arrived');
  t.notOk(sc.logs.some((l) => l.includes('response cut')), 'nothing was cut');
});

/** The request records of the audit log so far. */
async function requestRecords(sc: TestSidecar): Promise<Array<Record<string, unknown>>> {
  await sc.runtime.audit.flush();
  const { readFileSync } = await import('node:fs');
  return readFileSync(sc.auditPath, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((r) => r.type === 'request');
}

/** A raw agent connection to the proxy: what it received so far, and its close. */
function rawAgent(port: number) {
  const s = connect(port, '127.0.0.1');
  s.on('error', () => {});
  let answer = '';
  s.on('data', (d: Buffer) => {
    answer += d.toString('latin1');
  });
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  return { s, answer: () => answer, closed };
}

t.test('a malformed chunk in a body already on its way upstream: one decision, under the id the agent gets', async (t) => {
  const { sc } = await sidecar(t);
  const { s, answer, closed } = rawAgent(sc.proxyPort);
  s.write(`POST http://api.example.com/upload HTTP/1.1\r\nHost: api.example.com\r\nProxy-Authorization: Bearer ${token}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`);
  await sleep(200);
  s.write('zz\r\n');
  await closed;
  t.match(answer(), /^HTTP\/1\.1 400 /, 'a 400');
  const id = /x-request-id: (\S+)/i.exec(answer())?.[1];
  t.ok(id);
  await sleep(100);
  const records = await requestRecords(sc);
  t.equal(records.length, 1, 'one record');
  t.match(records[0], { request_id: id, decision: 'deny', error_code: 'bad_request' });
});

t.test('a body refused after the upstream answered: one record with the refusal and the upstream status', async (t) => {
  // An upstream that answers at once and goes on reading the body.
  const port = await rawUpstream(t, (u) => {
    u.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nearly-');
    u.resume();
  });
  const { sc: sc2 } = await sidecar(t, {}, port);
  const { s, answer, closed } = rawAgent(sc2.proxyPort);
  s.write(
    `POST http://api.example.com/form HTTP/1.1\r\nHost: api.example.com\r\nProxy-Authorization: Bearer ${token}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n4\r\na=1&\r\n`,
  );
  await sleep(300);
  s.write('e\r\n_method=DELETE\r\n0\r\n\r\n');
  await closed;
  t.match(answer(), /^HTTP\/1\.1 200 OK/, 'the answer had begun');
  const id = /x-request-id: (\S+)/i.exec(answer())?.[1];
  await sleep(100);
  const records = await requestRecords(sc2);
  t.equal(records.length, 1, 'one record');
  t.match(records[0], { request_id: id, decision: 'deny', error_code: 'ambiguous_request', upstream_status: 200 });
});

t.test('an upgrade being made counts as in flight: shutdown lets it finish within the grace', async (t) => {
  const { createHash } = await import('node:crypto');
  const key = 'dGhlIHNhbXBsZSBub25jZQ==';
  const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
  // An upstream that takes 700 ms to switch protocols.
  const port = await rawUpstream(t, (u) => {
    setTimeout(() => u.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`), 700);
  });
  const { sc } = await sidecar(t, { shutdown: { grace: '3s' } }, port);
  const { s, answer } = rawAgent(sc.proxyPort);
  s.write(
    `GET http://api.example.com/ws HTTP/1.1\r\nHost: api.example.com\r\nProxy-Authorization: Bearer ${token}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  await sleep(200);
  const metrics = await (await request(`${sc.adminUrl}/metrics`)).body.text();
  t.match(metrics, /^agentwrit_sidecar_inflight_requests 1$/m, 'counted while it is made');
  await sc.close();
  t.match(answer(), /^HTTP\/1\.1 101 /, 'the upgrade completed before the sidecar stopped');
});

t.test('a malformed chunk in a request pipelined behind another: no answer in the earlier one\'s slot', async (t) => {
  const { sc, up } = await sidecar(t);
  up.handlers.set('/slow', (_r, res) => setTimeout(() => res.end('slow answer'), 500));
  const { s, answer, closed } = rawAgent(sc.proxyPort);
  s.write(
    `${head('GET', '/slow')}POST http://api.example.com/upload HTTP/1.1\r\nHost: api.example.com\r\nProxy-Authorization: Bearer ${token}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`,
  );
  await sleep(150);
  s.write('zz\r\n');
  await closed;
  t.notMatch(answer(), /^HTTP\/1\.1 400/, 'the agent does not read a 400 as the answer to its GET');
  await sleep(100);
  const records = await requestRecords(sc);
  t.equal(records.length, 2, 'one record each');
  t.ok(records.some((r) => r.error_code === 'bad_request' && r.method === 'POST'), 'the POST refused');
});
