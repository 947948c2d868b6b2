// vxlan on the source node: the device (present, up, at the network MTU), the onlink route to the
// destination's subnet via its VTEP address, the permanent neighbour entry for that address
// (→ the peer's VtepMAC) and the FDB entry sending that MAC to the peer's PublicIP. All four are
// weftd's (see src/backends/vxlan/vxlan.ts); a missing one is put back by its next repair pass.
import { cidrContains, cidrEquals, formatCidr, formatIP, ipEquals, networkOf } from '../net/ip.js';
import { WEFT_ROUTE_PROTOCOL } from '../dataplane/protocols.js';
import { vxlan, vxlanDeviceName } from '../backends/vxlan/vxlan.js';
import { checkLeaseData } from '../backends/lease-data.js';
import { type Lease, leaseFamily } from '../store/lease.js';
import { bridgeCmd, describeRoute, ipCmd, lookupRoute, withNl } from './kernel.js';
import { repairHint } from './repair.js';
import type { DoctorContext, DoctorNode, Hop } from './types.js';

/** The peer's VtepMAC as weftd's vxlan backend reads it (undefined when its lease data is bad). */
function vtepMac(data: unknown): string | undefined {
  const d = checkLeaseData(vxlan, data);
  return d.ok ? d.data.VtepMAC.toLowerCase() : undefined;
}

/**
 * The destination's family picks the device: weft.<VNI> over the IPv4 underlay, weft-v6.<VNI>
 * over the IPv6 one, each with the peer's subnet, VtepMAC and address of that family.
 */
export function vxlanHops(ctx: DoctorContext, node: DoctorNode, fullLease: Lease): Hop[] {
  // The parsed config carries its defaults (VNI 1 when the config names none).
  const vni = Number(ctx.backend?.settings.VNI ?? 1);
  const family = ctx.dst.ip.family;
  const devName = vxlanDeviceName(vni, family);
  const where = `node ${node.name}`;
  const half = leaseFamily(fullLease, family);
  if (!half?.publicIP) {
    return [{ id: 'vxlan-device', where, title: `vxlan device ${devName}`, status: 'fail', detail: `the lease of ${formatCidr(fullLease.subnet)} publishes no IPv${family} subnet or address`, cause: `its node cannot be reached over IPv${family}`, fix: `check the network config's EnableIPv${family} and that node's --public-ip${family === 6 ? 'v6' : ''}` }];
  }
  const lease = { subnet: half.subnet, attrs: { publicIP: half.publicIP } };
  const ip = ipCmd(node);
  const hint = repairHint(ctx, node);
  const subnet = formatCidr(lease.subnet);
  const vtep = networkOf(lease.subnet).ip;
  const mac = vtepMac(half.backendData);
  // Pods have one MTU for both families (the smaller device's): on a dual-stack node the other
  // device may carry more than FLANNEL_MTU, only less is wrong.
  const dual = node.env?.subnet !== undefined && node.env.ipv6Subnet !== undefined;
  return withNl(node, (nl) => {
    const hops: Hop[] = [];
    const dev = nl.getLink(devName);
    const want = node.env?.mtu;
    if (!dev) {
      hops.push({ id: 'vxlan-device', where, title: `vxlan device ${devName}`, status: 'fail', detail: `no ${devName} on ${node.name}`, cause: 'nothing encapsulates pod traffic to other nodes', fix: `restart weftd on ${node.name} (it creates ${devName})` });
      return hops;
    }
    if (!dev.up) {
      hops.push({ id: 'vxlan-device', where, title: `vxlan device ${devName}`, status: 'fail', detail: `${devName} is down`, cause: `nothing leaves through a down device${hint}`, fix: `${ip} link set dev ${devName} up` });
    } else if (want !== undefined && (dual ? dev.mtu < want : dev.mtu !== want)) {
      hops.push({
        id: 'vxlan-device', where, title: `vxlan device ${devName}`, status: 'fail',
        detail: `${devName} MTU ${dev.mtu}, network MTU ${want} (FLANNEL_MTU)`,
        cause: dev.mtu < want ? `pods send ${want}-byte packets that ${devName} cannot carry` : `encapsulated ${dev.mtu}-byte packets exceed the underlay's MTU`,
        fix: `${ip} link set dev ${devName} mtu ${want}`,
      });
    } else {
      hops.push({ id: 'vxlan-device', where, title: `vxlan device ${devName}`, status: 'ok', detail: `${devName} up, MTU ${dev.mtu}` });
    }

    const r = lookupRoute(nl, ctx.dst.ip);
    const direct = r !== undefined && r.protocol === WEFT_ROUTE_PROTOCOL && cidrEquals(networkOf(r.dst), lease.subnet) && r.gateway !== undefined && ipEquals(r.gateway, lease.attrs.publicIP);
    const encap = r !== undefined && r.protocol === WEFT_ROUTE_PROTOCOL && cidrEquals(networkOf(r.dst), lease.subnet) && r.oif === dev.index && r.gateway !== undefined && ipEquals(r.gateway, vtep);
    const routeFix = `${ip} route replace ${subnet} via ${formatIP(vtep)} dev ${devName} onlink proto ${WEFT_ROUTE_PROTOCOL}`;
    if (!encap && !direct) {
      hops.push({
        id: 'backend-route', where, title: `route to ${subnet}`, status: 'fail',
        detail: r ? `${formatIP(ctx.dst.ip)} goes ${describeRoute(nl, r)}, not weft's route to ${subnet}` : `no route to ${formatIP(ctx.dst.ip)}`,
        cause: `${node.name} does not send ${ctx.dst.name}'s subnet into the vxlan overlay${hint}`, fix: routeFix,
      });
      return hops;
    }
    hops.push({ id: 'backend-route', where, title: `route to ${subnet}`, status: 'ok', detail: describeRoute(nl, r!) });
    if (direct) {
      hops.push({ id: 'vxlan-neigh', where, title: 'VTEP neighbour', status: 'skip', detail: 'DirectRouting: same segment, no encapsulation' });
      return hops;
    }

    if (mac === undefined) {
      hops.push({ id: 'vxlan-neigh', where, title: 'VTEP neighbour', status: 'fail', detail: `the lease of ${subnet} publishes no VtepMAC`, cause: 'nobody can address the peer\'s VTEP', fix: `restart weftd on the node with public IP ${formatIP(lease.attrs.publicIP)}` });
      return hops;
    }
    const n = nl.listNeigh({ link: dev.index, family }).find((x) => ipEquals(x.ip, vtep));
    const neighFix = `${ip} neigh replace ${formatIP(vtep)} lladdr ${mac} dev ${devName} nud permanent`;
    if (!n || n.mac?.toLowerCase() !== mac) {
      hops.push({
        id: 'vxlan-neigh', where, title: `neighbour ${formatIP(vtep)}`, status: 'fail',
        detail: n ? `${formatIP(vtep)} → ${n.mac ?? '(incomplete)'}, the lease says ${mac}` : `no neighbour entry for ${formatIP(vtep)} on ${devName}`,
        cause: `learning is off, so the kernel cannot resolve the peer VTEP's MAC and drops the packet${hint}`, fix: neighFix,
      });
      return hops;
    }
    hops.push({ id: 'vxlan-neigh', where, title: `neighbour ${formatIP(vtep)}`, status: 'ok', detail: `${formatIP(vtep)} lladdr ${mac}${n.permanent ? ' permanent' : ''}` });

    const fdb = nl.listFdb({ link: dev.index }).filter((e) => e.mac.toLowerCase() === mac);
    const fdbFix = `${bridgeCmd(node)} fdb replace ${mac} dev ${devName} dst ${formatIP(lease.attrs.publicIP)} self permanent`;
    const good = fdb.find((e) => e.dst !== undefined && ipEquals(e.dst, lease.attrs.publicIP));
    if (!good) {
      hops.push({
        id: 'vxlan-fdb', where, title: `FDB ${mac}`, status: 'fail',
        detail: fdb.length > 0 ? `${mac} → ${fdb.map((e) => (e.dst ? formatIP(e.dst) : '?')).join(', ')}, the lease says ${formatIP(lease.attrs.publicIP)}` : `no FDB entry for ${mac} on ${devName}`,
        cause: `${devName} does not know which node to tunnel ${ctx.dst.name}'s frames to, so it drops them${hint}`, fix: fdbFix,
      });
      return hops;
    }
    hops.push({ id: 'vxlan-fdb', where, title: `FDB ${mac}`, status: 'ok', detail: `${mac} dst ${formatIP(lease.attrs.publicIP)}` });

    const u = lookupRoute(nl, lease.attrs.publicIP);
    if (!u || (u.oif !== undefined && u.oif === dev.index) || cidrContains(lease.subnet, lease.attrs.publicIP)) {
      hops.push({ id: 'underlay-route', where, title: `underlay route to ${formatIP(lease.attrs.publicIP)}`, status: 'fail', detail: u ? describeRoute(nl, u) : `no route to ${formatIP(lease.attrs.publicIP)}`, cause: 'the encapsulated packet cannot reach the peer node', fix: `check ${node.name}'s uplink and its routes (${ip} route get ${formatIP(lease.attrs.publicIP)})` });
    } else {
      hops.push({ id: 'underlay-route', where, title: `underlay route to ${formatIP(lease.attrs.publicIP)}`, status: 'ok', detail: describeRoute(nl, u) });
    }
    return hops;
  });
}
