// Peer leases → the pump's table. Pure, so the rules are unit-testable without a kernel.
import { formatCidr, formatIP } from '../../net/ip.js';
import type { Lease } from '../../store/lease.js';
import type { SkippedPeer } from '../types.js';
import type { PumpRoute } from './pump.js';

export interface PeerTable {
  readonly routes: readonly PumpRoute[];
  /** Leases that could not become routes, each named. */
  readonly problems: readonly string[];
  /** The same leases by subnet, each with its problem as the reason. */
  readonly skipped: readonly SkippedPeer[];
}

/**
 * Every peer running the udp backend gets a route for its subnet to PublicIP:port. The port is
 * the cluster's (flannel's udp has one Port for all nodes). Peers on another backend cannot be
 * reached through this tunnel, so they are reported rather than silently routed.
 */
export function peerTable(peers: readonly Lease[], port: number): PeerTable {
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
    if (lease.subnet.ip.family !== 4) {
      skip(subnet, `peer ${subnet}: the udp backend carries IPv4 subnets only`);
      continue;
    }
    routes.push({ subnet: lease.subnet, peerIP: lease.attrs.publicIP, peerPort: port });
  }
  return { routes, problems, skipped };
}

/** A stable key per route, to count what a new table adds and removes. */
export function routeKey(r: PumpRoute): string {
  return `${formatCidr(r.subnet)}>${formatIP(r.peerIP)}:${r.peerPort}`;
}
