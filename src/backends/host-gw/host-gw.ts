// The host-gw backend: a plain route per remote subnet via the remote host's PublicIP. It only
// works when every host is on this host's L2 segment; a peer that is not gets no route (a route
// via an unreachable gateway would silently blackhole) and a problem report for /readyz. On a
// dual-stack network a peer gets two routes: its IPv4 subnet via its PublicIP and its IPv6
// subnet via its PublicIPv6 (flannel's host-gw does the same), each checked on its own.
import { z } from 'zod';
import { CniCode, WeftError } from '../../errors.js';
import { type Cidr, type IP, cidrContains, formatCidr, formatIP, networkOf } from '../../net/ip.js';
import { noLeaseData } from '../schema.js';
import { type Lease, leaseFamily } from '../../store/lease.js';
import { type DesiredRoute, type DesiredState, DataplaneSync, removeWeftRoutes } from '../../dataplane/sync.js';
import { DesiredMemo } from '../../dataplane/desired-memo.js';
import type { Backend, BackendModule, BackendPreparation, HostContext, ReconcileOptions, ReconcileReport, SkippedPeer } from '../types.js';

class HostGwBackend implements Backend {
  readonly type = 'host-gw';
  private host: HostContext | undefined;
  private dataplane: DataplaneSync | undefined;
  /** Peers already reported as unreachable, so the log says it once, not every repair pass. */
  private readonly reported = new Set<string>();
  private readonly desired = new DesiredMemo<{ want: DesiredState; problems: string[]; skipped: SkippedPeer[] }>();

  async prepare(host: HostContext): Promise<BackendPreparation> {
    this.host = host;
    this.dataplane = new DataplaneSync(host.nl);
    return { backendData: null, mtu: host.publicIface.mtu };
  }

  async activate(_ownSubnet: Cidr, _ownIPv6Subnet?: Cidr): Promise<void> {}

  async reconcile(peers: readonly Lease[], opts: ReconcileOptions = {}): Promise<ReconcileReport> {
    const host = this.host;
    if (!host) throw new WeftError(CniCode.Internal, 'host-gw backend: reconcile before prepare');
    const onLink: Cidr[] = [...host.nl.listAddresses({ link: host.publicIface.index, family: 4 }),
      ...(host.network.ipv6 ? host.nl.listAddresses({ link: host.publicIface.index, family: 6 }).filter((a) => a.scope === 0) : [])]
      .map((a) => networkOf(a.cidr));
    const facts = `${host.publicIface.index} ${onLink.map(formatCidr).join(',')}`;
    const { want, problems, skipped } = this.desired.get(peers, facts, () => this.build(peers, onLink));
    const r = await this.dataplane!.syncOffLoop(want, opts.full === false ? 'incremental' : 'full');
    return { repairs: r.repairs, removals: r.removals, problems: [...problems, ...r.errors], skipped };
  }

  /** A route per reachable peer, and a problem (logged once per peer) for each unreachable one. */
  private build(peers: readonly Lease[], onLink: readonly Cidr[]): { want: DesiredState; problems: string[]; skipped: SkippedPeer[] } {
    const host = this.host!;
    const routes: DesiredRoute[] = [];
    const problems: string[] = [];
    const skipped: SkippedPeer[] = [];
    const unreachableNow = new Set<string>();
    for (const p of peers) {
      if (p.attrs.backendType !== 'host-gw') {
        const reason = `peer ${formatCidr(p.subnet)} (${formatIP(p.attrs.publicIP)}) runs backend ${p.attrs.backendType}, not host-gw; skipped`;
        problems.push(reason);
        skipped.push({ subnet: formatCidr(p.subnet), reason });
        continue;
      }
      // Each of the peer's subnets, with the next hop of its family.
      const hops: { dst: Cidr; gateway: IP | undefined }[] = [];
      for (const f of [4, 6] as const) {
        const half = (f === 4 ? host.network.ipv4 : host.network.ipv6) ? leaseFamily(p, f) : undefined;
        if (half) hops.push({ dst: half.subnet, gateway: half.publicIP });
      }
      const key = formatCidr(p.subnet);
      let programmed = 0;
      for (const { dst, gateway } of hops) {
        if (gateway === undefined) {
          problems.push(`host-gw: peer ${key} publishes no IPv${dst.ip.family} address (PublicIP${dst.ip.family === 6 ? 'v6' : ''}); no route to ${formatCidr(dst)}`);
          continue;
        }
        if (!onLink.some((c) => cidrContains(c, gateway))) {
          const msg = `host-gw: peer ${formatCidr(dst)} at ${formatIP(gateway)} is not directly reachable from `
            + `${host.publicIface.name} (${onLink.map(formatCidr).join(', ') || 'no address'}); host-gw needs every host on one L2 segment, so no route was installed (use vxlan across subnets)`;
          problems.push(msg);
          unreachableNow.add(formatCidr(dst));
          if (!this.reported.has(formatCidr(dst))) host.log.error('peer not directly reachable; no route installed', { peer: formatCidr(dst), publicIP: formatIP(gateway), iface: host.publicIface.name });
          continue;
        }
        routes.push({ dst, gateway, oif: host.publicIface.index, onlink: false });
        programmed++;
      }
      if (programmed === 0) skipped.push({ subnet: key, reason: problems[problems.length - 1] ?? `peer ${key} has no subnet of this network's address families` });
    }
    this.reported.clear();
    for (const k of unreachableNow) this.reported.add(k);
    return { want: { routes, devices: [] }, problems, skipped };
  }

  async close(opts: { keepDataplane: boolean }): Promise<void> {
    await this.dataplane?.close();
    if (!opts.keepDataplane && this.host) removeWeftRoutes(this.host.nl);
  }
}

/** host-gw has no keys of its own (flannel's has none either). */
export const hostGwConfig = z.object({}).strict();
export type HostGwConfig = z.infer<typeof hostGwConfig>;

export const hostGw: BackendModule<'host-gw', HostGwConfig> = {
  type: 'host-gw',
  config: hostGwConfig,
  leaseData: noLeaseData,
  create: () => new HostGwBackend(),
  ipv6: true,
};
