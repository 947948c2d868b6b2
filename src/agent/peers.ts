// weftd's GET /peers: which peers this host's dataplane has, as the last successful reconcile
// pass left it. The web view (weftctl ui) asks every host for it to draw which links are up.
import { type Cidr, formatCidr, ipCompare, tryParseCidr } from '../net/ip.js';
import type { SkippedPeer } from '../backends/types.js';
import type { Lease } from '../store/lease.js';

export interface PeersDocument {
  /** --node-name, else the hostname. */
  readonly node: string;
  /** This host's leased subnet; null before the lease is held. */
  readonly subnet: string | null;
  /** The backend type; null before the network config is read. */
  readonly backend: string | null;
  /** As /readyz answers. */
  readonly ready: boolean;
  /** Only when not ready: the first of /readyz's reasons, in a line. */
  readonly why?: string;
  /** What the last pass says needs an operator (as /readyz's problems). */
  readonly problems: readonly string[];
  /** Peer subnets the last successful pass programmed, sorted by address. */
  readonly programmed: readonly string[];
  /** Peers that pass did not program, and why, sorted by subnet. */
  readonly skipped: readonly SkippedPeer[];
  /** When that pass ended (ISO 8601); null before the first one. */
  readonly lastReconcile: string | null;
  /** Only while the latest pass failed: its error (programmed is still the last good pass's). */
  readonly reconcileError?: string;
}

/** Which of a pass's peers it programmed, and which it skipped. */
export interface PeerSplit {
  readonly programmed: readonly string[];
  readonly skipped: readonly SkippedPeer[];
}

function compareCidr(a: Cidr, b: Cidr): number {
  return ipCompare(a.ip, b.ip) || a.prefix - b.prefix;
}

/**
 * The peers given to a pass less those it skipped, sorted by address (10.244.9.0/24 before
 * 10.244.10.0/24); the skipped ones sorted alike. One look at each lease, one sort.
 */
export function splitPeers(peers: readonly Lease[], skipped: readonly SkippedPeer[]): PeerSplit {
  const out = new Set(skipped.map((s) => s.subnet));
  const programmed = peers.map((p) => ({ c: p.subnet, k: formatCidr(p.subnet) }))
    .filter((r) => !out.has(r.k))
    .sort((a, b) => compareCidr(a.c, b.c))
    .map((r) => r.k);
  const keyed = skipped.map((s) => ({ s, c: tryParseCidr(s.subnet) }));
  keyed.sort((a, b) => (a.c && b.c ? compareCidr(a.c, b.c) : a.c ? -1 : b.c ? 1 : a.s.subnet < b.s.subnet ? -1 : a.s.subnet > b.s.subnet ? 1 : 0));
  return { programmed, skipped: keyed.map((k) => k.s) };
}
