/**
 * Baseline for `npm run bench`: the least a forward proxy can do with the same building blocks
 * (node:http in, an undici Pool out, streaming) — no verification, policy, credential or audit.
 * The sidecar's cost is read against this in the same run.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type Dispatcher, Pool } from 'undici';

const pool = new Pool(`http://127.0.0.1:${process.argv[2]}`, { connections: 64 });
const server = createServer((req, res) => {
  const headers = { ...req.headers };
  delete headers.host;
  delete headers.connection;
  delete headers['proxy-authorization'];
  const target = new URL(req.url ?? '/', 'http://x');
  const handler: Dispatcher.DispatchHandler = {
    onConnect() {},
    onHeaders(status, raw) {
      res.writeHead(status, (raw ?? []).map((b) => b.toString('latin1')));
      return true;
    },
    onData(chunk) {
      return res.write(chunk);
    },
    onComplete() {
      res.end();
    },
    onError() {
      res.destroy();
    },
  };
  pool.dispatch({ path: target.pathname + target.search, method: (req.method ?? 'GET') as Dispatcher.HttpMethod, headers }, handler);
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as AddressInfo).port}\n`));
process.on('SIGTERM', () => process.exit(0));
