// The udp backend (flannel's original mode): a TUN device carries the cluster Network, and the
// agent's own native pump tunnels each IP packet in a UDP datagram to the peer owning the
// destination subnet (port 8285 by default). It needs nothing from the kernel beyond TUN.
//
// Speed comes from offloads (the default): the TUN device is TSO-capable, so the kernel hands the
// pump ~64 KiB TCP super-packets, which it cuts into MTU-sized datagrams sent with UDP GSO; on
// receive, UDP GRO batches arrive whole and each flow's in-order segments are merged back into
// one super-packet per TUN write. On the wire nothing changes — one IP packet per datagram, as
// flannel's udp — so an offloading pump and a classic one (offload: false, one system call per
// packet) interoperate. Measured next to kernel vxlan in the same run: bench/results/udp.md.
//
// IPv6 (flannel's udp has none; this is weft's own choice): one TUN device carries both families
// — the IPv4 Network with the subnet's network address as before, and the IPv6 Network routed
// into it with the IPv6 subnet's network address as a /128 — and the pump looks an inner IPv6
// destination up among the peers' IPv6 subnets. Each inner family rides the underlay of its own
// family: IPv4 pods to the peer's PublicIP over IPv4, IPv6 pods to its PublicIPv6 over IPv6 (one
// dual-stack socket, [::]:Port, serves both). That is what vxlan (one device per family) and
// host-gw (one next hop per family) do, so pods of a family depend only on that family's
// underlay, and weftd already insists on an IPv6 underlay address whenever the network has IPv6
// (and an IPv4 one for an IPv4 Network), so every peer has the matching address. Carrying IPv6
// inside IPv4 would have saved 20 bytes of MTU but made IPv6 pods fail with the IPv4 underlay, and
// an IPv6-only network needs the IPv6 underlay anyway. The price is the IPv6 header: the IPv6
// tunnel carries 48 bytes less than the underlay (IPv4: 28), set as the MTU of the IPv6 Network
// route on a dual-stack device whose own MTU stays IPv4's; pods get the smaller of the two.
// An IPv4-only network keeps flannel's exact setup: an IPv4 socket, IPv6 disabled on the device.
//
// Restarts: the TUN device is made persistent, so it survives the agent (crash or
// close({keepDataplane: true})) with its addresses and routes. While no agent holds it, the device
// has no carrier and tunnelled traffic stops; the next prepare() re-attaches to the same device
// and traffic resumes once the pump runs again — a gap of roughly the agent's restart time.
import { z } from 'zod';
import { CniCode, WeftError } from '../../errors.js';
import { WEFT_ROUTE_PROTOCOL } from '../../dataplane/protocols.js';
import { cidrEquals, formatCidr, ipEquals, networkOf, type Cidr, type IP } from '../../net/ip.js';
import { native } from '../../netlink/native.js';
import { openTun, type Link } from '../../netlink/index.js';
import { writeSysctl } from '../../netns/index.js';
import type { Lease } from '../../store/lease.js';
import { mtu, noLeaseData, port } from '../schema.js';
import type { Backend, BackendModule, BackendPreparation, HostContext, ReconcileReport } from '../types.js';
import { registerUdpMetrics } from './metrics.js';
import { peerTable, routeKey } from './peers.js';
import { setTunPersist, UdpPump, type PumpStats } from './pump.js';

export const udpConfig = z.object({
  Port: port.default(8285),
  MTU: mtu.optional(),
}).strict();
export type UdpConfig = z.infer<typeof udpConfig>;

export const UDP_DEVICE = 'weft-udp0';
/** IPv4 header (20) + UDP header (8) around every packet tunnelled over the IPv4 underlay. */
export const UDP_OVERHEAD = 28;
/** IPv6 header (40) + UDP header (8) around every packet tunnelled over the IPv6 underlay. */
export const UDP6_OVERHEAD = 48;

export interface UdpBackendOptions {
  /** TUN device name (tests only; weftd always uses UDP_DEVICE). */
  readonly deviceName?: string;
  /**
   * Let the kernel hand the pump 64 KiB TCP super-packets (TUN TSO + UDP GSO/GRO) instead of one
   * MTU-sized packet per system call. Default true; false is flannel's classic per-packet path.
   */
  readonly offload?: boolean;
}

/** TUNSETIFF flags: a layer-3 TUN without packet info, with a virtio_net_hdr when offloading. */
const IFF_TUN = 0x0001;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;

interface Attached {
  readonly host: HostContext;
  /** The device's MTU: what the IPv4 tunnel carries, or the IPv6 one on an IPv6-only network. */
  readonly mtu: number;
  /** The IPv6 Network route's MTU, when the IPv6 tunnel carries less than the device's MTU. */
  readonly ipv6RouteMtu: number | undefined;
  readonly prep: BackendPreparation;
  tunFd: number;
  pump: UdpPump;
}

const nothing = { repairs: 0, removals: 0 };

export class UdpBackend implements Backend {
  readonly type = 'udp';
  readonly device: string;
  private readonly port: number;
  private readonly configuredMtu: number | undefined;
  private readonly offload: boolean;
  private attached: Attached | undefined;
  private ownSubnet: Cidr | undefined;
  private ownIPv6Subnet: Cidr | undefined;
  private routeKeys = new Set<string>();
  private lastRoutes: Parameters<UdpPump['setRoutes']>[0] = [];

  constructor(settings: UdpConfig, opts: UdpBackendOptions = {}) {
    this.port = settings.Port;
    this.configuredMtu = settings.MTU;
    this.device = opts.deviceName ?? UDP_DEVICE;
    this.offload = opts.offload ?? true;
  }

  async prepare(host: HostContext): Promise<BackendPreparation> {
    if (this.attached) return this.attached.prep;
    const { ipv4, ipv6 } = host.network;
    if (!ipv4 && !ipv6) throw new WeftError(CniCode.InvalidNetworkConfig, 'the udp backend needs a Network or an IPv6Network');
    if (ipv4 && host.publicIP.family !== 4) throw new WeftError(CniCode.InvalidEnvironment, 'udp: the IPv4 network needs an IPv4 public address');
    if (ipv6 && !publicIPv6Of(host)) throw new WeftError(CniCode.InvalidEnvironment, 'udp: the IPv6 network needs an IPv6 public address');
    const underlay = host.publicIface.mtu;
    const v4Mtu = ipv4 ? this.configuredMtu ?? underlay - UDP_OVERHEAD : undefined;
    const v6Mtu = ipv6 ? this.configuredMtu ?? underlay - UDP6_OVERHEAD : undefined;
    const mtu = v4Mtu ?? v6Mtu!;
    const ipv6RouteMtu = v6Mtu !== undefined && v6Mtu !== mtu ? v6Mtu : undefined;
    // Pods have one MTU for both families: the smaller of what the two tunnels carry.
    const prep: BackendPreparation = {
      backendData: null,
      mtu: Math.min(mtu, v6Mtu ?? mtu),
      ...(v6Mtu !== undefined && { ipv6Mtu: v6Mtu }),
    };
    const reused = host.nl.getLink(this.device) !== undefined;
    const { fd, pump } = this.attach(host, mtu);
    this.attached = { host, mtu, ipv6RouteMtu, prep, tunFd: fd, pump };
    if (host.registry) registerUdpMetrics(host.registry, () => this.stats());
    host.log.info('udp backend: tunnel ready', {
      device: this.device, reused, mtu, ...(v6Mtu !== undefined && { ipv6Mtu: v6Mtu }), port: this.port,
      families: [ipv4 && 'ipv4', ipv6 && 'ipv6'].filter(Boolean),
    });
    return prep;
  }

  async activate(ownSubnet: Cidr, ownIPv6Subnet?: Cidr): Promise<void> {
    this.ownSubnet = ownSubnet.ip.family === 4 ? ownSubnet : undefined;
    this.ownIPv6Subnet = ownIPv6Subnet ?? (ownSubnet.ip.family === 6 ? ownSubnet : undefined);
    this.ensureDevice(this.need());
  }

  async reconcile(peers: readonly Lease[]): Promise<ReconcileReport> {
    const a = this.need();
    const { network } = a.host;
    const table = peerTable(peers, this.port, { ipv4: network.ipv4 !== undefined, ipv6: network.ipv6 !== undefined });
    const keys = new Set(table.routes.map(routeKey));
    let repairs = [...keys].filter((k) => !this.routeKeys.has(k)).length;
    const removals = [...this.routeKeys].filter((k) => !keys.has(k)).length;
    a.pump.setRoutes(table.routes);
    this.routeKeys = keys;
    this.lastRoutes = table.routes;
    const device = this.ensureDevice(a);
    repairs += device.repairs;
    for (const p of table.problems) a.host.log.warn('udp backend: peer skipped', { problem: p });
    return { repairs, removals: removals + device.removals, problems: table.problems, skipped: table.skipped };
  }

  async close(opts: { keepDataplane: boolean }): Promise<void> {
    const a = this.attached;
    if (!a) return;
    this.attached = undefined;
    a.pump.stop();
    if (!opts.keepDataplane) setTunPersist(a.tunFd, false);
    native().close(a.tunFd);
    // Without persistence the device went with its last fd; this only catches a device some
    // other process still held open.
    if (!opts.keepDataplane) a.host.nl.deleteLink(this.device);
    this.routeKeys.clear();
  }

  /** The pump's counters; undefined while the backend is not prepared. */
  stats(): PumpStats | undefined {
    return this.attached?.pump.stats();
  }

  private need(): Attached {
    if (!this.attached) throw new WeftError(CniCode.Internal, 'udp backend used before prepare()');
    return this.attached;
  }

  /** Opens (or re-attaches to) the persistent TUN device, and starts the pump on it. */
  private attach(host: HostContext, mtu: number): { fd: number; pump: UdpPump } {
    const existing = host.nl.getLink(this.device);
    if (existing && existing.kind !== 'tun') {
      throw new WeftError(CniCode.Netlink, `device ${this.device} exists but is a ${existing.kind ?? 'non-tun'} device, not the udp backend's TUN`);
    }
    const nsPath = host.nl.nsPath;
    const ipv6 = host.network.ipv6 !== undefined;
    const tun = this.openDevice(nsPath);
    try {
      setTunPersist(tun.fd, true);
      setDeviceIPv6(this.device, nsPath, host, ipv6);
      host.nl.setLink(this.device, { mtu, up: true });
      const pump = UdpPump.start(tun.fd, this.port, nsPath, this.offload, ipv6);
      return { fd: tun.fd, pump };
    } catch (err) {
      if (!existing) {
        try {
          setTunPersist(tun.fd, false);
        } catch {
          // the fd is closed next either way; a leftover device is removed by the next prepare
        }
      }
      native().close(tun.fd);
      throw err;
    }
  }

  private openDevice(nsPath: string | undefined): { fd: number; name: string } {
    if (!this.offload) return openTun(this.device, nsPath !== undefined ? { nsPath } : {});
    try {
      return native().openTun(this.device, IFF_TUN | IFF_NO_PI | IFF_VNET_HDR, nsPath ?? null);
    } catch (err) {
      throw WeftError.wrap(err, CniCode.Netlink, `open tun device ${this.device}${nsPath ? ` in ${nsPath}` : ''}`);
    }
  }

  /**
   * Device state the backend owns: up with the right MTU, the IPv4 subnet's network address with
   * the cluster Network's prefix (like flannel0, its prefix route is the Network's route), and
   * the IPv6 subnet's network address with the IPv6 Network routed into the device. A device
   * someone deleted is recreated and the pump restarted on it with the current table.
   */
  private ensureDevice(a: Attached): { repairs: number; removals: number } {
    const nl = a.host.nl;
    let repairs = 0;
    let removals = 0;
    let link: Link | undefined = nl.getLink(this.device);
    if (!link) {
      a.host.log.warn('udp backend: tun device vanished, recreating it', { device: this.device });
      a.pump.stop();
      native().close(a.tunFd);
      const fresh = this.attach(a.host, a.mtu);
      a.tunFd = fresh.fd;
      a.pump = fresh.pump;
      a.pump.setRoutes(this.lastRoutes);
      link = nl.requireLink(this.device);
      repairs++;
    }
    if (!link.up || link.mtu !== a.mtu) {
      nl.setLink(link, { up: true, mtu: a.mtu });
      repairs++;
    }
    const v4 = this.ensureIPv4(a, link);
    const v6 = this.ensureIPv6(a, link);
    repairs += v4.repairs + v6.repairs;
    removals += v4.removals + v6.removals;
    if (repairs > 0) {
      a.host.log.info('udp backend: device repaired', {
        device: this.device, repairs,
        ...(v4.address && { address: formatCidr(v4.address) }), ...(v6.address && { ipv6Address: formatCidr(v6.address) }),
      });
    }
    return { repairs, removals };
  }

  private ensureIPv4(a: Attached, link: Link): { repairs: number; removals: number; address?: Cidr } {
    const nl = a.host.nl;
    const own = this.ownSubnet;
    const network = a.host.network.ipv4?.network;
    if (!network) {
      // An IPv6-only network on a device kept from an IPv4 one: its Network must not stay routed here.
      let removals = 0;
      for (const addr of nl.listAddresses({ link, family: 4 })) if (nl.deleteAddress(link, addr.cidr)) removals++;
      return { repairs: 0, removals };
    }
    if (!own) return nothing;
    let repairs = 0;
    let removals = 0;
    const want: Cidr = { ip: networkOf(own).ip, prefix: network.prefix };
    let present = false;
    for (const addr of nl.listAddresses({ link, family: 4 })) {
      if (cidrEquals(addr.cidr, want)) present = true;
      else if (nl.deleteAddress(link, addr.cidr)) removals++; // e.g. a previous lease's subnet
    }
    if (!present) {
      nl.replaceAddress(link, want);
      repairs++;
    }
    const dst = networkOf(network);
    const routed = nl.listRoutes({ family: 4, oif: link }).some((r) => cidrEquals(r.dst, dst));
    if (!routed) {
      nl.replaceRoute({ dst, oif: link, scope: 'link', src: want.ip });
      repairs++;
    }
    return { repairs, removals, address: want };
  }

  /**
   * A /128 rather than IPv4's Network-prefix address: a kernel prefix route could not carry the
   * IPv6 tunnel's smaller MTU, so weftd writes the Network route itself (proto weft, source the
   * device's address so the host's own traffic to remote pods comes back through the tunnel).
   */
  private ensureIPv6(a: Attached, link: Link): { repairs: number; removals: number; address?: Cidr } {
    const own = this.ownIPv6Subnet;
    const network = a.host.network.ipv6?.network;
    if (!own || !network) return nothing;
    const nl = a.host.nl;
    let repairs = 0;
    let removals = 0;
    const want: Cidr = { ip: networkOf(own).ip, prefix: 128 };
    let present = false;
    for (const addr of nl.listAddresses({ link, family: 6 })) {
      if (addr.scope !== 0) continue; // link-local addresses are the kernel's
      if (cidrEquals(addr.cidr, want)) present = true;
      else if (nl.deleteAddress(link, addr.cidr)) removals++;
    }
    if (!present) {
      nl.replaceAddress(link, want, { noDad: true });
      repairs++;
    }
    const dst = networkOf(network);
    const mtu = a.ipv6RouteMtu;
    const route = nl.listRoutes({ family: 6, oif: link }).find((r) => cidrEquals(r.dst, dst));
    if (!route || route.protocol !== WEFT_ROUTE_PROTOCOL || route.mtu !== mtu || !sameIP(route.src, want.ip)) {
      nl.replaceRoute({ dst, oif: link, src: want.ip, protocol: WEFT_ROUTE_PROTOCOL, ...(mtu !== undefined && { mtu }) });
      repairs++;
    }
    return { repairs, removals, address: want };
  }
}

function sameIP(a: IP | undefined, b: IP): boolean {
  return a !== undefined && ipEquals(a, b);
}

/** The host's IPv6 underlay address (an IPv6-only host's publicIP is one). */
function publicIPv6Of(host: HostContext): IP | undefined {
  return host.publicIPv6 ?? (host.publicIP.family === 6 ? host.publicIP : undefined);
}

/**
 * Without IPv6 in the network the tunnel carries IPv4 only, and IPv6 stays disabled on the device:
 * otherwise the kernel would still send IPv6 router solicitations and MLD reports into the TUN,
 * which the pump can only drop. With IPv6 it must be enabled (a device kept from an IPv4-only
 * config still has it off).
 */
function setDeviceIPv6(device: string, nsPath: string | undefined, host: HostContext, enabled: boolean): void {
  try {
    writeSysctl(`net/ipv6/conf/${device}/disable_ipv6`, enabled ? 0 : 1, nsPath);
  } catch (err) {
    if (enabled) throw WeftError.wrap(err, CniCode.Netlink, `enable IPv6 on ${device} (the network has IPv6)`);
    host.log.debug('udp backend: could not disable IPv6 on the tun device', { device, err });
  }
}

export function createUdpBackend(settings: UdpConfig, opts: UdpBackendOptions = {}): UdpBackend {
  return new UdpBackend(settings, opts);
}

export const udp: BackendModule<'udp', UdpConfig> = {
  type: 'udp',
  config: udpConfig,
  leaseData: noLeaseData,
  create: (cfg) => createUdpBackend(cfg),
  ipv6: true,
};

export { peerTable, routeKey, type PeerTable } from './peers.js';
export { encodeRoutes, UdpPump, type PumpRoute, type PumpStats } from './pump.js';
