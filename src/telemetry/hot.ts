/**
 * Counters and histograms for the per-request path.
 *
 * prom-client's inc() and observe() check and hash the label object on every call, children from
 * labels() included, which costs more than the arithmetic. These keep one plain record per label
 * set, looked up once by the caller; an update is an addition (and, for a histogram, a bucket
 * search). They join a prom-client Registry through its metric interface (name, help, type, get,
 * reset), so the registry formats them like its own: the exposition is the same text prom-client
 * writes for a Counter or Histogram with the same observations.
 */
import type { Registry } from 'prom-client';

type Labels = Record<string, string>;

interface ExportedValue {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

interface Exported {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  values: ExportedValue[];
  aggregator: 'sum';
}

/** The shared part: a name, label names and one series per distinct label values. */
abstract class HotMetric<S> {
  readonly aggregator = 'sum' as const;
  protected series = new Map<string, { labels: Labels; s: S }>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[],
    registry: Registry,
  ) {
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
  }

  protected abstract fresh(): S;

  /** The series for these label values, in labelNames order; keep it and update it directly. */
  protected seriesOf(values: readonly string[]): S {
    if (values.length !== this.labelNames.length) {
      throw new Error(`${this.name}: expected ${this.labelNames.length} label values, got ${values.length}`);
    }
    const key = values.join('\0');
    let entry = this.series.get(key);
    if (!entry) {
      const labels: Labels = {};
      this.labelNames.forEach((n, i) => {
        labels[n] = values[i];
      });
      entry = { labels, s: this.fresh() };
      this.series.set(key, entry);
    }
    return entry.s;
  }

  /**
   * Drops the series whose `label` value `keep` refuses (a route no longer configured); series
   * handed out before keep counting unseen.
   */
  retain(label: string, keep: (value: string) => boolean): void {
    for (const [key, { labels }] of this.series) if (!keep(labels[label])) this.series.delete(key);
  }

  /** Drops every series (Registry.resetMetrics); series handed out before keep counting unseen. */
  reset(): void {
    this.series = new Map();
  }
}

export interface CounterSeries {
  value: number;
}

export class HotCounter extends HotMetric<CounterSeries> {
  readonly type = 'counter' as const;

  protected fresh(): CounterSeries {
    return { value: 0 };
  }

  /** The series for these label values: `series.value++` counts one. */
  child(...values: string[]): CounterSeries {
    return this.seriesOf(values);
  }

  async get(): Promise<Exported> {
    const values: ExportedValue[] = [];
    for (const { labels, s } of this.series.values()) values.push({ labels: { ...labels }, value: s.value });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

export class HistogramSeries {
  /** Observations per bucket (not cumulative); the last slot is above every bound (+Inf). */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]) i++;
    this.counts[i]++;
    this.sum += v;
    this.count++;
  }
}

export class HotHistogram extends HotMetric<HistogramSeries> {
  readonly type = 'histogram' as const;
  private readonly bounds: readonly number[];

  constructor(name: string, help: string, labelNames: readonly string[], buckets: readonly number[], registry: Registry) {
    super(name, help, labelNames, registry);
    this.bounds = [...buckets].sort((a, b) => a - b);
  }

  protected fresh(): HistogramSeries {
    return new HistogramSeries(this.bounds);
  }

  child(...values: string[]): HistogramSeries {
    return this.seriesOf(values);
  }

  async get(): Promise<Exported> {
    const values: ExportedValue[] = [];
    for (const { labels, s } of this.series.values()) {
      let cumulative = 0;
      this.bounds.forEach((le, i) => {
        cumulative += s.counts[i];
        values.push({ labels: { le, ...labels }, value: cumulative, metricName: `${this.name}_bucket` });
      });
      values.push({ labels: { le: '+Inf', ...labels }, value: s.count, metricName: `${this.name}_bucket` });
      values.push({ labels: { ...labels }, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...labels }, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}
