// Read-only kernel look-ups the hop checks share: the route the kernel would pick for an address
// (longest prefix in the main table; policy routing is not modelled) and how to spell a command
// for a place (`ip -n NAME …` or plain `ip …`).
import { Netlink, type Route } from '../netlink/index.js';
import { type IP, cidrContains, formatCidr, formatIP } from '../net/ip.js';
import type { Place } from './types.js';

export function withNl<T>(place: Place, fn: (nl: Netlink) => T): T {
  return Netlink.with(place.nsPath, fn);
}

/** The main-table route the kernel would use for ip (longest prefix, then lowest metric). */
export function lookupRoute(nl: Netlink, ip: IP): Route | undefined {
  let best: Route | undefined;
  for (const r of nl.listRoutes({ family: ip.family })) {
    if (!cidrContains(r.dst, ip)) continue;
    if (!best || r.dst.prefix > best.dst.prefix || (r.dst.prefix === best.dst.prefix && (r.priority ?? 0) < (best.priority ?? 0))) best = r;
  }
  return best;
}

/** Routes that forward; a blackhole/unreachable/prohibit route drops what it matches. */
export function routeIsUnicast(r: Route): boolean {
  return r.type === 'unicast';
}

export function describeRoute(nl: Netlink, r: Route): string {
  const dev = r.oif !== undefined ? nl.getLink(r.oif)?.name ?? `if${r.oif}` : undefined;
  return [
    r.dst.prefix === 0 ? 'default' : formatCidr(r.dst),
    r.gateway ? `via ${formatIP(r.gateway)}` : '',
    dev ? `dev ${dev}` : '',
    r.onlink ? 'onlink' : '',
    `proto ${r.protocol}`,
    routeIsUnicast(r) ? '' : `type ${r.type}`,
  ].filter((s) => s !== '').join(' ');
}

/** `ip -n NAME` for a named namespace, `ip` for doctor's own. */
export function ipCmd(place: Place): string {
  return place.nsName !== undefined ? `ip -n ${place.nsName}` : 'ip';
}

export function bridgeCmd(place: Place): string {
  return place.nsName !== undefined ? `bridge -n ${place.nsName}` : 'bridge';
}
