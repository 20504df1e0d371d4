/**
 * TLS material of a running sidecar: the CA (loaded from tls.caDir or generated for this process),
 * the files published for agents (tls.caCertOut, tls.bundleOut) and the leaf cache used to
 * intercept CONNECT tunnels, warmed at start so the first intercepted host pays only its signature.
 */
import type { SecureContext } from 'node:tls';
import { durationMs, type SidecarConfig } from '../config/schema.js';
import type { Logger } from '../telemetry/logger.js';
import type { Metrics } from '../telemetry/metrics.js';
import { type CaMaterial, generateEphemeralCa, loadCaDir, writeCaOutputs } from './ca.js';
import { LeafCache } from './leaf.js';

export interface TlsRuntime {
  /** The CA certificate in PEM (what agents must trust). The key never leaves this module's objects. */
  readonly caCertPem: string;
  readonly caFingerprint256: string;
  /** Where the CA came from. */
  readonly caSource: 'caDir' | 'ephemeral';
  readonly leaves: LeafCache;
  /** A TLS context presenting a leaf for exactly `host`; mints (and counts the mint) on a miss. */
  leafContext(host: string): Promise<SecureContext>;
  /** Throwaway mints done before start returned (see DEFAULT_WARM_ROUNDS). */
  readonly warmRounds: number;
}

export interface TlsRuntimeOptions {
  metrics?: Metrics;
  logger?: Logger;
  /** Throwaway mints to run before start returns, at least 1 (see below). */
  warmRounds?: number;
}

/**
 * Minting runs through a lot of certificate-building code that V8 has not optimized yet when the
 * first hosts arrive: a cold mint costs 2-4 times a warm one (≈5-15 ms against ≈2 ms here). A few
 * dozen throwaway mints get it there before agents do. They run before the sidecar listens: run in
 * the background after start, each held up the requests of its event-loop turn, and the first
 * requests through a fresh sidecar waited up to ≈170 ms behind them. Bounded in time, so a slow
 * machine does not hold the start back for long.
 */
const DEFAULT_WARM_ROUNDS = 40;
const WARM_BUDGET_MS = 400;

export async function startTlsRuntime(cfg: SidecarConfig['tls'], opts: TlsRuntimeOptions = {}): Promise<TlsRuntime> {
  let ca: CaMaterial;
  if (cfg.caDir) {
    ca = await loadCaDir(cfg.caDir);
  } else {
    ca = await generateEphemeralCa();
  }
  await writeCaOutputs(ca, { caCertOut: cfg.caCertOut, bundleOut: cfg.bundleOut });
  const leaves = new LeafCache(ca, { maxEntries: cfg.leafCacheSize, validityMs: durationMs(cfg.leafValidity) });
  // The first round always runs: a CA key that cannot sign is found here, at start.
  await leaves.warm();
  const target = opts.warmRounds ?? DEFAULT_WARM_ROUNDS;
  const warmStart = performance.now();
  let warmRounds = 1;
  while (warmRounds < target && performance.now() - warmStart < WARM_BUDGET_MS) {
    await leaves.warm();
    warmRounds++;
  }
  const caSource = cfg.caDir ? 'caDir' : 'ephemeral';
  opts.logger?.info(
    { ca_subject: ca.subject, ca_fingerprint: ca.fingerprint256, ca_source: caSource, ca_cert_out: cfg.caCertOut, bundle_out: cfg.bundleOut },
    'TLS interception CA ready',
  );

  const metrics = opts.metrics;
  // The cache counts its own mints; mirror new ones into the metrics after each lookup. Under
  // concurrent mints the duration of the latest one stands for each of them.
  let counted = 0;
  const observe = () => {
    const s = leaves.stats();
    if (s.minted === counted || !metrics) return;
    for (let i = counted; i < s.minted; i++) metrics.leafMintDuration.observe(s.lastMintMs / 1000);
    metrics.leafMinted.inc(s.minted - counted);
    counted = s.minted;
  };

  return {
    caCertPem: ca.certPem,
    caFingerprint256: ca.fingerprint256,
    caSource,
    warmRounds,
    leaves,
    async leafContext(host) {
      try {
        return await leaves.get(host);
      } finally {
        observe();
      }
    },
  };
}
