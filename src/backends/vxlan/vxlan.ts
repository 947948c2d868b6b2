// The vxlan backend, flannel's default: one VXLAN device per host (weft.<VNI>, learning off),
// and per remote host an onlink route to its subnet via the remote VTEP address (the subnet's
// network address), a permanent neighbour entry for that address (→ the remote VtepMAC) and an
// FDB entry sending that MAC to the remote PublicIP. Nothing is learnt from traffic, so the
// kernel never floods or asks; every entry comes from a lease.
import { z } from 'zod';
import { CniCode, WeftError } from '../../errors.js';
import type { Link, Netlink } from '../../netlink/index.js';
import { type Cidr, cidrContains, cidrEquals, formatCidr, formatIP, ipEquals, networkOf } from '../../net/ip.js';
import type { Lease } from '../../store/lease.js';
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

export function vxlanDeviceName(vni: number): string {
  return `weft.${vni}`;
}

class VxlanBackend implements Backend {
  readonly type = 'vxlan';
  private host: HostContext | undefined;
  private device: Link | undefined;
  private mtu = 0;
  private ownSubnet: Cidr | undefined;
  private dataplane: DataplaneSync | undefined;
  private readonly peerData = new PeerLeaseData(vxlan);
  private readonly desired = new DesiredMemo<{ want: DesiredState; problems: string[]; skipped: SkippedPeer[] }>();

  constructor(private readonly cfg: VxlanConfig) {}

  private get name(): string {
    return vxlanDeviceName(this.cfg.VNI);
  }

  private get log(): Logger | undefined {
    return this.host?.log;
  }

  async prepare(host: HostContext): Promise<BackendPreparation> {
    this.host = host;
    this.dataplane = new DataplaneSync(host.nl);
    this.mtu = this.cfg.MTU ?? host.publicIface.mtu - VXLAN_OVERHEAD;
    const dev = this.ensureDevice(host.nl, undefined);
    if (!dev.mac) throw new WeftError(CniCode.Netlink, `vxlan device ${this.name} has no MAC address`);
    return { backendData: { VtepMAC: dev.mac }, mtu: this.mtu };
  }

  /** True when an existing device is exactly what we would create (so a restart keeps it). */
  private fits(l: Link, host: HostContext): boolean {
    const i = l.info;
    return i?.kind === 'vxlan' && i.vni === this.cfg.VNI && i.port === this.cfg.Port && i.learning === this.cfg.Learning
      && i.local !== undefined && ipEquals(i.local, host.publicIP) && i.dev === host.publicIface.index;
  }

  /**
   * Finds the device in place or (re)creates it. A re-created device takes the MAC the lease
   * already publishes (`mac`), so peers' neighbour entries stay right.
   */
  private ensureDevice(nl: Netlink, mac: string | undefined): Link {
    const host = this.host!;
    let dev = nl.getLink(this.name);
    if (dev && !this.fits(dev, host)) {
      this.log?.warn('vxlan device does not match the config; re-creating it', { device: this.name });
      mac ??= dev.mac;
      nl.deleteLink(dev.index);
      dev = undefined;
    }
    if (!dev) {
      dev = nl.createVxlan({
        name: this.name, vni: this.cfg.VNI, local: host.publicIP, port: this.cfg.Port,
        learning: this.cfg.Learning, dev: host.publicIface.index, mtu: this.mtu,
        ...(mac !== undefined && { mac }),
      });
      this.log?.info('created vxlan device', { device: this.name, vni: this.cfg.VNI, mac: dev.mac });
    }
    if (dev.mtu !== this.mtu || !dev.up) {
      nl.setLink(dev.index, { mtu: this.mtu, up: true });
      dev = nl.requireLink(dev.index);
    }
    this.device = dev;
    return dev;
  }

  async activate(ownSubnet: Cidr): Promise<void> {
    this.ownSubnet = ownSubnet;
    this.ensureAddress();
  }

  /** The device carries the subnet's network address as a /32 (the local VTEP address). */
  private ensureAddress(): void {
    const { nl } = this.host!;
    const dev = this.device!;
    const own = this.ownSubnet;
    if (!own) return;
    const want: Cidr = { ip: networkOf(own).ip, prefix: 32 };
    let present = false;
    for (const a of nl.listAddresses({ link: dev.index, family: 4 })) {
      const c: Cidr = a.cidr;
      if (cidrEquals(c, want)) present = true;
      else nl.deleteAddress(dev.index, c);
    }
    if (!present) nl.replaceAddress(dev.index, want);
  }

  async reconcile(peers: readonly Lease[], opts: ReconcileOptions = {}): Promise<ReconcileReport> {
    const host = this.host;
    if (!host || !this.device) throw new WeftError(CniCode.Internal, 'vxlan backend: reconcile before prepare');
    const { nl } = host;
    // The device itself may have been deleted by hand; bring it back with the published MAC.
    const now = nl.getLink(this.name);
    let repairs = 0;
    if (!now || now.index !== this.device.index || !now.up || !this.fits(now, host)) {
      this.ensureDevice(nl, this.device.mac);
      repairs++;
    }
    this.ensureAddress();
    const dev = this.device;
    const publicNet = this.publicPrefix();
    const facts = `${dev.index} ${publicNet ? formatCidr(publicNet) : '-'} ${host.publicIface.index}`;
    const { want, problems, skipped } = this.desired.get(peers, facts, () => this.build(peers, dev, publicNet));
    // A re-created device lost its neighbours and FDB entries: only a full pass sees that.
    const mode = opts.full === false && repairs === 0 ? 'incremental' : 'full';
    const r = await this.dataplane!.syncOffLoop(want, mode);
    return { repairs: r.repairs + repairs, removals: r.removals, problems: [...problems, ...r.errors], skipped };
  }

  /** The routes, neighbours and FDB entries for these peers (and why any peer was skipped). */
  private build(peers: readonly Lease[], dev: Link, publicNet: Cidr | undefined): { want: DesiredState; problems: string[]; skipped: SkippedPeer[] } {
    const host = this.host!;
    const routes: DesiredRoute[] = [];
    const neighs: DesiredNeigh[] = [];
    const fdb: DesiredFdb[] = [];
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
      const data = this.peerData.get(p, this.log);
      if (!data.ok) {
        skip(p, data.reason);
        continue;
      }
      const vtep = networkOf(p.subnet).ip;
      if (this.cfg.DirectRouting && publicNet && cidrContains(publicNet, p.attrs.publicIP)) {
        // Same L2 segment: no encapsulation needed, route straight to the host.
        routes.push({ dst: p.subnet, gateway: p.attrs.publicIP, oif: host.publicIface.index, onlink: false });
        continue;
      }
      routes.push({ dst: p.subnet, gateway: vtep, oif: dev.index, onlink: true });
      neighs.push({ ip: vtep, mac: data.data.VtepMAC });
      fdb.push({ mac: data.data.VtepMAC, dst: p.attrs.publicIP });
    }
    return { want: { routes, neighs, fdb, device: dev.index }, problems, skipped };
  }

  /** The on-link prefix of the public address (for DirectRouting). */
  private publicPrefix(): Cidr | undefined {
    const host = this.host!;
    const a = host.nl.listAddresses({ link: host.publicIface.index, family: 4 }).find((x) => ipEquals(x.cidr.ip, host.publicIP));
    return a ? networkOf(a.cidr) : undefined;
  }

  async close(opts: { keepDataplane: boolean }): Promise<void> {
    await this.dataplane?.close();
    if (opts.keepDataplane || !this.host) return;
    removeWeftRoutes(this.host.nl);
    this.host.nl.deleteLink(this.name);
  }
}

export const vxlan: BackendModule<'vxlan', VxlanConfig, VxlanLeaseData> = {
  type: 'vxlan',
  config: vxlanConfig,
  leaseData: vxlanLeaseData,
  leaseDataIsPlain: vxlanLeaseDataIsPlain,
  create: (cfg) => new VxlanBackend(cfg),
};
