// BGP-learned prefixes → kernel routes in the host's main table, marked with weft's own bgp
// route protocol so they are told apart from weftd's other routes (87), weft-routed's container
// routes (200) and anything an operator or another daemon wrote.
//
// A BGP next hop need not be on a connected network (iBGP across racks: the next hop is the far
// host, reached through a router). Linux does not resolve a gateway recursively, so we do: the
// next hop's connected interface if there is one, else the gateway of the kernel's own best
// (non-BGP) route towards it — what a router's "recursive next hop" does.
import type { Netlink, NetlinkOp, Route } from '../../../netlink/index.js';
import { type Cidr, type IP, cidrContains, formatCidr, formatIP, ipEquals, networkOf } from '../../../net/ip.js';

/** rtm_protocol of the routes the bgp backend writes (`ip route show proto 88`). */
export const WEFT_BGP_ROUTE_PROTOCOL = 88;

export interface LearnedRoute {
  readonly prefix: Cidr;
  readonly nextHop: IP;
}

export interface Resolved {
  readonly gateway: IP;
  readonly oif: number;
}

/** Next hop → (gateway, device) from the kernel's current addresses and routes. */
export class NextHopResolver {
  private readonly connected: { net: Cidr; index: number; local: IP }[];
  private readonly routes: Route[];
  private readonly cache = new Map<string, Resolved | undefined>();

  constructor(nl: Netlink) {
    this.connected = nl.listAddresses({ family: 4 }).map((a) => ({ net: networkOf(a.cidr), index: a.index, local: a.cidr.ip }));
    this.routes = nl.listRoutes({ family: 4 }).filter((r) => r.protocol !== WEFT_BGP_ROUTE_PROTOCOL && r.type === 'unicast');
  }

  resolve(nh: IP): Resolved | undefined {
    const k = formatIP(nh);
    if (this.cache.has(k)) return this.cache.get(k);
    let out: Resolved | undefined;
    // Longest connected network first: a /32 host address must not shadow the real segment.
    const conn = this.connected.filter((c) => cidrContains(c.net, nh) && !ipEquals(c.local, nh)).sort((a, b) => b.net.prefix - a.net.prefix)[0];
    if (conn) out = { gateway: nh, oif: conn.index };
    else {
      const via = this.routes.filter((r) => r.gateway !== undefined && r.oif !== undefined && cidrContains(r.dst, nh))
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
  /** Prefixes whose next hop has no way out of this host (no route installed), and kernel refusals. */
  readonly problems: readonly string[];
}

/**
 * Makes the bgp-protocol routes equal to `want`. `keepUnknown`: leave bgp routes that `want`
 * does not name (during a graceful restart, before the peers have resent their tables).
 */
export function syncBgpRoutes(nl: Netlink, want: readonly LearnedRoute[], opts: { keepUnknown: boolean }): KernelSyncResult {
  const have = new Map<string, Route>();
  for (const r of nl.listRoutes({ family: 4, protocol: WEFT_BGP_ROUTE_PROTOCOL })) have.set(formatCidr(r.dst), r);
  const resolver = new NextHopResolver(nl);
  const ops: NetlinkOp[] = [];
  const problems: string[] = [];
  let written = 0;
  let removed = 0;
  const wanted = new Set<string>();
  for (const w of want) {
    const k = formatCidr(w.prefix);
    const res = resolver.resolve(w.nextHop);
    if (!res) {
      problems.push(`bgp: ${k} via ${formatIP(w.nextHop)}: no route to the next hop; not installed`);
      continue;
    }
    wanted.add(k);
    const h = have.get(k);
    if (h && h.gateway !== undefined && ipEquals(h.gateway, res.gateway) && h.oif === res.oif && !h.nexthops?.length) continue;
    ops.push(replaceOp(w.prefix, res));
    written++;
  }
  if (!opts.keepUnknown) {
    for (const [k, h] of have) {
      if (wanted.has(k)) continue;
      ops.push({ op: 'deleteRoute', route: { dst: h.dst, protocol: WEFT_BGP_ROUTE_PROTOCOL } });
      removed++;
    }
  }
  if (ops.length > 0) for (const err of nl.applyBatch(ops)) if (err) problems.push(err.message);
  return { written, removed, problems };
}

export function replaceOp(prefix: Cidr, res: Resolved): NetlinkOp {
  return { op: 'replaceRoute', route: { dst: prefix, gateway: res.gateway, oif: res.oif, protocol: WEFT_BGP_ROUTE_PROTOCOL, scope: 'universe' } };
}

export function deleteOp(prefix: Cidr): NetlinkOp {
  return { op: 'deleteRoute', route: { dst: prefix, protocol: WEFT_BGP_ROUTE_PROTOCOL } };
}

/** Every bgp-protocol route (backend shut down without keeping the dataplane). */
export function removeBgpRoutes(nl: Netlink): number {
  const routes = nl.listRoutes({ family: 4, protocol: WEFT_BGP_ROUTE_PROTOCOL });
  if (routes.length > 0) nl.applyBatch(routes.map((r) => deleteOp(r.dst)));
  return routes.length;
}
