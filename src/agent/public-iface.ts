// Which interface and address carry this host's tunnels and routes: --iface (a name or one of
// its addresses), --public-ip, else the interface of the default route — flannel's rules.
import { CniCode, WeftError } from '../errors.js';
import type { Link, Netlink } from '../netlink/index.js';
import { type IP, formatIP, ipEquals, tryParseIP } from '../net/ip.js';

export interface PublicInterface {
  readonly link: Link;
  readonly ip: IP;
}

function firstIPv4(nl: Netlink, link: Link): IP | undefined {
  const addrs = nl.listAddresses({ link: link.index, family: 4 }).filter((a) => a.scope === 0);
  return addrs[0]?.cidr.ip;
}

function ownerOf(nl: Netlink, ip: IP): Link | undefined {
  const a = nl.listAddresses({ family: 4 }).find((x) => ipEquals(x.cidr.ip, ip));
  return a ? nl.getLink(a.index) : undefined;
}

function linkNames(nl: Netlink): string {
  return nl.listLinks().map((l) => l.name).join(', ');
}

export function pickPublicInterface(nl: Netlink, opts: { iface?: string; publicIP?: string }): PublicInterface {
  let publicIP: IP | undefined;
  if (opts.publicIP !== undefined) {
    publicIP = tryParseIP(opts.publicIP);
    if (!publicIP || publicIP.family !== 4) throw new WeftError(CniCode.InvalidEnvironment, `--public-ip: expected an IPv4 address, got ${JSON.stringify(opts.publicIP)}`);
  }
  let link: Link | undefined;
  if (opts.iface !== undefined) {
    const asIP = tryParseIP(opts.iface);
    if (asIP) {
      link = ownerOf(nl, asIP);
      if (!link) throw new WeftError(CniCode.InvalidEnvironment, `--iface ${opts.iface}: no interface in this network namespace has that address`);
    } else {
      link = nl.getLink(opts.iface);
      if (!link) throw new WeftError(CniCode.InvalidEnvironment, `--iface ${opts.iface}: no such interface in this network namespace (have: ${linkNames(nl)})`);
    }
  } else if (publicIP) {
    link = ownerOf(nl, publicIP);
  }
  if (!link) {
    const def = nl.listRoutes({ family: 4 }).find((r) => r.dst.prefix === 0 && r.oif !== undefined);
    if (!def || def.oif === undefined) {
      throw new WeftError(CniCode.InvalidEnvironment, 'no default route to pick the public interface from; pass --iface NAME|IP or --public-ip');
    }
    link = nl.requireLink(def.oif);
  }
  const ip = publicIP ?? firstIPv4(nl, link);
  if (!ip) throw new WeftError(CniCode.InvalidEnvironment, `interface ${link.name} has no global IPv4 address; pass --public-ip`);
  if (!link.up) throw new WeftError(CniCode.InvalidEnvironment, `interface ${link.name} (${formatIP(ip)}) is down`);
  return { link, ip };
}

export function describePublic(p: PublicInterface): string {
  return `${p.link.name} ${formatIP(p.ip)}`;
}

