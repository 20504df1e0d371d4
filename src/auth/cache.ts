/**
 * Bounded LRU of verification answers keyed by a 32-byte token digest.
 *
 * Built for memory and hit cost, since it holds every live token of the pod: digests, deadlines and
 * the recency list live in typed arrays indexed by slot, found through an open-addressing table
 * (linear probing, backward-shift deletion). An entry costs its value plus ~80 bytes, and a hit
 * allocates nothing. A Map keyed by digest strings costs ~60 bytes more per entry.
 *
 * Slots are reused after eviction: never hold a slot across an await; look the key up again.
 */
const WORDS = 8;

export class TokenCache<V> {
  private digests: Uint32Array;
  private deadlines: Float64Array;
  private checks: Float64Array;
  private prev: Int32Array;
  private next: Int32Array;
  private values: (V | undefined)[];
  /** slot + 1, 0 = empty. */
  private table: Int32Array;
  private mask: number;
  private capacity: number;
  /** Most and least recently used slots. */
  private head = -1;
  private tail = -1;
  private free: number[] = [];
  private used = 0;
  private count = 0;
  private readonly probe = new Uint32Array(WORDS);

  constructor(private readonly max: number) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError('cache size must be a positive integer');
    this.capacity = Math.min(max, 256);
    this.digests = new Uint32Array(this.capacity * WORDS);
    this.deadlines = new Float64Array(this.capacity);
    this.checks = new Float64Array(this.capacity);
    this.prev = new Int32Array(this.capacity);
    this.next = new Int32Array(this.capacity);
    this.values = new Array(this.capacity).fill(undefined);
    this.table = new Int32Array(tableSizeFor(this.capacity));
    this.mask = this.table.length - 1;
  }

  get size(): number {
    return this.count;
  }

  /** The slot of `digest` (a 32-char binary string), marked most recently used; -1 when absent. */
  lookup(digest: string): number {
    this.load(digest);
    const slot = this.find();
    if (slot !== -1 && slot !== this.head) {
      this.unlink(slot);
      this.pushHead(slot);
    }
    return slot;
  }

  value(slot: number): V {
    return this.values[slot] as V;
  }
  /** Instant (ms) from which the entry is dead. */
  deadline(slot: number): number {
    return this.deadlines[slot];
  }
  /** Last positive online answer (ms), or -Infinity. */
  checkedAt(slot: number): number {
    return this.checks[slot];
  }

  /** Inserts or replaces; evicts the least recently used entry when full. */
  set(digest: string, value: V, deadline: number, checkedAt: number): void {
    this.load(digest);
    let slot = this.find();
    if (slot === -1) {
      slot = this.allocate();
      this.digests.set(this.probe, slot * WORDS);
      this.place(slot);
      this.count++;
    } else if (slot !== this.head) {
      this.unlink(slot);
    }
    this.values[slot] = value;
    this.deadlines[slot] = deadline;
    this.checks[slot] = checkedAt;
    if (slot !== this.head) this.pushHead(slot);
  }

  delete(digest: string): void {
    this.load(digest);
    const slot = this.find();
    if (slot !== -1) this.release(slot);
  }

  /** Drops every entry dead at `now`; returns how many. */
  prune(now: number): number {
    let removed = 0;
    for (let slot = this.tail; slot !== -1; ) {
      const before = this.prev[slot];
      if (now >= this.deadlines[slot]) {
        this.release(slot);
        removed++;
      }
      slot = before;
    }
    return removed;
  }

  clear(): void {
    this.table.fill(0);
    this.values.fill(undefined);
    this.free = [];
    this.used = 0;
    this.count = 0;
    this.head = this.tail = -1;
  }

  /** Digest string → probe words. */
  private load(digest: string): void {
    if (digest.length !== WORDS * 4) throw new RangeError('cache keys are 32-byte digests');
    const p = this.probe;
    for (let w = 0, c = 0; w < WORDS; w++, c += 4) {
      p[w] = digest.charCodeAt(c) | (digest.charCodeAt(c + 1) << 8) | (digest.charCodeAt(c + 2) << 16) | (digest.charCodeAt(c + 3) << 24);
    }
  }

  private matches(slot: number): boolean {
    const d = this.digests;
    const p = this.probe;
    const base = slot * WORDS;
    for (let w = 0; w < WORDS; w++) if (d[base + w] !== p[w]) return false;
    return true;
  }

  /** Slot holding the probe digest, or -1. The digest is uniformly random, so its first word is the hash. */
  private find(): number {
    const t = this.table;
    for (let i = this.probe[0] & this.mask; ; i = (i + 1) & this.mask) {
      const s = t[i];
      if (s === 0) return -1;
      if (this.matches(s - 1)) return s - 1;
    }
  }

  private home(slot: number): number {
    return this.digests[slot * WORDS] & this.mask;
  }

  private place(slot: number): void {
    let i = this.home(slot);
    while (this.table[i] !== 0) i = (i + 1) & this.mask;
    this.table[i] = slot + 1;
  }

  private unplace(slot: number): void {
    const t = this.table;
    const mask = this.mask;
    let i = this.home(slot);
    while (t[i] !== slot + 1) i = (i + 1) & mask;
    t[i] = 0;
    // Backward-shift: pull later members of the probe run into the hole so lookups never stop early.
    for (let j = (i + 1) & mask; t[j] !== 0; j = (j + 1) & mask) {
      const k = this.home(t[j] - 1);
      const between = i <= j ? i < k && k <= j : i < k || k <= j;
      if (!between) {
        t[i] = t[j];
        t[j] = 0;
        i = j;
      }
    }
  }

  private allocate(): number {
    const reused = this.free.pop();
    if (reused !== undefined) return reused;
    if (this.used < this.capacity) return this.used++;
    if (this.capacity < this.max) {
      this.grow(Math.min(this.max, this.capacity * 2));
      return this.used++;
    }
    this.release(this.tail);
    return this.free.pop() as number;
  }

  private grow(capacity: number): void {
    const digests = new Uint32Array(capacity * WORDS);
    digests.set(this.digests);
    this.digests = digests;
    for (const name of ['deadlines', 'checks'] as const) {
      const a = new Float64Array(capacity);
      a.set(this[name]);
      this[name] = a;
    }
    for (const name of ['prev', 'next'] as const) {
      const a = new Int32Array(capacity);
      a.set(this[name]);
      this[name] = a;
    }
    const values = new Array<V | undefined>(capacity).fill(undefined);
    for (let i = 0; i < this.used; i++) values[i] = this.values[i];
    this.values = values;
    this.capacity = capacity;
    this.table = new Int32Array(tableSizeFor(capacity));
    this.mask = this.table.length - 1;
    for (let slot = this.head; slot !== -1; slot = this.next[slot]) this.place(slot);
  }

  private release(slot: number): void {
    this.unplace(slot);
    this.unlink(slot);
    this.values[slot] = undefined;
    this.free.push(slot);
    this.count--;
  }

  private unlink(slot: number): void {
    const p = this.prev[slot];
    const n = this.next[slot];
    if (p === -1) this.head = n;
    else this.next[p] = n;
    if (n === -1) this.tail = p;
    else this.prev[n] = p;
  }

  private pushHead(slot: number): void {
    this.prev[slot] = -1;
    this.next[slot] = this.head;
    if (this.head !== -1) this.prev[this.head] = slot;
    this.head = slot;
    if (this.tail === -1) this.tail = slot;
  }
}

/** Power of two with load ≤ 0.75 when full: linear probing stays short (SHA-256 words are uniform). */
function tableSizeFor(capacity: number): number {
  let n = 16;
  while (n * 0.75 < capacity) n *= 2;
  return n;
}
