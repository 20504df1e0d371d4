/**
 * Connections the sidecar answers outside node's HTTP handling (a refused CONNECT, a refused or
 * upstream-refused WebSocket upgrade) are closed after the answer even when the agent never closes
 * its side: a client that keeps them half-open must not hold proxy.maxConnections places for ever.
 */
import { connect, type Socket } from 'node:net';
import t from 'tap';
import { eventually, startHttpsFixture } from '../helpers/https-fixture.js';
import { wsKey } from '../helpers/ws.js';

const fx = await startHttpsFixture();
t.teardown(() => fx.close());
const token = await fx.token();

/** Sends `head` on a connection that never sends its own FIN; resolves with what came back once the sidecar ended its side. */
function halfOpen(head: string): Promise<{ text: string; socket: Socket }> {
  return new Promise((resolve) => {
    const socket = connect({ port: fx.sc.proxyPort, host: '127.0.0.1', allowHalfOpen: true });
    socket.on('error', () => {});
    let text = '';
    socket.on('data', (c: Buffer) => {
      text += c.toString('latin1');
    });
    socket.once('end', () => resolve({ text, socket }));
    socket.write(head);
  });
}

const upgrade = (target: string, auth: string) =>
  `GET ${target} HTTP/1.1\r\nHost: api.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${wsKey()}\r\nSec-WebSocket-Version: 13\r\n${auth}\r\n`;

for (const [name, head, status] of [
  ['a CONNECT without a token', 'CONNECT elsewhere.example:443 HTTP/1.1\r\nHost: elsewhere.example:443\r\n\r\n', 407],
  ['an upgrade without a token', upgrade('http://api.example.com/ws/lobby', ''), 407],
  ['an upgrade the upstream refuses', upgrade('http://api.example.com/ws-refuse', `Proxy-Authorization: Bearer ${token}\r\n`), 403],
] as const) {
  t.test(`${name}: answered, then closed although the agent keeps its side open`, async (t) => {
    await eventually(async () => (await fx.sc.openProxyConnections()) === 0, 5000);
    const { text, socket } = await halfOpen(head);
    t.teardown(() => socket.destroy());
    t.match(text, new RegExp(`^HTTP/1\\.1 ${status} `));
    t.equal(await fx.sc.openProxyConnections(), 1, 'still open right after the answer');
    await eventually(async () => (await fx.sc.openProxyConnections()) === 0, 4000);
    t.pass('closed by the sidecar');
  });
}
