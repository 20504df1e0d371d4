/**
 * Per-key token buckets like the broker's auth limiters: a new key starts full, so its first
 * request leaves `burst - 1` tokens; tokens refill continuously at `ratePerSec`.
 */
interface Bucket {
  tokens: number;
  at: number;
}

const PRUNE_ABOVE = 10_000;

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number,
    private readonly nowMs: () => number,
  ) {}

  allow(key: string): boolean {
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

  /** Forgets keys whose bucket has refilled: they behave exactly like new keys. */
  private prune(now: number): void {
    for (const [k, b] of this.buckets) {
      if (b.tokens + ((now - b.at) / 1000) * this.ratePerSec >= this.burst) this.buckets.delete(k);
    }
  }
}
