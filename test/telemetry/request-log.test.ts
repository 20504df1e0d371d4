import { Writable } from 'node:stream';
import t from 'tap';
import { createLogger, flushLogger, logRequest, type RequestLogFields, requestLine } from '../../src/telemetry/logger.js';

/** A logger from createLogger writing into an array, one entry per line. */
function captured(level = 'info') {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(l);
      cb();
    },
  });
  return { logger: createLogger(level, sink), lines };
}

const full: RequestLogFields = {
  request_id: 'abc-1',
  tunnel_id: 'abc-0',
  decision: 'allow',
  code: 'ok',
  route: 'billing-read',
  method: 'GET',
  host: 'api.example.com',
  path_template: '/customers/{customer}/billing',
  sub: 'spiffe://agentwrit.local/agent/o/t/i',
  task_id: 'task',
  status: 200,
  ms: 0.418,
};

/** pino's own line for the same call, with its time replaced by `time`. */
function pinoLine(fields: RequestLogFields, time: string): string {
  const { logger, lines } = captured();
  logger.info(fields, 'request');
  return lines[0].replace(/"time":"[^"]*"/, `"time":"${time}"`);
}

t.test('the request line is the text pino writes for the same fields', async (t) => {
  const time = '2026-11-24T08:00:00.123Z';
  t.equal(requestLine(full, time), `${pinoLine(full, time)}\n`);
  const deny: RequestLogFields = { request_id: 'r', decision: 'deny', code: 'token_missing', status: 401, ms: 0 };
  t.equal(requestLine(deny, time), `${pinoLine(deny, time)}\n`, 'absent fields are left out, as pino does');
});

t.test('hostile values stay inside their own fields', async (t) => {
  const time = '2026-11-24T08:00:00.123Z';
  const hostile: RequestLogFields = { ...full, sub: 'x","level":"fatal\n\u0000\\', task_id: 'ü\u2028😀\ud800', host: '"}{' };
  const line = requestLine(hostile, time);
  t.equal(line.indexOf('\n'), line.length - 1, 'one line');
  t.same(JSON.parse(line), JSON.parse(pinoLine(hostile, time)));
  t.same(Object.keys(JSON.parse(line)), Object.keys(JSON.parse(pinoLine(hostile, time))), 'same members, same order');
  const extra = { ...full, authorization: 'Bearer secret-token' } as RequestLogFields;
  t.notOk(requestLine(extra, time).includes('secret-token'), 'a field outside the list never appears');
});

t.test('logRequest writes one line at info, none above it, and uses pino for other loggers', async (t) => {
  const on = captured('info');
  logRequest(on.logger, full, '2026-11-24T08:00:00.123Z');
  logRequest(on.logger, { ...full, request_id: 'abc-2' }, '2026-11-24T08:00:00.124Z');
  t.equal(on.lines.length, 0, 'gathered first');
  await new Promise((r) => setImmediate(r));
  t.equal(on.lines.length, 0, 'still gathering after the turn');
  await new Promise((r) => setTimeout(r, 30));
  t.equal(on.lines.length, 2, 'then written together within 10 ms');
  t.equal(JSON.parse(on.lines[1]).request_id, 'abc-2', 'in order');
  t.equal(JSON.parse(on.lines[0]).msg, 'request');
  const off = captured('warn');
  logRequest(off.logger, full, '2026-11-24T08:00:00.123Z');
  flushLogger(off.logger);
  t.equal(off.lines.length, 0);
  const now = captured('info');
  logRequest(now.logger, full, '2026-11-24T08:00:00.123Z');
  flushLogger(now.logger);
  t.equal(now.lines.length, 1, 'flushLogger writes pending lines at once (shutdown)');
  const { pino } = await import('pino');
  const lines: string[] = [];
  const sink = new Writable({
    write(c, _e, cb) {
      lines.push(c.toString());
      cb();
    },
  });
  const other = pino({ level: 'info' }, sink);
  logRequest(other, full, '2026-11-24T08:00:00.123Z');
  t.equal(JSON.parse(lines[0]).request_id, 'abc-1', 'a logger not made here still gets the line, through pino');
});

t.test('a line logged after request lines goes out after them: the log stays in order', async (t) => {
  const { logger, lines } = captured();
  logRequest(logger, { ...full, request_id: 'r-1' }, '2026-11-24T08:00:00.000Z');
  logRequest(logger, { ...full, request_id: 'r-2' }, '2026-11-24T08:00:00.001Z');
  logger.info({ request_id: 't-1' }, 'tunnel closed');
  logRequest(logger, { ...full, request_id: 'r-3' }, '2026-11-24T08:00:00.002Z');
  flushLogger(logger);
  await new Promise((r) => setTimeout(r, 20));
  t.same(
    lines.map((l) => (JSON.parse(l) as { request_id: string }).request_id),
    ['r-1', 'r-2', 't-1', 'r-3'],
  );
});
