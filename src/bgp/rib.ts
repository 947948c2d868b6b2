// Routing information bases (RFC 4271 §3.2): Adj-RIB-In per peer, the Loc-RIB with the decision
// process, and the export policy that fills each peer's Adj-RIB-Out — iBGP split horizon and
// route reflection (RFC 4456). Graceful-restart staleness (RFC 4724) lives here too, because a
// stale route must keep winning until it is replaced or swept. Routes of both address families
// share the tables: a prefix's key is its text, and no IPv4 prefix is written like an IPv6 one.
import { type Cidr, type IP, formatCidr, formatIP, ipCompare, ipEquals } from '../net/ip.js';
import type { AsPathSegment, PathAttributes } from './codec.js';
import { type AddressFamily, familyOf } from './family.js';
import { type ImportRejection, sameRejection } from './policy.js';

export interface PeerInfo {
  /** Stable key: the peer's address as text. */
  id: string;
  address: IP;
  asn: number;
  bgpId: IP;
  /** Route-reflector client (meaningful for iBGP peers only). */
  rrClient: boolean;
}

/** Where a route came from: one of our own announcements, or a peer. */
export type RouteSource = { kind: 'local' } | { kind: 'peer'; peer: PeerInfo };

export interface Route {
  prefix: Cidr;
  key: string;
  source: RouteSource;
  attributes: PathAttributes;
  /** Kept over a peer's graceful restart; swept by End-of-RIB or the restart timer. */
  stale: boolean;
  /** Refused by the import policy: held in the peer's Adj-RIB-In only, never a candidate. */
  rejected?: ImportRejection | undefined;
}

/** A learned route the import policy has just refused (or refused for another reason than before). */
export interface RefusedRoute {
  peer: PeerInfo;
  prefix: Cidr;
  rejection: ImportRejection;
}

export type BestChange =
  | { type: 'best-changed'; prefix: Cidr; key: string; route: Route; previous: Route | undefined }
  | { type: 'best-removed'; prefix: Cidr; key: string; previous: Route };

export interface RibConfig {
  asn: number;
  routerId: IP;
  /** RFC 4456 cluster id; defaults to the router id. */
  clusterId?: IP | undefined;
  /** The import policy (see policy.ts): why a learned route may not be used, or undefined. */
  importCheck?: ((prefix: Cidr, attributes: PathAttributes, peer: PeerInfo) => ImportRejection | undefined) | undefined;
}

export const DEFAULT_LOCAL_PREF = 100;

export function prefixKey(c: Cidr): string {
  return formatCidr(c);
}

export function asPathLength(path: readonly AsPathSegment[]): number {
  let n = 0;
  // RFC 4271 §9.1.2.2: a set counts as one AS; confederation segments do not count.
  for (const s of path) n += s.type === 'sequence' ? s.asns.length : s.type === 'set' ? 1 : 0;
  return n;
}

/** The AS the route was learned from, for the MED comparison; undefined for routes from our own AS. */
function neighbourAs(path: readonly AsPathSegment[]): number | undefined {
  const first = path.find((s) => s.type === 'sequence' || s.type === 'set');
  return first?.type === 'sequence' ? first.asns[0] : undefined;
}

export class Rib {
  private readonly adjIn = new Map<string, Map<string, Route>>();
  /** Every candidate for a prefix, by source id ('' for local). */
  private readonly candidates = new Map<string, Map<string, Route>>();
  private readonly best = new Map<string, Route>();
  readonly clusterId: IP;

  constructor(private readonly cfg: RibConfig) {
    this.clusterId = cfg.clusterId ?? cfg.routerId;
  }

  isIbgp(peer: PeerInfo): boolean {
    return peer.asn === this.cfg.asn;
  }

  // ------------------------------------------------------------ decision process

  /** Negative when a is preferred over b (RFC 4271 §9.1.2.2 plus RFC 4456 §9 tie-breaks). */
  compare(a: Route, b: Route): number {
    if (a.source.kind !== b.source.kind) return a.source.kind === 'local' ? -1 : 1;
    const lpA = a.attributes.localPref ?? DEFAULT_LOCAL_PREF;
    const lpB = b.attributes.localPref ?? DEFAULT_LOCAL_PREF;
    if (lpA !== lpB) return lpB - lpA;
    const lenA = asPathLength(a.attributes.asPath);
    const lenB = asPathLength(b.attributes.asPath);
    if (lenA !== lenB) return lenA - lenB;
    if (a.attributes.origin !== b.attributes.origin) return a.attributes.origin - b.attributes.origin;
    const nA = neighbourAs(a.attributes.asPath);
    if (nA === neighbourAs(b.attributes.asPath)) {
      const mA = a.attributes.med ?? 0;
      const mB = b.attributes.med ?? 0;
      if (mA !== mB) return mA - mB;
    }
    if (a.source.kind === 'peer' && b.source.kind === 'peer') {
      const eA = !this.isIbgp(a.source.peer);
      const eB = !this.isIbgp(b.source.peer);
      if (eA !== eB) return eA ? -1 : 1;
      const idA = a.attributes.originatorId ?? a.source.peer.bgpId;
      const idB = b.attributes.originatorId ?? b.source.peer.bgpId;
      const c = ipCompare(idA, idB);
      if (c !== 0) return c;
      const clA = a.attributes.clusterList?.length ?? 0;
      const clB = b.attributes.clusterList?.length ?? 0;
      if (clA !== clB) return clA - clB;
      return ipCompare(a.source.peer.address, b.source.peer.address);
    }
    return 0;
  }

  private reselect(prefix: Cidr, key: string): BestChange | undefined {
    const cands = this.candidates.get(key);
    const old = this.best.get(key);
    if (!cands || cands.size === 0) {
      this.candidates.delete(key);
      if (!old) return undefined;
      this.best.delete(key);
      return { type: 'best-removed', prefix, key, previous: old };
    }
    let winner: Route | undefined;
    for (const r of cands.values()) if (!winner || this.compare(r, winner) < 0) winner = r;
    if (!winner || winner === old) return undefined;
    this.best.set(key, winner);
    return { type: 'best-changed', prefix, key, route: winner, previous: old };
  }

  private put(route: Route, sourceId: string): BestChange | undefined {
    let cands = this.candidates.get(route.key);
    if (!cands) this.candidates.set(route.key, (cands = new Map()));
    cands.set(sourceId, route);
    return this.reselect(route.prefix, route.key);
  }

  private remove(prefix: Cidr, key: string, sourceId: string): BestChange | undefined {
    const cands = this.candidates.get(key);
    if (!cands?.delete(sourceId)) return undefined;
    return this.reselect(prefix, key);
  }

  // ------------------------------------------------------------ local routes

  addLocal(prefix: Cidr, attributes: PathAttributes): BestChange | undefined {
    const key = prefixKey(prefix);
    return this.put({ prefix, key, source: { kind: 'local' }, attributes, stale: false }, '');
  }

  removeLocal(prefix: Cidr): BestChange | undefined {
    return this.remove(prefix, prefixKey(prefix), '');
  }

  // ------------------------------------------------------------ routes from peers

  /**
   * Loop detection on receipt: our AS in the path (eBGP), or our router id as ORIGINATOR_ID or
   * our cluster id in CLUSTER_LIST (reflected routes) make the route unusable. RFC 4271 treats
   * such a route as a withdrawal of any earlier one.
   */
  acceptable(peer: PeerInfo, a: PathAttributes): boolean {
    if (!this.isIbgp(peer) && a.asPath.some((s) => s.asns.includes(this.cfg.asn))) return false;
    if (a.originatorId && ipEquals(a.originatorId, this.cfg.routerId)) return false;
    if (a.clusterList?.some((c) => ipEquals(c, this.clusterId))) return false;
    return true;
  }

  /**
   * Applies one UPDATE's worth of routes from a peer and returns the Loc-RIB changes. Routes the
   * import policy refuses newly (or for a new reason) are appended to `refused`.
   */
  applyUpdate(peer: PeerInfo, withdrawn: readonly Cidr[], attributes: PathAttributes | undefined, nlri: readonly Cidr[], refused?: RefusedRoute[]): BestChange[] {
    const changes: BestChange[] = [];
    let table = this.adjIn.get(peer.id);
    if (!table) this.adjIn.set(peer.id, (table = new Map()));
    for (const prefix of withdrawn) {
      const key = prefixKey(prefix);
      if (!table.delete(key)) continue;
      const c = this.remove(prefix, key, peer.id);
      if (c) changes.push(c);
    }
    if (nlri.length > 0 && attributes) {
      const attrs = this.isIbgp(peer) ? attributes : withoutIbgpAttributes(attributes);
      const usable = this.acceptable(peer, attrs);
      for (const prefix of nlri) {
        const key = prefixKey(prefix);
        if (!usable) {
          if (table.delete(key)) {
            const c = this.remove(prefix, key, peer.id);
            if (c) changes.push(c);
          }
          continue;
        }
        const rejected = this.cfg.importCheck?.(prefix, attrs, peer);
        const before = table.get(key);
        const route: Route = { prefix, key, source: { kind: 'peer', peer }, attributes: attrs, stale: false, rejected };
        table.set(key, route);
        const c = rejected ? this.remove(prefix, key, peer.id) : this.put(route, peer.id);
        if (c) changes.push(c);
        if (rejected && !sameRejection(before?.rejected, rejected)) refused?.push({ peer, prefix, rejection: rejected });
      }
    }
    return changes;
  }

  /**
   * Runs the import policy again over the Adj-RIBs-In (all routes, or those `select` picks)
   * after the policy or its inputs changed: refused routes leave the Loc-RIB, routes no longer
   * refused enter it. Refusals that are new are appended to `refused`.
   */
  reimport(select?: (r: Route) => boolean, refused?: RefusedRoute[]): BestChange[] {
    const changes: BestChange[] = [];
    for (const [peerId, table] of this.adjIn) {
      for (const [key, r] of table) {
        if (select && !select(r)) continue;
        if (r.source.kind !== 'peer') continue;
        const peer = r.source.peer;
        const rejected = this.cfg.importCheck?.(r.prefix, r.attributes, peer);
        if (sameRejection(r.rejected, rejected)) continue;
        const next: Route = { ...r, rejected };
        table.set(key, next);
        const c = rejected ? this.remove(r.prefix, key, peerId) : this.put(next, peerId);
        if (c) changes.push(c);
        if (rejected) refused?.push({ peer, prefix: r.prefix, rejection: rejected });
      }
    }
    return changes;
  }

  /**
   * Graceful restart: keep the peer's routes (of `family` only, when given), but remember they
   * await confirmation. Returns how many were marked.
   */
  markStale(peerId: string, family?: AddressFamily): number {
    const table = this.adjIn.get(peerId);
    if (!table) return 0;
    let n = 0;
    for (const r of table.values()) {
      if (family && familyOf(r.prefix) !== family) continue;
      r.stale = true;
      n++;
    }
    return n;
  }

  /**
   * Drops the peer's routes that are still stale (End-of-RIB received, or restart timer expired);
   * with `family`, only that family's: each family has its own End-of-RIB.
   */
  sweepStale(peerId: string, family?: AddressFamily): BestChange[] {
    const table = this.adjIn.get(peerId);
    if (!table) return [];
    const changes: BestChange[] = [];
    for (const [key, r] of table) {
      if (!r.stale || (family && familyOf(r.prefix) !== family)) continue;
      table.delete(key);
      const c = this.remove(r.prefix, key, peerId);
      if (c) changes.push(c);
    }
    return changes;
  }

  /**
   * The session is gone without graceful restart: every route from the peer goes — or, with
   * `family`, that family's (the peer keeps only the families its restart capability lists).
   */
  dropPeer(peerId: string, family?: AddressFamily): BestChange[] {
    const table = this.adjIn.get(peerId);
    if (!table) return [];
    const changes: BestChange[] = [];
    for (const [key, r] of table) {
      if (family && familyOf(r.prefix) !== family) continue;
      table.delete(key);
      const c = this.remove(r.prefix, key, peerId);
      if (c) changes.push(c);
    }
    if (table.size === 0) this.adjIn.delete(peerId);
    return changes;
  }

  // ------------------------------------------------------------ views

  receivedCount(peerId: string): number {
    return this.adjIn.get(peerId)?.size ?? 0;
  }

  /** Routes from the peer that the import policy refuses. */
  rejectedCount(peerId: string): number {
    let n = 0;
    for (const r of this.adjIn.get(peerId)?.values() ?? []) if (r.rejected) n++;
    return n;
  }

  staleCount(peerId: string): number {
    let n = 0;
    for (const r of this.adjIn.get(peerId)?.values() ?? []) if (r.stale) n++;
    return n;
  }

  bestRoutes(): IterableIterator<Route> {
    return this.best.values();
  }

  bestFor(key: string): Route | undefined {
    return this.best.get(key);
  }

  get size(): number {
    return this.best.size;
  }

  // ------------------------------------------------------------ export (Adj-RIB-Out policy)

  /**
   * The attributes to advertise `route` with to `to`, or undefined when policy forbids it.
   * `nextHopSelf` is our address in the route's family for this session, the next hop towards
   * eBGP peers; without one (an IPv6 route over an IPv4 session, no IPv6 address configured) an
   * eBGP peer cannot be given the route.
   */
  exportFor(route: Route, to: PeerInfo, nextHopSelf: IP | undefined): PathAttributes | undefined {
    const toIbgp = this.isIbgp(to);
    const src = route.source;
    if (src.kind === 'peer') {
      if (src.peer.id === to.id) return undefined;
      if (toIbgp && this.isIbgp(src.peer)) {
        // RFC 4456 §6: reflect client routes to everyone, non-client routes to clients only;
        // without reflection, iBGP routes never go to another iBGP peer (split horizon).
        if (!src.peer.rrClient && !to.rrClient) return undefined;
        return {
          ...route.attributes,
          localPref: route.attributes.localPref ?? DEFAULT_LOCAL_PREF,
          originatorId: route.attributes.originatorId ?? src.peer.bgpId,
          clusterList: [this.clusterId, ...(route.attributes.clusterList ?? [])],
        };
      }
      // Never hand a peer a path that already contains its AS: it would drop it anyway.
      if (!toIbgp && route.attributes.asPath.some((s) => s.asns.includes(to.asn))) return undefined;
    }
    if (toIbgp) {
      const { originatorId: _o, clusterList: _c, ...rest } = route.attributes;
      return { ...rest, localPref: route.attributes.localPref ?? DEFAULT_LOCAL_PREF };
    }
    if (!nextHopSelf) return undefined;
    const { localPref: _lp, originatorId: _o, clusterList: _c, med, ...rest } = route.attributes;
    const out: PathAttributes = { ...rest, asPath: prependAs(this.cfg.asn, route.attributes.asPath), nextHop: nextHopSelf };
    // MED is only meaningful to the neighbouring AS: pass our own, never one learned from elsewhere.
    if (src.kind === 'local' && med !== undefined) out.med = med;
    return out;
  }
}

/**
 * What an eBGP peer's UPDATE may not set for us: LOCAL_PREF has no meaning across ASes (RFC 4271
 * §5.1.5, ours applies instead), and RFC 7606 §7.9/§7.10 discard ORIGINATOR_ID and CLUSTER_LIST
 * from an external peer — they would otherwise take part in our loop detection.
 */
function withoutIbgpAttributes(a: PathAttributes): PathAttributes {
  if (a.localPref === undefined && a.originatorId === undefined && a.clusterList === undefined) return a;
  const { localPref: _lp, originatorId: _o, clusterList: _c, ...rest } = a;
  return rest;
}

export function prependAs(asn: number, path: readonly AsPathSegment[]): AsPathSegment[] {
  const first = path[0];
  if (first && first.type === 'sequence' && first.asns.length < 255) {
    return [{ type: 'sequence', asns: [asn, ...first.asns] }, ...path.slice(1)];
  }
  return [{ type: 'sequence', asns: [asn] }, ...path];
}

/** A stable identity for a set of attributes, used to batch prefixes that share them. */
export function attributesKey(a: PathAttributes): string {
  return JSON.stringify([
    a.origin, a.asPath, a.nextHop && formatIP(a.nextHop), a.med, a.localPref, a.atomicAggregate ?? false,
    a.aggregator && [a.aggregator.asn, formatIP(a.aggregator.address)], a.communities,
    a.originatorId && formatIP(a.originatorId), a.clusterList?.map(formatIP),
    a.unknown?.map((u) => [u.flags, u.code, u.value.toString('hex')]),
  ]);
}
