// The vxlan backend, flannel's default: one VXLAN device per host and address family (weft.<VNI>
// over the IPv4 underlay, weft-v6.<VNI> over the IPv6 one, as flanneld's flannel.<VNI> and
// flannel-v6.<VNI>; learning off), and per remote host and family an onlink route to its subnet
// via the remote VTEP address (the subnet's network address), a permanent neighbour entry for
// that address (→ the remote VtepMAC, BackendData's for IPv4, BackendV6Data's for IPv6) and an
// FDB entry sending that MAC to the remote PublicIP (PublicIPv6). Nothing is learnt from
// traffic, so the kernel never floods or asks; every entry comes from a lease.
import { z } from 'zod';
import { CniCode, WeftError } from '../../errors.js';
import type { Link, Netlink } from '../../netlink/index.js';
import { type Cidr, type IP, cidrContains, cidrEquals, formatCidr, formatIP, ipEquals, networkOf } from '../../net/ip.js';
import { type Lease, leaseFamily } from '../../store/lease.js';
import type { Logger } from '../../log.js';
import { type DesiredFdb, type DesiredNeigh, type DesiredRoute, type DesiredState, DataplaneSync, removeWeftRoutes } from '../../dataplane/sync.js';
import { DesiredMemo } from '../../dataplane/desired-memo.js';
import { PeerLeaseData } from '../lease-data.js';
import { mtu, port } from '../schema.js';
import type { Backend, BackendModule, BackendPreparation, HostContext, ReconcileOptions, ReconcileReport, SkippedPeer } from '../types.js';

export const vxlanConfig = z.object({
  VNI: z.number().int().min(1).max(16777215).default(1),
  Port: port.default(8472),
  DirectRouting: z.boolean().default(false),
  MTU: mtu.optional(),
  GBP: z.boolean().default(false),
  Learning: z.boolean().default(false),
}).strict();
export type VxlanConfig = z.infer<typeof vxlanConfig>;

const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
const mac = z.string().regex(MAC_RE, 'expected a MAC address like 0a:58:0a:f4:03:01');
/** flannel's vxlanLeaseAttrs ({"VNI","VtepMAC"}); keys a newer node adds are kept. */
export const vxlanLeaseData = z.object({ VtepMAC: mac }).passthrough();
export type VxlanLeaseData = z.infer<typeof vxlanLeaseData>;

function vxlanLeaseDataIsPlain(d: unknown): boolean {
  return typeof d === 'object' && d !== null && !Array.isArray(d) && typeof (d as { VtepMAC?: unknown }).VtepMAC === 'string' && MAC_RE.test((d as { VtepMAC: string }).VtepMAC);
}

/** Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14). */
export const VXLAN_OVERHEAD = 50;
/** Outer IPv6 (40) + UDP (8) + VXLAN (8) + inner Ethernet (14). */
export const VXLAN6_OVERHEAD = 70;

export function vxlanDeviceName(vni: number, family: 4 | 6 = 4): string {
  return family === 4 ? `weft.${vni}` : `weft-v6.${vni}`;
}

/** One family's VTEP: its device over that family's underlay, and the subnet it carries. */
interface Vtep {
  readonly family: 4 | 6;
  readonly name: string;
  /** This host's underlay address of the family. */
  readonly local: IP;
  readonly mtu: number;
  device: Link | undefined;
  ownSubnet: Cidr | undefined;
}

type Built = { want: DesiredState; problems: string[]; skipped: SkippedPeer[] };

class VxlanBackend implements Backend {
  readonly type = 'vxlan';
  private host: HostContext | undefined;
  private readonly vteps: Vtep[] = [];
  private dataplane: DataplaneSync | undefined;
  private readonly peerData = new PeerLeaseData(vxlan);
  private readonly desired = new DesiredMemo<Built>();

  constructor(private readonly cfg: VxlanConfig) {}

  private get log(): Logger | undefined {
    return this.host?.log;
  }

  private vtep(family: 4 | 6): Vtep | undefined {
    return this.vteps.find((v) => v.family === family);
  }

  async prepare(host: HostContext): Promise<BackendPreparation> {
    this.host = host;
    this.dataplane = new DataplaneSync(host.nl);
    this.vteps.length = 0;
    const underlayMtu = host.publicIface.mtu;
    if (host.network.ipv4) {
      if (host.publicIP.family !== 4) throw new WeftError(CniCode.InvalidEnvironment, 'vxlan: the IPv4 network needs an IPv4 public address');
      this.vteps.push({ family: 4, name: vxlanDeviceName(this.cfg.VNI, 4), local: host.publicIP, mtu: this.cfg.MTU ?? underlayMtu - VXLAN_OVERHEAD, device: undefined, ownSubnet: undefined });
    }
    if (host.network.ipv6) {
      if (!host.publicIPv6) throw new WeftError(CniCode.InvalidEnvironment, 'vxlan: the IPv6 network needs an IPv6 public address');
      this.vteps.push({ family: 6, name: vxlanDeviceName(this.cfg.VNI, 6), local: host.publicIPv6, mtu: this.cfg.MTU ?? underlayMtu - VXLAN6_OVERHEAD, device: undefined, ownSubnet: undefined });
    }
    // A family the network no longer has leaves no device behind (its VTEP address, neighbours
    // and FDB entries, its UDP socket): e.g. IPv6 turned off, or a switch to IPv6-only.
    for (const family of [4, 6] as const) {
      if (this.vtep(family)) continue;
      const stale = host.nl.getLink(vxlanDeviceName(this.cfg.VNI, family));
      if (stale?.kind === 'vxlan') {
        host.nl.deleteLink(stale.index);
        host.log.info('removed the vxlan device of an address family the network no longer has', { device: stale.name });
      }
    }
    const macs = this.vteps.map((v) => {
      const dev = this.ensureDevice(host.nl, v, undefined);
      if (!dev.mac) throw new WeftError(CniCode.Netlink, `vxlan device ${v.name} has no MAC address`);
      return dev.mac;
    });
    const v4 = this.vtep(4);
    const v6 = this.vtep(6);
    // Pods have one MTU for both families: the smaller of what the two devices carry.
    const mtu = Math.min(...this.vteps.map((v) => v.mtu));
    return {
      // The VtepMAC of flanneld's vxlanLeaseAttrs, for each family.
      backendData: v4 ? { VtepMAC: macs[0] } : null,
      ...(v6 && { backendV6Data: { VtepMAC: macs[this.vteps.indexOf(v6)] }, ipv6Mtu: v6.mtu }),
      mtu,
    };
  }

  /** True when an existing device is exactly what we would create (so a restart keeps it). */
  private fits(l: Link, v: Vtep, host: HostContext): boolean {
    const i = l.info;
    return i?.kind === 'vxlan' && i.vni === this.cfg.VNI && i.port === this.cfg.Port && i.learning === this.cfg.Learning
      && i.local !== undefined && ipEquals(i.local, v.local) && i.dev === host.publicIface.index;
  }

  /**
   * Finds the device in place or (re)creates it. A re-created device takes the MAC the lease
   * already publishes (`mac`), so peers' neighbour entries stay right.
   */
  private ensureDevice(nl: Netlink, v: Vtep, mac: string | undefined): Link {
    const host = this.host!;
    let dev = nl.getLink(v.name);
    if (dev && !this.fits(dev, v, host)) {
      this.log?.warn('vxlan device does not match the config; re-creating it', { device: v.name });
      mac ??= dev.mac;
      nl.deleteLink(dev.index);
      dev = undefined;
    }
    if (!dev) {
      dev = nl.createVxlan({
        name: v.name, vni: this.cfg.VNI, local: v.local, port: this.cfg.Port,
        learning: this.cfg.Learning, dev: host.publicIface.index, mtu: v.mtu,
        ...(mac !== undefined && { mac }),
      });
      this.log?.info('created vxlan device', { device: v.name, vni: this.cfg.VNI, mac: dev.mac });
    }
    if (dev.mtu !== v.mtu || !dev.up) {
      nl.setLink(dev.index, { mtu: v.mtu, up: true });
      dev = nl.requireLink(dev.index);
    }
    v.device = dev;
    return dev;
  }

  async activate(ownSubnet: Cidr, ownIPv6Subnet?: Cidr): Promise<void> {
    const v4 = this.vtep(4);
    const v6 = this.vtep(6);
    if (v4 && ownSubnet.ip.family === 4) v4.ownSubnet = ownSubnet;
    if (v6) v6.ownSubnet = ownIPv6Subnet;
    for (const v of this.vteps) this.ensureAddress(v);
  }

  /**
   * The device carries the subnet's network address as a host address (/32, /128): the local
   * VTEP address. IPv6 link-local addresses are the kernel's and stay.
   */
  private ensureAddress(v: Vtep): void {
    const { nl } = this.host!;
    const dev = v.device!;
    const own = v.ownSubnet;
    if (!own) return;
    const want: Cidr = { ip: networkOf(own).ip, prefix: v.family === 4 ? 32 : 128 };
    let present = false;
    for (const a of nl.listAddresses({ link: dev.index, family: v.family })) {
      const c: Cidr = a.cidr;
      if (cidrEquals(c, want)) present = true;
      else if (a.scope === 0) nl.deleteAddress(dev.index, c);
    }
    if (!present) nl.replaceAddress(dev.index, want, { ...(v.family === 6 && { noDad: true }) });
  }

  async reconcile(peers: readonly Lease[], opts: ReconcileOptions = {}): Promise<ReconcileReport> {
    const host = this.host;
    if (!host || this.vteps.some((v) => !v.device)) throw new WeftError(CniCode.Internal, 'vxlan backend: reconcile before prepare');
    const { nl } = host;
    // A device may have been deleted by hand; bring it back with the published MAC.
    let repairs = 0;
    for (const v of this.vteps) {
      const now = nl.getLink(v.name);
      if (!now || now.index !== v.device!.index || !now.up || !this.fits(now, v, host)) {
        this.ensureDevice(nl, v, v.device!.mac);
        repairs++;
      }
      this.ensureAddress(v);
    }
    const publicNets = this.publicPrefixes();
    const facts = `${this.vteps.map((v) => v.device!.index).join(',')} ${publicNets.map(formatCidr).join(',') || '-'} ${host.publicIface.index}`;
    const { want, problems, skipped } = this.desired.get(peers, facts, () => this.build(peers, publicNets));
    // A re-created device lost its neighbours and FDB entries: only a full pass sees that.
    const mode = opts.full === false && repairs === 0 ? 'incremental' : 'full';
    const r = await this.dataplane!.syncOffLoop(want, mode);
    return { repairs: r.repairs + repairs, removals: r.removals, problems: [...problems, ...r.errors], skipped };
  }

  /** The routes, neighbours and FDB entries for these peers (and why any peer was skipped). */
  private build(peers: readonly Lease[], publicNets: readonly Cidr[]): Built {
    const host = this.host!;
    const routes: DesiredRoute[] = [];
    const devices = this.vteps.map((v) => ({ index: v.device!.index, neighs: [] as DesiredNeigh[], fdb: [] as DesiredFdb[] }));
    const problems: string[] = [];
    const skipped: SkippedPeer[] = [];
    const skip = (p: Lease, reason: string): void => {
      problems.push(reason);
      skipped.push({ subnet: formatCidr(p.subnet), reason });
    };
    for (const p of peers) {
      if (p.attrs.backendType !== 'vxlan') {
        skip(p, `peer ${formatCidr(p.subnet)} (${formatIP(p.attrs.publicIP)}) runs backend ${p.attrs.backendType}, not vxlan; skipped`);
        continue;
      }
      let programmed = 0;
      let lastReason: string | undefined;
      for (const [i, v] of this.vteps.entries()) {
        const half = leaseFamily(p, v.family);
        if (!half) continue;
        const { subnet, publicIP: remote } = half;
        const data = v.family === 4 ? this.peerData.get(p, this.log) : this.peerData.getV6(p, this.log);
        if (!remote || !data.ok) {
          lastReason = !data.ok ? data.reason : `peer ${formatCidr(subnet)} publishes no IPv${v.family} address; skipped`;
          problems.push(lastReason);
          continue;
        }
        programmed++;
        const net = publicNets.find((c) => c.ip.family === v.family);
        if (this.cfg.DirectRouting && net && cidrContains(net, remote)) {
          // Same L2 segment: no encapsulation needed, route straight to the host.
          routes.push({ dst: subnet, gateway: remote, oif: host.publicIface.index, onlink: false });
          continue;
        }
        const vtep = networkOf(subnet).ip;
        routes.push({ dst: subnet, gateway: vtep, oif: v.device!.index, onlink: true });
        devices[i]!.neighs.push({ ip: vtep, mac: data.data.VtepMAC });
        devices[i]!.fdb.push({ mac: data.data.VtepMAC, dst: remote });
      }
      if (programmed === 0) skipped.push({ subnet: formatCidr(p.subnet), reason: lastReason ?? `peer ${formatCidr(p.subnet)} has no subnet of this network's address families` });
    }
    return { want: { routes, devices }, problems, skipped };
  }

  /** The on-link prefixes of the public addresses (for DirectRouting). */
  private publicPrefixes(): Cidr[] {
    const host = this.host!;
    return this.vteps.flatMap((v) => {
      const a = host.nl.listAddresses({ link: host.publicIface.index, family: v.family }).find((x) => ipEquals(x.cidr.ip, v.local));
      return a ? [networkOf(a.cidr)] : [];
    });
  }

  async close(opts: { keepDataplane: boolean }): Promise<void> {
    await this.dataplane?.close();
    if (opts.keepDataplane || !this.host) return;
    removeWeftRoutes(this.host.nl);
    for (const v of this.vteps) this.host.nl.deleteLink(v.name);
  }
}

export const vxlan: BackendModule<'vxlan', VxlanConfig, VxlanLeaseData> = {
  type: 'vxlan',
  config: vxlanConfig,
  leaseData: vxlanLeaseData,
  leaseDataIsPlain: vxlanLeaseDataIsPlain,
  create: (cfg) => new VxlanBackend(cfg),
  ipv6: true,
};
