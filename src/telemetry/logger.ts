/**
 * Structured logs (pino). Redaction covers every place a credential could sit in what we log, as a
 * second line of defence: the code never passes tokens or secrets to the logger in the first place.
 */
import { pino, type Logger } from 'pino';

export const REDACT_PATHS = [
  'token',
  'secret',
  'password',
  'authorization',
  'cookie',
  '*.token',
  '*.secret',
  '*.password',
  '*.authorization',
  '*.cookie',
  'headers.authorization',
  'headers["proxy-authorization"]',
  'headers.cookie',
  'req.headers.authorization',
  'req.headers["proxy-authorization"]',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
];

export type { Logger };

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'agentwrit-sidecar' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
