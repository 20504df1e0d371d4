/**
 * One spelling per IPv6 address, so that `::1` and `0:0:0:0:0:0:0:1` are one host to routes,
 * overlap checks, pass-through entries and certificates alike.
 */
import { isIPv6 } from 'node:net';

/** The compressed lower-case form URL writes, or undefined when `text` is not an IPv6 address (zone ids included). */
export function canonicalIPv6(text: string): string | undefined {
  if (!isIPv6(text) || text.includes('%')) return undefined;
  return new URL(`http://[${text}]/`).hostname.slice(1, -1);
}
