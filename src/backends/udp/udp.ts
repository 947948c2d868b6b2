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
// Restarts: the TUN device is made persistent, so it survives the agent (crash or
// close({keepDataplane: true})) with its address and route. While no agent holds it, the device
// has no carrier and tunnelled traffic stops; the next prepare() re-attaches to the same device
// and traffic resumes once the pump runs again — a gap of roughly the agent's restart time.
import { z } from 'zod';
import { CniCode, WeftError } from '../../errors.js';
import { cidrEquals, formatCidr, networkOf, type Cidr } from '../../net/ip.js';
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
/** IPv4 header (20) + UDP header (8) around every tunnelled packet. */
export const UDP_OVERHEAD = 28;

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
  readonly mtu: number;
  tunFd: number;
  pump: UdpPump;
}

export class UdpBackend implements Backend {
  readonly type = 'udp';
  readonly device: string;
  private readonly port: number;
  private readonly configuredMtu: number | undefined;
  private readonly offload: boolean;
  private attached: Attached | undefined;
  private ownSubnet: Cidr | undefined;
  private routeKeys = new Set<string>();
  private lastRoutes: Parameters<UdpPump['setRoutes']>[0] = [];

  constructor(settings: UdpConfig, opts: UdpBackendOptions = {}) {
    this.port = settings.Port;
    this.configuredMtu = settings.MTU;
    this.device = opts.deviceName ?? UDP_DEVICE;
    this.offload = opts.offload ?? true;
  }

  async prepare(host: HostContext): Promise<BackendPreparation> {
    if (this.attached) return { backendData: null, mtu: this.attached.mtu };
    if (!host.network.ipv4) {
      throw new WeftError(CniCode.InvalidNetworkConfig, 'the udp backend needs an IPv4 Network');
    }
    const mtu = this.configuredMtu ?? host.publicIface.mtu - UDP_OVERHEAD;
    const reused = host.nl.getLink(this.device) !== undefined;
    const { fd, pump } = this.attach(host, mtu);
    this.attached = { host, mtu, tunFd: fd, pump };
    if (host.registry) registerUdpMetrics(host.registry, () => this.stats());
    host.log.info('udp backend: tunnel ready', { device: this.device, reused, mtu, port: this.port });
    return { backendData: null, mtu };
  }

  async activate(ownSubnet: Cidr): Promise<void> {
    this.ownSubnet = ownSubnet;
    this.ensureDevice(this.need());
  }

  async reconcile(peers: readonly Lease[]): Promise<ReconcileReport> {
    const a = this.need();
    const table = peerTable(peers, this.port);
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
    const tun = this.openDevice(nsPath);
    try {
      setTunPersist(tun.fd, true);
      disableIPv6(this.device, nsPath, host);
      host.nl.setLink(this.device, { mtu, up: true });
      const pump = UdpPump.start(tun.fd, this.port, nsPath, this.offload);
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
   * Device state the backend owns: up with the right MTU, the subnet's network address with the
   * cluster Network's prefix (like flannel0), and the Network routed into the device. A device
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
    const own = this.ownSubnet;
    const network = a.host.network.ipv4?.network;
    if (!own || !network) return { repairs, removals };
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
    if (repairs > 0) a.host.log.info('udp backend: device repaired', { device: this.device, address: formatCidr(want), repairs });
    return { repairs, removals };
  }
}

/**
 * The tunnel carries IPv4 only; without this the kernel would still send IPv6 router
 * solicitations and MLD reports into the TUN, which the pump can only drop.
 */
function disableIPv6(device: string, nsPath: string | undefined, host: HostContext): void {
  try {
    writeSysctl(`net/ipv6/conf/${device}/disable_ipv6`, 1, nsPath);
  } catch (err) {
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
};

export { peerTable, routeKey, type PeerTable } from './peers.js';
export { encodeRoutes, UdpPump, type PumpRoute, type PumpStats } from './pump.js';
