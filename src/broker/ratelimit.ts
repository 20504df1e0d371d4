/**
 * Per-key token buckets like the broker's auth limiters: a new key starts full, so its first
 * request leaves `burst - 1` tokens; tokens refill continuously at `ratePerSec`.
 */
import { createHash } from 'node:crypto';

interface Bucket {
  tokens: number;
  at: number;
}

/** From this many keys, buckets that have refilled are forgotten (at most once a second). */
const PRUNE_ABOVE = 10_000;
/** Past this many, the oldest are forgotten too: keys a caller makes up cost bounded memory. */
const MAX_KEYS = 50_000;
/** A key longer than this (a client_id or X-Forwarded-For of a caller's choosing) is kept as its hash. */
const MAX_KEY_LENGTH = 128;

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private prunedAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number,
    private readonly nowMs: () => number,
  ) {}

  allow(given: string): boolean {
    const key = given.length > MAX_KEY_LENGTH ? `#${createHash('sha256').update(given).digest('base64')}` : given;
    const now = this.nowMs();
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= PRUNE_ABOVE) this.prune(now);
      b = { tokens: this.burst, at: now };
      this.buckets.set(key, b);
    } else {
      b.tokens = Math.min(this.burst, b.tokens + (Math.max(0, now - b.at) / 1000) * this.ratePerSec);
      b.at = now;
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  size(): number {
    return this.buckets.size;
  }

  /**
   * Forgets keys whose bucket has refilled: they behave exactly like new keys. Then, above
   * MAX_KEYS, the keys seen first (a forgotten key starts full again, as a new one would).
   */
  private prune(now: number): void {
    if (now - this.prunedAt >= 1000) {
      this.prunedAt = now;
      for (const [k, b] of this.buckets) {
        if (b.tokens + ((now - b.at) / 1000) * this.ratePerSec >= this.burst) this.buckets.delete(k);
      }
    }
    if (this.buckets.size < MAX_KEYS) return;
    for (const k of this.buckets.keys()) {
      this.buckets.delete(k);
      if (this.buckets.size < MAX_KEYS) break;
    }
  }
}
