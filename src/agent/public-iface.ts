// Which interface and addresses carry this host's tunnels and routes: --iface (a name or one of
// its addresses), --public-ip / --public-ipv6, else the interface of the default route (IPv4,
// then IPv6) — flannel's rules. A host with only an IPv6 underlay is known by its IPv6 address.
import { CniCode, WeftError } from '../errors.js';
import type { Link, Netlink } from '../netlink/index.js';
import { type IP, formatIP, ipEquals, tryParseIP } from '../net/ip.js';

export interface PublicInterface {
  readonly link: Link;
  /** The IPv4 address, or the IPv6 one on an interface without IPv4 (see LeaseAttrs.publicIP). */
  readonly ip: IP;
  /** The interface's global IPv6 address (or --public-ipv6), if it has one. */
  readonly ip6?: IP | undefined;
}

/** IFA_F_TEMPORARY (privacy), DADFAILED, DEPRECATED, TENTATIVE: addresses that come and go. */
const UNSTABLE = 0x01 | 0x08 | 0x20 | 0x40;

/**
 * The interface's first global address of the family (scope universe: not link-local), skipping
 * IPv6 addresses a tunnel must not be bound to: temporary (privacy) ones rotate, deprecated ones
 * are on their way out, tentative or failed ones are not usable yet or at all.
 */
function firstGlobal(nl: Netlink, link: Link, family: 4 | 6): IP | undefined {
  const addrs = nl.listAddresses({ link: link.index, family }).filter((a) => a.scope === 0 && (family === 4 || (a.flags & UNSTABLE) === 0));
  return addrs[0]?.cidr.ip;
}

function ownerOf(nl: Netlink, ip: IP): Link | undefined {
  const a = nl.listAddresses({ family: ip.family }).find((x) => ipEquals(x.cidr.ip, ip));
  return a ? nl.getLink(a.index) : undefined;
}

function parsePublic(flag: string, text: string | undefined, family: 4 | 6): IP | undefined {
  if (text === undefined) return undefined;
  const ip = tryParseIP(text);
  if (!ip || ip.family !== family) throw new WeftError(CniCode.InvalidEnvironment, `${flag}: expected an IPv${family} address, got ${JSON.stringify(text)}`);
  return ip;
}

function linkNames(nl: Netlink): string {
  return nl.listLinks().map((l) => l.name).join(', ');
}

export function pickPublicInterface(nl: Netlink, opts: { iface?: string; publicIP?: string; publicIPv6?: string }): PublicInterface {
  const publicIP = parsePublic('--public-ip', opts.publicIP, 4);
  const publicIPv6 = parsePublic('--public-ipv6', opts.publicIPv6, 6);
  let link: Link | undefined;
  /** --iface given as an IPv6 address: that address is the one published. */
  let ifaceIPv6: IP | undefined;
  if (opts.iface !== undefined) {
    const asIP = tryParseIP(opts.iface);
    if (asIP?.family === 6) ifaceIPv6 = asIP;
    if (asIP) {
      link = ownerOf(nl, asIP);
      if (!link) throw new WeftError(CniCode.InvalidEnvironment, `--iface ${opts.iface}: no interface in this network namespace has that address`);
    } else {
      link = nl.getLink(opts.iface);
      if (!link) throw new WeftError(CniCode.InvalidEnvironment, `--iface ${opts.iface}: no such interface in this network namespace (have: ${linkNames(nl)})`);
    }
  } else if (publicIP ?? publicIPv6) {
    link = ownerOf(nl, (publicIP ?? publicIPv6)!);
  }
  if (!link) {
    const def = nl.listRoutes({ family: 4 }).find((r) => r.dst.prefix === 0 && r.oif !== undefined)
      ?? nl.listRoutes({ family: 6 }).find((r) => r.dst.prefix === 0 && r.oif !== undefined);
    if (!def || def.oif === undefined) {
      throw new WeftError(CniCode.InvalidEnvironment, 'no default route to pick the public interface from; pass --iface NAME|IP or --public-ip');
    }
    link = nl.requireLink(def.oif);
  }
  if (publicIPv6 && !nl.listAddresses({ link: link.index, family: 6 }).some((a) => ipEquals(a.cidr.ip, publicIPv6))) {
    // The tunnels and the on-link checks use the public interface: the address must be on it.
    throw new WeftError(CniCode.InvalidEnvironment, `--public-ipv6 ${formatIP(publicIPv6)} is not an address of ${link.name}, the public interface`);
  }
  const ip6 = publicIPv6 ?? ifaceIPv6 ?? firstGlobal(nl, link, 6);
  const ip = publicIP ?? firstGlobal(nl, link, 4) ?? ip6;
  if (!ip) throw new WeftError(CniCode.InvalidEnvironment, `interface ${link.name} has no global IPv4 or IPv6 address; pass --public-ip or --public-ipv6`);
  if (!link.up) throw new WeftError(CniCode.InvalidEnvironment, `interface ${link.name} (${formatIP(ip)}) is down`);
  return { link, ip, ...(ip6 && { ip6 }) };
}

export function describePublic(p: PublicInterface): string {
  return `${p.link.name} ${formatIP(p.ip)}${p.ip6 && p.ip6 !== p.ip ? ` ${formatIP(p.ip6)}` : ''}`;
}

