// BGP-learned prefixes → kernel routes in the host's main table, marked with weft's own bgp
// route protocol so they are told apart from weftd's other routes (87), weft-routed's container
// routes (200) and anything an operator or another daemon wrote.
//
// Ownership: a destination that already has a route of another protocol (the connected subnet,
// an operator's static or default route, …) is never written, at any metric: the operator's
// route wins and the conflict is reported. New routes are created with NLM_F_EXCL, so a route
// that appears between our look and our write makes the kernel refuse rather than be replaced;
// deletes name protocol 88, which the kernel matches, so they can only ever remove our own.
//
// A BGP next hop need not be on a connected network (iBGP across racks: the next hop is the far
// host, reached through a router). Linux does not resolve a gateway recursively, so we do: the
// next hop's connected interface if there is one, else the gateway of the kernel's own best
// (non-BGP) route towards it — what a router's "recursive next hop" does.
import { type Netlink, type NetlinkOp, type Route, isNetlinkError } from '../../netlink/index.js';
import { type Cidr, type IP, cidrContains, formatCidr, formatIP, ipEquals, networkOf } from '../../net/ip.js';

import { WEFT_BGP_ROUTE_PROTOCOL } from '../../dataplane/protocols.js';

/** The part of Netlink this module uses (a model of the kernel stands in for it in unit tests). */
export type KernelRoutes = Pick<Netlink, 'listAddresses' | 'listRoutes' | 'addRoute' | 'applyBatch'>;

export interface LearnedRoute {
  readonly prefix: Cidr;
  readonly nextHop: IP;
}

export interface Resolved {
  readonly gateway: IP;
  readonly oif: number;
}

/**
 * One look at the kernel's IPv4 addresses and main table: next hop → (gateway, device), and
 * which destinations another protocol's routes hold.
 */
export class KernelView {
  private readonly connected: { net: Cidr; index: number; local: IP }[];
  private readonly routes: Route[];
  /** Destination → rtm_protocol of a route we do not own there (the lowest metric's). */
  private readonly foreign = new Map<string, number>();
  private readonly cache = new Map<string, Resolved | undefined>();

  constructor(nl: KernelRoutes) {
    // IPv6 link-local addresses are every link's: no learnt prefix or next hop is judged by them.
    this.connected = [...nl.listAddresses({ family: 4 }), ...nl.listAddresses({ family: 6 }).filter((a) => a.scope === 0)]
      .map((a) => ({ net: networkOf(a.cidr), index: a.index, local: a.cidr.ip }));
    const all = [...nl.listRoutes({ family: 4 }), ...nl.listRoutes({ family: 6 })];
    this.routes = all.filter((r) => r.protocol !== WEFT_BGP_ROUTE_PROTOCOL && r.type === 'unicast');
    for (const r of all) {
      const k = formatCidr(r.dst);
      if (r.protocol !== WEFT_BGP_ROUTE_PROTOCOL && !this.foreign.has(k)) this.foreign.set(k, r.protocol);
    }
  }

  /** The subnets this host is connected to (its addresses' networks), for the import policy. */
  connectedSubnets(): Cidr[] {
    const seen = new Map<string, Cidr>();
    for (const c of this.connected) seen.set(formatCidr(c.net), c.net);
    return [...seen.values()];
  }

  /** The protocol of another owner's route at exactly this destination, if there is one. */
  ownerOf(prefix: Cidr): number | undefined {
    return this.foreign.get(formatCidr(prefix));
  }

  resolve(nh: IP): Resolved | undefined {
    const k = formatIP(nh);
    if (this.cache.has(k)) return this.cache.get(k);
    let out: Resolved | undefined;
    // Longest connected network first: a /32 host address must not shadow the real segment.
    const conn = this.connected.filter((c) => c.net.ip.family === nh.family && cidrContains(c.net, nh) && !ipEquals(c.local, nh)).sort((a, b) => b.net.prefix - a.net.prefix)[0];
    if (conn) out = { gateway: nh, oif: conn.index };
    else {
      const via = this.routes.filter((r) => r.gateway !== undefined && r.oif !== undefined && r.dst.ip.family === nh.family && cidrContains(r.dst, nh))
        .sort((a, b) => b.dst.prefix - a.dst.prefix || (a.priority ?? 0) - (b.priority ?? 0))[0];
      if (via?.gateway !== undefined && via.oif !== undefined) out = { gateway: via.gateway, oif: via.oif };
    }
    this.cache.set(k, out);
    return out;
  }
}

export interface KernelSyncResult {
  readonly written: number;
  readonly removed: number;
  /** Destinations left to another protocol's route: prefix → that route's rtm_protocol. */
  readonly held: ReadonlyMap<string, number>;
  /** Prefixes whose next hop has no way out of this host (no route installed), and kernel refusals. */
  readonly problems: readonly string[];
}

export interface RouteWrite {
  readonly prefix: Cidr;
  readonly via: Resolved;
}

export interface WriteResult {
  /** Kernel requests made (replaces and adds). */
  readonly writes: number;
  /** Prefixes that now carry our route. */
  readonly installed: readonly string[];
  /** Prefixes left alone because another protocol's route holds the destination. */
  readonly held: ReadonlyMap<string, number>;
  readonly problems: readonly string[];
}

/** `proto static (4)` — the name `ip route` prints, where it has one. */
export function describeProtocol(p: number): string {
  const names: Record<number, string> = { 1: 'redirect', 2: 'kernel', 3: 'boot', 4: 'static', 16: 'dhcp', 87: 'weftd', 186: 'bgp (other)', 200: 'weft-routed' };
  return names[p] ? `proto ${names[p]} (${p})` : `proto ${p}`;
}

/**
 * Writes our routes and never another protocol's: destinations where we already hold the
 * route (`ours`) are replaced in one batch; any other is skipped when the view shows a foreign
 * route there, else created with NLM_F_EXCL. An EEXIST then means someone was quicker: the
 * destination is looked at again and left alone unless the route there turns out to be ours.
 */
export function writeRoutes(nl: KernelRoutes, view: KernelView, writes: readonly RouteWrite[], ours: ReadonlySet<string>): WriteResult {
  const installed: string[] = [];
  const held = new Map<string, number>();
  const problems: string[] = [];
  const replace: RouteWrite[] = [];
  let count = 0;
  const raced: RouteWrite[] = [];
  for (const w of writes) {
    const k = formatCidr(w.prefix);
    const owner = view.ownerOf(w.prefix);
    if (owner !== undefined) { held.set(k, owner); continue; }
    if (ours.has(k)) { replace.push(w); continue; }
    count++;
    try {
      nl.addRoute(routeSpec(w.prefix, w.via));
      installed.push(k);
    } catch (err) {
      if (isNetlinkError(err, 'EEXIST')) raced.push(w);
      else problems.push(err instanceof Error ? err.message : String(err));
    }
  }
  if (raced.length > 0) {
    const now = new Map<string, number>();
    for (const r of [...nl.listRoutes({ family: 4 }), ...nl.listRoutes({ family: 6 })]) {
      const k = formatCidr(r.dst);
      if (!now.has(k) || r.protocol !== WEFT_BGP_ROUTE_PROTOCOL) now.set(k, r.protocol);
    }
    for (const w of raced) {
      const k = formatCidr(w.prefix);
      const owner = now.get(k);
      if (owner === WEFT_BGP_ROUTE_PROTOCOL) replace.push(w);
      else held.set(k, owner ?? 0);
    }
  }
  if (replace.length > 0) {
    count += replace.length;
    const results = nl.applyBatch(replace.map((w) => ({ op: 'replaceRoute', route: routeSpec(w.prefix, w.via) })));
    results.forEach((err, i) => {
      const w = replace[i];
      if (!w) return;
      if (err) problems.push(err.message);
      else installed.push(formatCidr(w.prefix));
    });
  }
  return { writes: count, installed, held, problems };
}

/**
 * Makes the bgp-protocol routes equal to `want`, as far as other protocols' routes let it.
 * `keepUnknown`: leave bgp routes that `want` does not name (during a graceful restart, before
 * the peers have resent their tables). `view`: a look at the kernel taken just before.
 */
export function syncBgpRoutes(nl: KernelRoutes, want: readonly LearnedRoute[], opts: { keepUnknown: boolean; view?: KernelView }): KernelSyncResult {
  const have = new Map<string, Route>();
  for (const f of [4, 6] as const) for (const r of nl.listRoutes({ family: f, protocol: WEFT_BGP_ROUTE_PROTOCOL })) have.set(formatCidr(r.dst), r);
  const view = opts.view ?? new KernelView(nl);
  const writes: RouteWrite[] = [];
  const problems: string[] = [];
  const wanted = new Set<string>();
  for (const w of want) {
    const k = formatCidr(w.prefix);
    const res = view.resolve(w.nextHop);
    if (!res) {
      problems.push(`bgp: ${k} via ${formatIP(w.nextHop)}: no route to the next hop; not installed`);
      continue;
    }
    wanted.add(k);
    const h = have.get(k);
    if (h && h.gateway !== undefined && ipEquals(h.gateway, res.gateway) && h.oif === res.oif && !h.nexthops?.length) continue;
    writes.push({ prefix: w.prefix, via: res });
  }
  const out = writeRoutes(nl, view, writes, new Set(have.keys()));
  problems.push(...out.problems);
  for (const [k, p] of out.held) problems.push(`bgp: ${k} is held by another route in the kernel (${describeProtocol(p)}); not replaced`);
  let removed = 0;
  if (!opts.keepUnknown) {
    const ops: NetlinkOp[] = [];
    for (const [k, h] of have) {
      if (wanted.has(k)) continue;
      ops.push(deleteOp(h.dst));
      removed++;
    }
    if (ops.length > 0) for (const err of nl.applyBatch(ops)) if (err) problems.push(err.message);
  }
  return { written: out.installed.length, removed, held: out.held, problems };
}

function routeSpec(prefix: Cidr, res: Resolved): Parameters<Netlink['addRoute']>[0] {
  return { dst: prefix, gateway: res.gateway, oif: res.oif, protocol: WEFT_BGP_ROUTE_PROTOCOL, scope: 'universe' };
}

export function deleteOp(prefix: Cidr): NetlinkOp {
  return { op: 'deleteRoute', route: { dst: prefix, protocol: WEFT_BGP_ROUTE_PROTOCOL } };
}

/** Every bgp-protocol route (backend shut down without keeping the dataplane). */
export function removeBgpRoutes(nl: KernelRoutes): number {
  const routes = [...nl.listRoutes({ family: 4, protocol: WEFT_BGP_ROUTE_PROTOCOL }), ...nl.listRoutes({ family: 6, protocol: WEFT_BGP_ROUTE_PROTOCOL })];
  if (routes.length > 0) nl.applyBatch(routes.map((r) => deleteOp(r.dst)));
  return routes.length;
}
