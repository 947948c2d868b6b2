// Routed mode (Calico's pattern): one veth per container and no bridge. The container holds its
// address as a /32 and reaches everything through a link-local next hop, 169.254.1.1, that no
// one owns: the host end answers ARP for it (proxy_arp, plus a permanent neighbour entry in the
// container so the first packet never waits on ARP), and the host reaches the container through
// a /32 route on the host end. The host end carries no IPv4 address at all. IPv6 the same way:
// the container holds a /128 and leaves through fe80::1, the host end's one link-local address
// (a permanent neighbour in the container again), and the host routes the /128 to the host end.
import { createHash } from 'node:crypto';
import { CniCode, WeftError } from '../../errors.js';
import { isNetlinkError, nlconst, type Link, type Netlink, type Route } from '../../netlink/index.js';
import type { Cidr, IP } from '../../net/ip.js';
import { cidrEquals, formatCidr, formatIP, ipEquals, parseIP } from '../../net/ip.js';
import { readSysctl, writeSysctl } from '../../netns/index.js';

/** The container's next hop for everything. */
export const ROUTED_GATEWAY: IP = parseIP('169.254.1.1');
/** Its IPv6 next hop: the host end's link-local address (the same on every host end). */
export const ROUTED_GATEWAY6: IP = parseIP('fe80::1');

/** The container's next hop for a family. */
export function routedGateway(family: 4 | 6): IP {
  return family === 4 ? ROUTED_GATEWAY : ROUTED_GATEWAY6;
}

import { ROUTED_ROUTE_PROTO } from '../../dataplane/protocols.js';

/** Host-end names start with this; the rest is derived from the attachment. */
export const HOST_VETH_PREFIX = 'wr';

/**
 * The host end's name, derived from the attachment (as Calico does) so DEL and CHECK find it
 * without a result, and a crashed ADD's leftover is recognised by the retry.
 */
export function hostVethName(containerId: string, ifname: string): string {
  return HOST_VETH_PREFIX + createHash('sha256').update(`${containerId}/${ifname}`).digest('hex').slice(0, 13);
}

export function hostRouteOf(ip: IP): Cidr {
  return { ip, prefix: ip.family === 4 ? 32 : 128 };
}

export interface RoutedVeth {
  host: Link;
  container: Link;
}

/** The pair, the container end born inside its namespace. Refuses to reuse an existing name. */
export function createRoutedVeth(
  hostNl: Netlink,
  containerNl: Netlink,
  o: { netns: string; ifname: string; hostName: string; mtu?: number; mac?: string },
): RoutedVeth {
  if (containerNl.getLink(o.ifname)) {
    throw new WeftError(CniCode.InvalidNetworkConfig, `container interface ${o.ifname} already exists in ${o.netns}`);
  }
  try {
    hostNl.createVeth({
      name: o.hostName,
      peerName: o.ifname,
      peerNsPath: o.netns,
      ...(o.mtu !== undefined && { mtu: o.mtu }),
      ...(o.mac !== undefined && { peerMac: o.mac }),
    });
  } catch (err) {
    if (isNetlinkError(err, 'EEXIST')) {
      throw new WeftError(CniCode.InvalidNetworkConfig, `host interface ${o.hostName} for this attachment already exists (DEL it first)`, '', { cause: err });
    }
    throw err;
  }
  return { host: hostNl.requireLink(o.hostName), container: containerNl.requireLink(o.ifname) };
}

/**
 * proxy_arp on the host end (it answers for 169.254.1.1), forwarding, the /32 routes; for IPv6
 * containers fe80::1 on the host end (no DAD: every host end has it, each on its own link),
 * IPv6 forwarding and the /128 routes.
 */
export function configureHostSide(hostNl: Netlink, host: Link, containerIps: readonly IP[]): void {
  writeSysctl(`net/ipv4/conf/${host.name}/proxy_arp`, 1);
  writeSysctl('net.ipv4.ip_forward', 1);
  if (containerIps.some((ip) => ip.family === 6)) {
    writeSysctl('net.ipv6.conf.all.forwarding', 1);
    hostNl.replaceAddress(host, { ip: ROUTED_GATEWAY6, prefix: 64 }, { noDad: true });
  }
  hostNl.setLink(host, { up: true });
  for (const ip of containerIps) {
    hostNl.replaceRoute({ dst: hostRouteOf(ip), oif: host, scope: 'link', protocol: ROUTED_ROUTE_PROTO });
  }
}

/**
 * The container side: /32 addresses, link up, the link-scope route that makes 169.254.1.1
 * reachable, its neighbour entry (the host end's MAC), then the routes through it.
 */
export function configureContainerSide(nl: Netlink, link: Link, addresses: readonly Cidr[], routes: readonly Cidr[], hostMac: string): void {
  for (const a of addresses) nl.replaceAddress(link, a, a.ip.family === 6 ? { noDad: true } : {});
  nl.setLink(link, { up: true });
  if (addresses.some((a) => a.ip.family === 4)) {
    nl.replaceRoute({ dst: hostRouteOf(ROUTED_GATEWAY), oif: link, scope: 'link' });
    nl.replaceNeigh({ link, ip: ROUTED_GATEWAY, mac: hostMac, state: nlconst.NUD_PERMANENT });
  }
  // fe80::/64 is on the link already (the kernel's own link-local route): only the neighbour.
  if (addresses.some((a) => a.ip.family === 6)) nl.replaceNeigh({ link, ip: ROUTED_GATEWAY6, mac: hostMac, state: nlconst.NUD_PERMANENT });
  for (const dst of routes) {
    const family = dst.ip.family;
    nl.replaceRoute({ dst: dst.prefix === 0 ? 'default' : dst, family, oif: link, gateway: routedGateway(family) });
  }
}

function isGatewayLinkRoute(r: Route, link: Link): boolean {
  return r.oif === link.index && r.dst.prefix === 32 && ipEquals(r.dst.ip, ROUTED_GATEWAY) && r.gateway === undefined;
}

/** CHECK, container side: the link route to the gateway (addresses and routes go through verifyContainerInterface). */
export function verifyGatewayRoute(nl: Netlink, link: Link, families: readonly (4 | 6)[] = [4]): void {
  if (families.includes(6) && !nl.listNeigh({ link: link.index, family: 6 }).some((n) => n.permanent && ipEquals(n.ip, ROUTED_GATEWAY6))) {
    throw new WeftError(CniCode.Internal, `${link.name}: the neighbour entry of ${formatIP(ROUTED_GATEWAY6)} is missing`);
  }
  if (families.includes(4) && !nl.listRoutes({ family: 4 }).some((r) => isGatewayLinkRoute(r, link))) {
    throw new WeftError(CniCode.Internal, `${link.name}: link route to ${formatIP(ROUTED_GATEWAY)} is missing`);
  }
}

/** CHECK, host side: the host end is the container end's peer, proxies ARP, and routes each /32. */
export function verifyHostSide(hostNl: Netlink, hostName: string, container: Link, containerIps: readonly IP[]): void {
  const host = hostNl.getLink(hostName);
  if (!host || host.kind !== 'veth') throw new WeftError(CniCode.Internal, `host end ${hostName} of ${container.name} is missing`);
  if (container.parentIndex !== host.index) throw new WeftError(CniCode.Internal, `${hostName} is not the peer of ${container.name}`);
  if (readSysctl(`net/ipv4/conf/${hostName}/proxy_arp`) !== '1') throw new WeftError(CniCode.Internal, `proxy_arp is off on ${hostName}`);
  const routes = [...hostNl.listRoutes({ family: 4, protocol: ROUTED_ROUTE_PROTO, oif: host }), ...hostNl.listRoutes({ family: 6, protocol: ROUTED_ROUTE_PROTO, oif: host })];
  for (const ip of containerIps) {
    if (!routes.some((r) => cidrEquals(r.dst, hostRouteOf(ip)))) {
      throw new WeftError(CniCode.Internal, `host route ${formatCidr(hostRouteOf(ip))} dev ${hostName} proto ${ROUTED_ROUTE_PROTO} is missing`);
    }
  }
}
