// The routed backends on the source node: host-gw (a proto-87 route to the peer's subnet via its
// PublicIP), bgp (a proto-88 route learnt from a BGP peer) and udp (the Network routed into its
// TUN device; the per-peer table lives inside weftd). Only the route is weft's here; the rest is
// the underlay's.
import { cidrContainsCidr, cidrEquals, formatCidr, formatIP, ipEquals, networkOf } from '../net/ip.js';
import { WEFT_BGP_ROUTE_PROTOCOL, WEFT_ROUTE_PROTOCOL } from '../dataplane/protocols.js';
import { type Lease, leaseFamily } from '../store/lease.js';
import { describeRoute, ipCmd, lookupRoute, routeIsUnicast, withNl } from './kernel.js';
import { repairHint } from './repair.js';
import type { DoctorContext, DoctorNode, Hop } from './types.js';

export function routedBackendHops(ctx: DoctorContext, node: DoctorNode, fullLease: Lease, type: string): Hop[] {
  const where = `node ${node.name}`;
  // The destination's family picks the lease's half: its subnet and its address of that family.
  const half = leaseFamily(fullLease, ctx.dst.ip.family);
  const lease = { subnet: half?.subnet ?? fullLease.subnet, attrs: { publicIP: half?.publicIP ?? fullLease.attrs.publicIP } };
  const subnet = formatCidr(lease.subnet);
  const title = `${type} route to ${subnet}`;
  return withNl(node, (nl) => {
    const r = lookupRoute(nl, ctx.dst.ip);
    const seen = r ? `${formatIP(ctx.dst.ip)} goes ${describeRoute(nl, r)}` : `no route to ${formatIP(ctx.dst.ip)}`;
    if (type === 'bgp') {
      // A route reflector or aggregate may advertise a covering prefix: any proto-88 route that holds the subnet will do.
      if (r && r.protocol === WEFT_BGP_ROUTE_PROTOCOL && routeIsUnicast(r) && cidrContainsCidr(networkOf(r.dst), lease.subnet)) {
        return [{ id: 'backend-route', where, title, status: 'ok', detail: describeRoute(nl, r) }];
      }
      return [{
        id: 'backend-route', where, title, status: 'fail', detail: `${seen}, no BGP-learnt (proto ${WEFT_BGP_ROUTE_PROTOCOL}) route`,
        cause: `no BGP peer advertises ${subnet} to ${node.name}, or weftd did not install it${repairHint(ctx, node)}`,
        fix: `${node.nsName !== undefined ? `ip netns exec ${node.nsName} ` : ''}weftctl bgp  (are the sessions Established? does the peer announce ${subnet}?)`,
      }];
    }
    if (type === 'udp') {
      // udp routes the whole Network into its TUN device; which peer gets a packet is weftd's own table.
      const dev = r?.oif !== undefined ? nl.getLink(r.oif) : undefined;
      if (r && routeIsUnicast(r) && dev?.kind === 'tun') {
        return [{ id: 'backend-route', where, title, status: 'ok', detail: `${describeRoute(nl, r)} (the peer table is inside weftd)` }];
      }
      return [{
        id: 'backend-route', where, title, status: 'fail', detail: `${seen}, not into weft's TUN device`,
        cause: `${node.name} does not hand ${ctx.dst.name}'s traffic to weftd's udp tunnel${repairHint(ctx, node)}`,
        fix: `restart weftd on ${node.name} (it re-creates the device and its route)`,
      }];
    }
    const ok = r !== undefined && r.protocol === WEFT_ROUTE_PROTOCOL && cidrEquals(networkOf(r.dst), lease.subnet)
      && (type !== 'host-gw' || (r.gateway !== undefined && ipEquals(r.gateway, lease.attrs.publicIP)));
    if (ok) return [{ id: 'backend-route', where, title, status: 'ok', detail: describeRoute(nl, r) }];
    return [{
      id: 'backend-route', where, title, status: 'fail', detail: seen,
      cause: `${node.name} has no weft route to ${ctx.dst.name}'s subnet${repairHint(ctx, node)}`,
      fix: `${ipCmd(node)} route replace ${subnet} via ${formatIP(lease.attrs.publicIP)} proto ${WEFT_ROUTE_PROTOCOL}`,
    }];
  });
}
