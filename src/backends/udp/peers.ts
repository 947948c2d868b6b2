// Peer leases → the pump's table. Pure, so the rules are unit-testable without a kernel.
import { formatCidr, formatIP, type IP } from '../../net/ip.js';
import { ipv4SubnetOf, type Lease } from '../../store/lease.js';
import type { SkippedPeer } from '../types.js';
import type { PumpRoute } from './pump.js';

export interface PeerTable {
  readonly routes: readonly PumpRoute[];
  /** Leases that could not become routes, each named. */
  readonly problems: readonly string[];
  /** The same leases by subnet, each with its problem as the reason. */
  readonly skipped: readonly SkippedPeer[];
}

/** The address families the network carries (its Network and IPv6Network). */
export interface CarriedFamilies {
  readonly ipv4: boolean;
  readonly ipv6: boolean;
}

/**
 * Every peer running the udp backend gets a route per subnet the network carries: its IPv4
 * subnet to PublicIP:port, its IPv6 subnet to PublicIPv6:port — each inner family rides the
 * underlay of the same family, as vxlan's two devices and host-gw's two next hops do, so an IPv6
 * pod's traffic never depends on the IPv4 underlay or the reverse. The port is the cluster's
 * (flannel's udp has one Port for all nodes). Peers on another backend cannot be reached through
 * this tunnel, so they are reported rather than silently routed; so is a subnet whose peer
 * publishes no address of its family. A peer with no subnet of a carried family (a lease written
 * before the network had it) simply has no route for it.
 */
export function peerTable(peers: readonly Lease[], port: number, families: CarriedFamilies = { ipv4: true, ipv6: false }): PeerTable {
  const routes: PumpRoute[] = [];
  const problems: string[] = [];
  const skipped: SkippedPeer[] = [];
  const skip = (subnet: string, reason: string): void => {
    problems.push(reason);
    skipped.push({ subnet, reason });
  };
  for (const lease of peers) {
    const subnet = formatCidr(lease.subnet);
    if (lease.attrs.backendType !== 'udp') {
      skip(subnet, `peer ${subnet} (${formatIP(lease.attrs.publicIP)}) runs backend ${JSON.stringify(lease.attrs.backendType)}, not udp: unreachable through the udp tunnel`);
      continue;
    }
    const wanted: { dst: PumpRoute['subnet']; peerIP: IP | undefined }[] = [];
    const v4 = ipv4SubnetOf(lease);
    if (v4 && families.ipv4) wanted.push({ dst: v4, peerIP: lease.attrs.publicIP.family === 4 ? lease.attrs.publicIP : undefined });
    const v6 = lease.ipv6Subnet ?? (lease.subnet.ip.family === 6 ? lease.subnet : undefined);
    if (v6 && families.ipv6) wanted.push({ dst: v6, peerIP: lease.attrs.publicIPv6 ?? (lease.attrs.publicIP.family === 6 ? lease.attrs.publicIP : undefined) });
    let programmed = 0;
    let reason: string | undefined;
    for (const { dst, peerIP } of wanted) {
      if (!peerIP) {
        const family = dst.ip.family;
        reason = `peer ${formatCidr(dst)} publishes no IPv${family} address (PublicIP${family === 6 ? 'v6' : ''}): no udp tunnel for it`;
        problems.push(reason);
        continue;
      }
      routes.push({ subnet: dst, peerIP, peerPort: port });
      programmed++;
    }
    if (programmed === 0) {
      const why = reason ?? `peer ${subnet} has no subnet of this network's address families`;
      if (reason === undefined) problems.push(why);
      skipped.push({ subnet, reason: why });
    }
  }
  return { routes, problems, skipped };
}

/** A stable key per route, to count what a new table adds and removes. */
export function routeKey(r: PumpRoute): string {
  return `${formatCidr(r.subnet)}>${formatIP(r.peerIP)}:${r.peerPort}`;
}
