import t from 'tap';
import { isLoopbackAddress } from '../../src/server.js';

t.test('POST /reload is only accepted from loopback peers', async (t) => {
  for (const a of ['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1']) t.equal(isLoopbackAddress(a), true, a);
  for (const a of ['10.0.0.7', '::ffff:10.0.0.7', 'fe80::1', '128.0.0.1', '', undefined]) t.equal(isLoopbackAddress(a), false, String(a));
});
