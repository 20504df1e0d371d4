/**
 * WebSocket upgrades: inside an intercepted tunnel (undici's WebSocket client through the proxy),
 * absolute-form on the proxy port, and on a reverse route. Same policy and credential injection as
 * any request; frames spliced both ways; closed cleanly from either side; audited.
 */
import { connect, type Socket } from 'node:net';
import t from 'tap';
import { ProxyAgent, WebSocket } from 'undici';
import { eventually, openWss, rawRequest, SECRET, startHttpsFixture } from '../helpers/https-fixture.js';
import { startValidateBroker } from '../helpers/validate-broker.js';
import { encodeFrame, FrameReader, OP_CLOSE, OP_TEXT, wsAccept, wsKey } from '../helpers/ws.js';

// bodyTimeout 1 s: a refusal whose body stalls is cut that soon.
const fx = await startHttpsFixture({
  upstream: { bodyTimeout: '1s' },
  extraRoutes: [
    { id: 'chat-stall', host: 'api.example.com', methods: ['GET'], path: '/ws-refuse-stall', scopes: ['read:chat:lobby'], connector: 'billing-api' },
    { id: 'chat-fake', host: 'api.example.com', methods: ['GET'], path: '/ws-fake-101', scopes: ['read:chat:lobby'], connector: 'billing-api' },
  ],
});
t.teardown(() => fx.close());
const token = await fx.token();

function upgradeHead(target: string, key: string, auth: string, extra = ''): string {
  return `GET ${target} HTTP/1.1\r\nHost: api.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${auth}${extra}\r\n`;
}

/** Reads frames from a raw socket after the 101. */
function frames(socket: Socket): { next(): Promise<{ opcode: number; text: string }>; closed: Promise<void> } {
  const reader = new FrameReader();
  const queue: Array<{ opcode: number; text: string }> = [];
  let wake: (() => void) | undefined;
  socket.on('data', (c: Buffer) => {
    for (const f of reader.push(c)) queue.push({ opcode: f.opcode, text: f.payload.toString() });
    wake?.();
  });
  return {
    async next() {
      while (queue.length === 0) await new Promise<void>((r) => (wake = r));
      return queue.shift()!;
    },
    closed: new Promise((r) => socket.once('close', () => r())),
  };
}

function lastSeen(url: string) {
  return [...fx.up.received].reverse().find((r) => r.url === url)!;
}

t.test('wss inside an intercepted tunnel: credential injected, frames both ways, client closes', async (t) => {
  const ws = await openWss(t, fx, token);
  const seen = lastSeen('/ws/lobby');
  t.equal(seen.scheme, 'https', 'upgrade sent over TLS to the upstream');
  t.equal(seen.headers.authorization, `Bearer ${SECRET}`);
  t.equal(seen.headers['proxy-authorization'], undefined);
  t.notOk(JSON.stringify(seen).includes(token));
  const echoed = new Promise<string>((resolve) => {
    ws.onmessage = (e) => resolve(String(e.data));
  });
  ws.send('hello');
  t.equal(await echoed, 'echo:hello');
  const closed = new Promise<number>((resolve) => {
    ws.onclose = (e) => resolve(e.code);
  });
  ws.close(1000);
  t.equal(await closed, 1000, 'clean close handshake relayed');
  await eventually(() => fx.up.wsOpen() === 0);
  await eventually(async () => (await fx.audit()).some((r) => r.type === 'tunnel_closed' && r.outcome === 'websocket' && r.route === 'chat'));
  const records = await fx.audit();
  const decision = records.find((r) => r.type === 'request' && r.route === 'chat' && r.upstream_status === 101);
  t.match(decision, { decision: 'allow', scopes: ['read:chat:lobby'], connector: 'billing-api' });
  const end = records.find((r) => r.type === 'tunnel_closed' && r.request_id === decision?.request_id)!;
  t.ok((end.bytes_in as number) > 0 && (end.bytes_out as number) > 0, 'bytes counted both ways');
  t.type(decision?.tunnel_id, 'string', 'the upgrade names the tunnel it came through');
  t.equal(end.tunnel_id, decision?.tunnel_id, 'and so does the end of the WebSocket');
  t.match(records.find((r) => r.type === 'tunnel' && r.request_id === decision?.tunnel_id), { outcome: 'intercepted' });
});

t.test('ws:// through the proxy (CONNECT to port 80, plain HTTP inside)', async (t) => {
  const agent = new ProxyAgent({ uri: fx.sc.proxyUrl, token: `Bearer ${token}` });
  t.teardown(() => agent.close());
  const ws = new WebSocket('ws://api.example.com/ws/lobby', { dispatcher: agent });
  const echoed = new Promise<string>((resolve, reject) => {
    ws.onopen = () => ws.send('plain');
    ws.onmessage = (e) => resolve(String(e.data));
    ws.onerror = reject;
  });
  t.equal(await echoed, 'echo:plain');
  t.equal(lastSeen('/ws/lobby').scheme, 'http');
  ws.close();
});

t.test('absolute-form upgrade on the proxy port; the upstream closes first', async (t) => {
  const key = wsKey();
  const r = await rawRequest(fx.sc.proxyPort, upgradeHead('http://api.example.com/ws/lobby', key, `Proxy-Authorization: Bearer ${token}\r\n`));
  t.equal(r.status, 101);
  t.match(r.head, new RegExp(`Sec-WebSocket-Accept: ${wsAccept(key).replace(/[+/]/g, '\\$&')}`, 'i'));
  t.match(r.head, /x-request-id: /i);
  const f = frames(r.socket);
  r.socket.write(encodeFrame(OP_TEXT, 'one', true));
  t.same(await f.next(), { opcode: OP_TEXT, text: 'echo:one' });
  r.socket.write(encodeFrame(OP_TEXT, 'bye', true));
  t.equal((await f.next()).opcode, OP_CLOSE, 'server close frame relayed');
  await f.closed;
  t.pass('the client connection closed after the upstream closed');
  t.equal(lastSeen('/ws/lobby').headers.authorization, `Bearer ${SECRET}`);
});

t.test('reverse route upgrade to a wss upstream', async (t) => {
  const r = await rawRequest(fx.sc.proxyPort, upgradeHead('/chat/ws/lobby', wsKey(), `Authorization: Bearer ${token}\r\n`));
  t.equal(r.status, 101);
  const seen = lastSeen('/ws/lobby');
  t.equal(seen.scheme, 'https');
  t.equal(seen.headers.authorization, `Bearer ${SECRET}`);
  t.equal(seen.headers.host, 'api.example.com');
  const f = frames(r.socket);
  r.socket.write(encodeFrame(OP_TEXT, 'rev', true));
  t.same(await f.next(), { opcode: OP_TEXT, text: 'echo:rev' });
  r.socket.end(encodeFrame(OP_CLOSE, Buffer.from([0x03, 0xe8]), true));
  t.equal((await f.next()).opcode, OP_CLOSE);
  await f.closed;
  await eventually(() => fx.up.wsOpen() === 0);
});

t.test('an upgrade the token does not allow is refused before the upstream hears of it', async (t) => {
  const weak = await fx.token(['read:chat:other']);
  const before = fx.up.received.length;
  const r = await rawRequest(fx.sc.proxyPort, upgradeHead('http://api.example.com/ws/lobby', wsKey(), `Proxy-Authorization: Bearer ${weak}\r\n`), { untilClose: true });
  t.equal(r.status, 403);
  t.match(r.head, /content-type: application\/problem\+json/i);
  t.equal(JSON.parse(r.body).error_code, 'scope_violation');
  const anon = await rawRequest(fx.sc.proxyPort, upgradeHead('http://api.example.com/ws/lobby', wsKey(), ''), { untilClose: true });
  t.equal(anon.status, 407);
  t.match(anon.head, /proxy-authenticate: /i);
  t.equal(fx.up.received.length, before);
  const records = await fx.audit();
  t.ok(records.some((r) => r.type === 'request' && r.route === 'chat' && r.error_code === 'scope_violation'), 'refusal audited');
});

t.test("the upstream's refusal of an upgrade is relayed as is", async (t) => {
  const r = await rawRequest(fx.sc.proxyPort, upgradeHead('http://api.example.com/ws-refuse', wsKey(), `Proxy-Authorization: Bearer ${token}\r\n`), { untilClose: true });
  t.equal(r.status, 403);
  t.match(r.head, /x-upstream-refused: yes/i);
  t.equal(r.body, 'not a ws path\n');
});

t.test('a refusal of an upgrade whose body stops coming is cut after upstream.bodyTimeout, both sides', async (t) => {
  const started = Date.now();
  const r = await rawRequest(fx.sc.proxyPort, upgradeHead('http://api.example.com/ws-refuse-stall', wsKey(), `Proxy-Authorization: Bearer ${token}\r\n`), { untilClose: true });
  const ms = Date.now() - started;
  t.equal(r.status, 403);
  t.equal(r.body, 'partial', 'what came was relayed');
  t.ok(ms >= 900 && ms < 4000, `closed after the body timeout (${ms} ms)`);
  await eventually(() => fx.up.stalled.at(-1)?.destroyed === true);
  t.pass('the upstream connection is closed too');
});

t.test('a 101 that does not complete the WebSocket handshake is not spliced: 502, both connections closed', async (t) => {
  for (const [name, target] of [
    ['an accept for another key', 'http://api.example.com/ws-fake-101'],
    ['an Upgrade other than websocket', 'http://api.example.com/ws-fake-101?no-upgrade'],
  ] as const) {
    const r = await rawRequest(fx.sc.proxyPort, upgradeHead(target, wsKey(), `Proxy-Authorization: Bearer ${token}\r\n`), { untilClose: true });
    t.equal(r.status, 502, name);
    t.equal(JSON.parse(r.body).error_code, 'upstream_unreachable', name);
    await eventually(() => fx.up.stalled.at(-1)?.destroyed === true);
    t.pass(`${name}: the upstream connection is closed`);
  }
  const records = await fx.audit();
  t.ok(records.some((r) => r.type === 'request' && r.route === 'chat-fake' && r.error_code === 'upstream_unreachable' && r.upstream_status === 101), 'audited with the 101 it got');
});

t.test('an upgrade without a proper Sec-WebSocket-Key is refused before the upstream hears of it', async (t) => {
  const before = fx.up.received.length;
  for (const key of ['', 'short==', `${wsKey().slice(0, -2)}AA`]) {
    const head = upgradeHead('http://api.example.com/ws/lobby', key, `Proxy-Authorization: Bearer ${token}\r\n`).replace(key === '' ? 'Sec-WebSocket-Key: \r\n' : '\u0000', '');
    const r = await rawRequest(fx.sc.proxyPort, head, { untilClose: true });
    t.equal(r.status, 400, `key ${JSON.stringify(key)}`);
    t.equal(JSON.parse(r.body).error_code, 'bad_request');
  }
  t.equal(fx.up.received.length, before);
});

t.test('only WebSocket upgrades are accepted', async (t) => {
  const r = await rawRequest(
    fx.sc.proxyPort,
    `GET http://api.example.com/ws/lobby HTTP/1.1\r\nHost: api.example.com\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nProxy-Authorization: Bearer ${token}\r\n\r\n`,
    { untilClose: true },
  );
  t.equal(r.status, 400);
  t.equal(JSON.parse(r.body).error_code, 'bad_request');
});

t.test('while an upgrade is being checked (a slow broker)', async (t) => {
  const vb = await startValidateBroker();
  vb.delayMs = 300;
  const slow = await startHttpsFixture({ broker: { verify: 'online', url: vb.url } });
  t.teardown(async () => {
    await slow.close();
    await vb.close();
  });
  const chatRecord = async (id: string | undefined) => (await slow.audit()).find((r) => r.type === 'request' && r.route === 'chat' && (id === undefined || r.request_id === id));

  for (const leave of ['closes', 'half-closes'] as const) {
    t.test(`an agent that ${leave} its connection: nothing is sent upstream`, async (t) => {
      // A token of its own: one the broker answered for recently is not asked about again.
      const tok = await slow.token();
      const before = slow.up.received.length;
      const calls = vb.calls;
      const id = `ws-leaves-${leave}`;
      const s = connect(slow.sc.proxyPort, '127.0.0.1');
      s.on('error', () => {});
      s.write(upgradeHead('http://api.example.com/ws/lobby', wsKey(), `Proxy-Authorization: Bearer ${tok}\r\n`, `X-Request-ID: ${id}\r\n`));
      await new Promise((r) => setTimeout(r, 50));
      if (leave === 'closes') s.destroy();
      else s.end();
      await eventually(async () => (await chatRecord(id)) !== undefined, 5000);
      t.equal(vb.calls, calls + 1, 'the token was checked');
      t.equal(slow.up.received.length, before, 'the upstream never heard of the upgrade');
      t.match(await chatRecord(id), { decision: 'allow', upstream_status: 499 }, 'recorded as allowed, ended by the agent (499)');
      s.destroy();
    });
  }

  t.test('bytes the agent sends before the 101 are kept and sent on after it', { timeout: 10_000 }, async (t) => {
    const tok = await slow.token();
    const s = connect(slow.sc.proxyPort, '127.0.0.1');
    t.teardown(() => s.destroy());
    s.write(upgradeHead('http://api.example.com/ws/lobby', wsKey(), `Proxy-Authorization: Bearer ${tok}\r\n`));
    await new Promise((r) => setTimeout(r, 50));
    // Early, before any answer: no client should, but nothing it sent may be lost.
    s.write(encodeFrame(OP_TEXT, 'early', true));
    let buf = Buffer.alloc(0);
    const reader = new FrameReader();
    const got = new Promise<string>((resolve) => {
      s.on('data', (c: Buffer) => {
        buf = Buffer.concat([buf, c]);
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const frames = reader.push(buf.subarray(end + 4));
        buf = buf.subarray(0, end + 4);
        if (frames.length > 0) resolve(frames[0].payload.toString());
      });
    });
    t.equal(await got, 'echo:early');
    t.match(buf.toString('latin1'), /^HTTP\/1\.1 101 /);
  });

  t.test('an agent that sends more than 64 KiB before the 101 and is refused: its connection is still freed', async (t) => {
    const weak = await slow.token(['read:chat:other']);
    // Connections of the tests before (a spliced WebSocket lingers a moment after its close).
    await eventually(async () => (await slow.sc.openProxyConnections()) === 0, 5000);
    const s = connect(slow.sc.proxyPort, '127.0.0.1');
    s.on('error', () => {});
    s.write(upgradeHead('http://api.example.com/ws/lobby', wsKey(), `Proxy-Authorization: Bearer ${weak}\r\n`));
    await new Promise((r) => setTimeout(r, 50));
    s.write(Buffer.alloc(200 * 1024, 0x61));
    const answer = await new Promise<string>((resolve) => {
      let text = '';
      s.on('data', (c: Buffer) => {
        text += c.toString('latin1');
      });
      s.once('end', () => resolve(text));
    });
    t.match(answer, /^HTTP\/1\.1 403 /);
    s.end();
    await eventually(async () => (await slow.sc.openProxyConnections()) === 0, 3000);
    t.pass('the sidecar closed its end');
  });

});

t.test('at shutdown an open wss WebSocket and its intercepted tunnel are ended, each recorded with close_reason shutdown', async (t) => {
  const own = await startHttpsFixture();
  const ws = await openWss(t, own, await own.token());
  const closed = new Promise((resolve) => {
    ws.onclose = resolve;
  });
  await own.close();
  await closed;
  const ends = (await own.audit()).filter((r) => r.type === 'tunnel_closed');
  t.match(
    ends.map((r) => [r.outcome, r.close_reason]).sort(),
    [
      ['intercepted', 'shutdown'],
      ['websocket', 'shutdown'],
    ],
  );
});
