/**
 * The one place connectors are built. Lifecycle: create (no I/O) -> provision -> use -> dispose.
 * A registry belongs to one configuration generation: it is provisioned completely before the
 * generation goes live, and disposed when the generation is replaced.
 */
import type { ConnectorInput } from '../config/schema.js';
import { explainFailure } from './secrets.js';
import { type ConnectorContext, createStaticConnector } from './static.js';
import type { Connector } from './types.js';

export type { ConnectorContext } from './static.js';

/** Builds a connector from its policy definition; performs no I/O. Throws on a bad definition. */
export function createConnector(def: ConnectorInput, ctx: ConnectorContext): Connector {
  switch (def.type) {
    case 'static':
      return createStaticConnector(def, ctx);
    default:
      throw new Error(`connector ${(def as { name: string }).name}: unknown type ${(def as { type: string }).type}`);
  }
}

export interface ConnectorProblem {
  connector: string;
  message: string;
}

/** Every connector that could not be created or provisioned, each with why (never a secret value). */
export class ConnectorProvisionError extends Error {
  readonly problems: ConnectorProblem[];
  constructor(problems: ConnectorProblem[]) {
    super(problems.map((p) => `connector ${p.connector}: ${p.message}`).join('\n'));
    this.name = 'ConnectorProvisionError';
    this.problems = problems;
  }
}

export class ConnectorRegistry {
  private constructor(
    private readonly connectors: Map<string, Connector>,
    /** Each connector's definition as text (secret paths already absolute): what "unchanged" compares. */
    private readonly defs: Map<string, string>,
  ) {}

  /**
   * Creates and provisions every connector; on any failure disposes the new ones and throws them
   * all. A connector defined exactly as in `current` (the generation in service) is that same
   * connector, already provisioned and following its secrets: a reload that does not touch it does
   * not fail because its secret is unusable for a moment (its requests get 503 meanwhile, as always).
   */
  static async create(defs: ConnectorInput[], ctx: ConnectorContext, current?: ConnectorRegistry): Promise<ConnectorRegistry> {
    const problems: ConnectorProblem[] = [];
    const made = new Map<string, Connector>();
    const texts = new Map<string, string>();
    const fresh: Connector[] = [];
    for (const def of defs) {
      if (made.has(def.name)) {
        problems.push({ connector: def.name, message: 'defined more than once' });
        continue;
      }
      const text = JSON.stringify(def);
      texts.set(def.name, text);
      const same = current?.defs.get(def.name) === text ? current.connectors.get(def.name) : undefined;
      if (same) {
        made.set(def.name, same);
        continue;
      }
      try {
        const c = createConnector(def, ctx);
        made.set(def.name, c);
        fresh.push(c);
      } catch (e) {
        // createConnector's own messages already start with "connector NAME: ".
        problems.push({ connector: def.name, message: explainFailure(e).replace(`connector ${def.name}: `, '') });
      }
    }
    const results = await Promise.allSettled(fresh.map((c) => c.provision()));
    fresh.forEach((c, i) => {
      const r = results[i];
      if (r.status === 'rejected') problems.push({ connector: c.name, message: explainFailure(r.reason) });
    });
    const registry = new ConnectorRegistry(made, texts);
    if (problems.length > 0) {
      await registry.dispose(current);
      throw new ConnectorProvisionError(problems);
    }
    return registry;
  }

  get(name: string): Connector | undefined {
    return this.connectors.get(name);
  }

  names(): string[] {
    return [...this.connectors.keys()];
  }

  /** Disposes every connector, except those `keep` (a generation still in service) shares with this one. */
  async dispose(keep?: ConnectorRegistry): Promise<void> {
    const shared = new Set(keep?.connectors.values());
    await Promise.allSettled([...this.connectors.values()].filter((c) => !shared.has(c)).map((c) => c.dispose()));
  }
}
