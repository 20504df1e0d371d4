/**
 * X-Request-ID: an agent's own id is kept when it is short and plain (so traces line up across
 * hops); otherwise a new one is made from a per-process random prefix and a counter — unique and
 * far cheaper than a random value per request.
 */
import { randomBytes } from 'node:crypto';

const SAFE_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const prefix = randomBytes(6).toString('hex');
let counter = 0;

export function nextRequestId(offered: string | string[] | undefined): string {
  if (typeof offered === 'string' && SAFE_ID.test(offered)) return offered;
  counter = (counter + 1) % Number.MAX_SAFE_INTEGER;
  return `${prefix}-${counter.toString(36)}`;
}
