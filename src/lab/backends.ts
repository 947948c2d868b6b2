// What each backend needs from the lab, as a table other backends (bgp) extend with one
// registerLabBackend call: the network config weftd reads from the store (none when the backend
// runs no agent), the conflist a runtime would use on each host, and when a host counts as
// converged (its routes to every other host are in place).
import { Netlink } from '../netlink/index.js';
import { WEFT_BGP_ROUTE_PROTOCOL, WEFT_ROUTE_PROTOCOL } from '../dataplane/protocols.js';
import { type Cidr, cidrEquals, formatCidr, formatIP, ipAdd, ipFromValue, networkOf, parseCidr, parseIPv4, rangeToCidrs } from '../net/ip.js';
import type { LabDirs } from './state.js';

export const LAB_NETWORK = '10.244.0.0/16';
/** The lab's IPv6 pod network (ULA): a /64 per host, as flannel's default IPv6SubnetLen. */
export const LAB_IPV6_NETWORK = 'fd10:244::/56';

/** A network config with the lab's IPv6 network added (`dual`) or in place of the IPv4 one (`only`). */
export function withLabIPv6(config: Record<string, unknown>, mode: 'dual' | 'only' | undefined): Record<string, unknown> {
  if (mode === undefined) return config;
  const { Network: _n, SubnetLen: _l, ...rest } = config;
  return { ...(mode === 'dual' ? config : { ...rest, EnableIPv4: false }), EnableIPv6: true, IPv6Network: LAB_IPV6_NETWORK, IPv6SubnetLen: 64 };
}
export const LAB_CNI_NETWORK_NAME = 'weft-lab';

export interface LabHostContext {
  readonly dirs: LabDirs;
  readonly index: number;
  readonly hosts: number;
  readonly pods: number;
  readonly outsideIP: string;
  /** The lab's IPv6 mode and the outside namespace's IPv6 address (macvlan's IPv6 gateway). */
  readonly ipv6?: 'dual' | 'only' | undefined;
  readonly outsideIP6?: string | undefined;
  /** macvlan: the host keeps one address of its slice for a shim (see macvlanShimPlan). */
  readonly macvlanShim: boolean;
  /**
   * weftd runs with --ip-masq. Without it a flannel-style plugin masquerades in the bridge instead;
   * the lab then turns that off too, so the hosts carry no NAT at all (LabSpec.ipMasq).
   */
  readonly ipMasq: boolean;
}

export interface LabBackend {
  readonly name: string;
  /** One line for help and tables. */
  readonly summary: string;
  /** The store's network config, or undefined when the backend runs no weftd. */
  networkConfig(): Record<string, unknown> | undefined;
  /** Extra weftd flags (beyond --iface eth0 --ip-masq and the store flags). */
  readonly weftdArgs: readonly string[];
  /** The conflist in host `index`'s net.d. */
  conflist(ctx: LabHostContext): Record<string, unknown>;
  /** Checks the backend can hold this many hosts/pods; a message when it cannot. */
  sizeProblem?(hosts: number, pods: number, opts: { macvlanShim: boolean }): string | undefined;
  /**
   * Backends that work with hosts on several L2 segments joined by the lab's rack router: the
   * network config, given the Backend section that peers with that router. Absent = one
   * segment only (--racks > 1 is refused).
   */
  racksNetworkConfig?(routerBackend: Record<string, unknown>): Record<string, unknown>;
  /** Why the backend needs a single L2 segment (in the refusal of --racks > 1). */
  readonly oneSegmentWhy?: string;
  /** The backend carries IPv6 pods (lab up --ipv6 dual|only). */
  readonly ipv6?: boolean;
  /**
   * True when host `index` is ready to carry traffic to every other host. Default (agent
   * backends): one weft-protocol route per other host's leased subnet.
   */
  converged?(ctx: ConvergenceContext): Promise<boolean>;
}

export interface ConvergenceContext {
  readonly index: number;
  readonly hosts: number;
  /** Every host's leased subnets (IPv4 and/or IPv6), by host index. */
  readonly subnets: readonly (readonly Cidr[])[];
  /** The host namespace's path (for Netlink.with). */
  readonly nsPath: string;
  /** This host's weftd /metrics text. */
  metrics(): Promise<string>;
}

function gauge(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m?.[1] === undefined ? undefined : Number(m[1]);
}

/** weftd says it is ready and has programmed every other host (weft_ready, weft_peers). */
export async function peersConverged(ctx: ConvergenceContext): Promise<boolean> {
  const text = await ctx.metrics();
  return gauge(text, 'weft_ready') === 1 && gauge(text, 'weft_peers') === ctx.hosts - 1;
}

/** Peers programmed and, in the kernel, one weft-protocol route per other host's subnet. */
export async function routesConverged(ctx: ConvergenceContext): Promise<boolean> {
  return everySubnetRouted(ctx, WEFT_ROUTE_PROTOCOL) && peersConverged(ctx);
}

/** Every other host's subnets (each family) have a route of `protocol` in this host's kernel. */
function everySubnetRouted(ctx: ConvergenceContext, protocol: number): boolean {
  const routes = Netlink.with(ctx.nsPath, (nl) => [...nl.listRoutes({ family: 4, protocol }), ...nl.listRoutes({ family: 6, protocol })]);
  return ctx.subnets.every((subnets, j) => j === ctx.index || subnets.every((s) => routes.some((r) => cidrEquals(networkOf(r.dst), networkOf(s)))));
}

/** The weft meta plugin reading this host's subnet.env, with every path inside the lab's state dir. */
function weftConflist(ctx: LabHostContext): Record<string, unknown> {
  return {
    cniVersion: '1.1.0',
    name: LAB_CNI_NETWORK_NAME,
    plugins: [{
      type: 'weft',
      // The pods' labels arrive as runtimeConfig (weftctl cni add --runtime-config), as a
      // runtime passing them would, so the endpoint records carry them in every store.
      capabilities: { labels: true },
      ...(!ctx.ipMasq && { delegate: { ipMasq: false } }),
      subnetFile: ctx.dirs.subnetFile(ctx.index),
      dataDir: ctx.dirs.pluginState(ctx.index),
      ipam: { type: 'weft-ipam', dataDir: ctx.dirs.ipam(ctx.index) },
    }],
  };
}

function agentBackend(name: string, summary: string, converged: (ctx: ConvergenceContext) => Promise<boolean>, extra: Pick<LabBackend, 'racksNetworkConfig' | 'oneSegmentWhy' | 'ipv6'> = {}): LabBackend {
  return {
    name,
    summary,
    networkConfig: () => ({ Network: LAB_NETWORK, SubnetLen: 24, Backend: { Type: name } }),
    weftdArgs: [],
    conflist: weftConflist,
    converged,
    ...extra,
  };
}

// macvlan puts containers straight on the underlay segment (198.18.0.0/24): no agent, no pod
// subnets; each host hands out its own slice of this pool so hosts never collide.
const MACVLAN_POOL_START = 100;
const MACVLAN_POOL_END = 249;
const UNDERLAY = parseCidr('198.18.0.0/24');
/** The IPv6 underlay segment (topology.ts); each host's containers take a slice of it too. */
const UNDERLAY6 = parseCidr('2001:2::/64');
/** First address of the IPv6 slices (2001:2::1:0): clear of the hosts' and outside's addresses. */
const MACVLAN6_POOL_START = 0x10000n;
const MACVLAN6_SLICE = 0x1000n;

export interface MacvlanShimPlan {
  /** The host's address on its shim: the last of its slice, kept out of IPAM. */
  readonly address: Cidr;
  /** The host's containers' range (its slice without the shim address), as routes via the shim. */
  readonly routes: readonly Cidr[];
  /** IPAM's last address for this host's containers. */
  readonly rangeEnd: string;
}

/** The shim's name on every macvlan lab host. */
export const MACVLAN_SHIM_NAME = 'weft-shim';

/** Where host `index`'s macvlan shim sits in its slice of the pool. */
export function macvlanShimPlan(index: number, hosts: number): MacvlanShimPlan {
  const r = macvlanRange(index, hosts);
  const last = parseIPv4(r.end);
  const end = ipAdd(last, -1);
  return { address: { ip: last, prefix: 32 }, routes: rangeToCidrs(parseIPv4(r.start), end), rangeEnd: formatIP(end) };
}

/** Host `index`'s slice of the IPv6 underlay for its macvlan containers: [first, last]. */
export function macvlanRange6(index: number): { start: string; end: string } {
  const first = UNDERLAY6.ip.value + MACVLAN6_POOL_START + BigInt(index) * MACVLAN6_SLICE;
  return { start: formatIP(ipFromValue(6, first)), end: formatIP(ipFromValue(6, first + MACVLAN6_SLICE - 1n)) };
}

/** Host `index`'s slice of the macvlan pool: [first, last] as dotted quads. */
export function macvlanRange(index: number, hosts: number): { start: string; end: string } {
  const size = Math.floor((MACVLAN_POOL_END - MACVLAN_POOL_START + 1) / hosts);
  const first = MACVLAN_POOL_START + index * size;
  return { start: formatIP(ipAdd(UNDERLAY.ip, first)), end: formatIP(ipAdd(UNDERLAY.ip, first + size - 1)) };
}

const macvlan: LabBackend = {
  name: 'macvlan',
  summary: 'containers on the underlay segment (weft-macvlan, bridge mode); no agent',
  networkConfig: () => undefined,
  weftdArgs: [],
  conflist: (ctx) => {
    const r = macvlanRange(ctx.index, ctx.hosts);
    const rangeEnd = ctx.macvlanShim ? macvlanShimPlan(ctx.index, ctx.hosts).rangeEnd : r.end;
    const r6 = macvlanRange6(ctx.index);
    // IPv6 containers take addresses of the IPv6 underlay segment and leave through "outside".
    const v4Range = [{ subnet: formatCidr(UNDERLAY), rangeStart: r.start, rangeEnd, gateway: ctx.outsideIP }];
    const v6Range = [{ subnet: formatCidr(UNDERLAY6), rangeStart: r6.start, rangeEnd: r6.end, gateway: ctx.outsideIP6 ?? '' }];
    const ranges = ctx.ipv6 === 'only' ? [v6Range] : ctx.ipv6 === 'dual' ? [v4Range, v6Range] : [v4Range];
    const routes = [...(ctx.ipv6 !== 'only' ? [{ dst: '0.0.0.0/0' }] : []), ...(ctx.ipv6 ? [{ dst: '::/0' }] : [])];
    return {
      cniVersion: '1.1.0',
      name: LAB_CNI_NETWORK_NAME,
      plugins: [{
        type: 'weft-macvlan',
        master: 'eth0',
        mode: 'bridge',
        ipam: {
          type: 'weft-ipam',
          dataDir: ctx.dirs.ipam(ctx.index),
          ranges,
          routes,
        },
      }],
    };
  },
  sizeProblem: (hosts, pods, opts) => {
    const size = Math.floor((MACVLAN_POOL_END - MACVLAN_POOL_START + 1) / hosts) - (opts.macvlanShim ? 1 : 0);
    return pods > size ? `macvlan: ${hosts} hosts leave ${size} underlay addresses per host${opts.macvlanShim ? ' (one kept for the shim)' : ''}, fewer than --pods ${pods}` : undefined;
  },
  oneSegmentWhy: 'its containers sit on the underlay segment itself, with addresses from that one segment',
  ipv6: true,
};

const registry = new Map<string, LabBackend>();

export function registerLabBackend(b: LabBackend): void {
  registry.set(b.name, b);
}

registerLabBackend(agentBackend('vxlan', 'kernel VXLAN overlay (VNI 1, port 8472) between hosts', routesConverged, { ipv6: true }));
registerLabBackend(agentBackend('host-gw', 'plain routes to each host\'s pod subnet via its underlay address', routesConverged, {
  ipv6: true,
  oneSegmentWhy: 'it routes each pod subnet straight to the owning host\'s underlay address as next hop, so every host must share one L2 segment; hosts behind a router need a backend that tells the router about the subnets (bgp)',
}));
// udp routes peers inside its pump: the kernel only routes the whole Network into the TUN device.
registerLabBackend(agentBackend('udp', 'userspace UDP tunnel through a TUN device (port 8285)', peersConverged, { ipv6: true }));
registerLabBackend(macvlan);

/** bgp: weftd ready with every other host's subnet learned over BGP and in the kernel (proto 88). */
async function bgpRoutesConverged(ctx: ConvergenceContext): Promise<boolean> {
  return everySubnetRouted(ctx, WEFT_BGP_ROUTE_PROTOCOL) && peersConverged(ctx);
}
registerLabBackend(agentBackend('bgp', 'no overlay: routed pods (weft-routed), subnets spread by full-mesh iBGP between hosts (with --racks: via the rack router, BIRD 2)', bgpRoutesConverged, {
  racksNetworkConfig: (routerBackend) => ({ Network: LAB_NETWORK, SubnetLen: 24, Backend: routerBackend }),
  ipv6: true,
}));

export function labBackend(name: string): LabBackend | undefined {
  return registry.get(name);
}

export function labBackendNames(): string[] {
  return [...registry.keys()];
}
