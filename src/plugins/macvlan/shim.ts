// The standard remedy for macvlan's blind spot: the kernel never delivers frames between a master
// and its own macvlans, so a host cannot reach its macvlan containers through the master. A
// second macvlan on the host (bridge mode, like the containers') is a sibling of theirs, and the
// macvlan driver switches frames between siblings internally. The shim gets a host address on the
// containers' segment and a route to their range; traffic to them then leaves through it.
import { CniCode, WeftError } from '../../errors.js';
import { isNetlinkError, type Link, type LinkRef, type Netlink } from '../../netlink/index.js';
import type { Cidr } from '../../net/ip.js';
import { cidrEquals, networkOf } from '../../net/ip.js';

export interface MacvlanShimOptions {
  /** The shim device's name, e.g. "weft-shim". */
  readonly name: string;
  /** The host interface the containers' macvlans hang off. */
  readonly master: LinkRef;
  /** The host's own address on the shim: usually a /32 from the containers' subnet kept out of IPAM. */
  readonly address: Cidr;
  /** Destinations reached through the shim: the containers' range (or ranges). */
  readonly routes: readonly Cidr[];
}

/**
 * Creates (or completes) the shim: bridge-mode macvlan on master, address, up, routes. Safe to
 * call again; a device of that name which is not a macvlan on master is refused.
 */
export function ensureMacvlanShim(nl: Netlink, o: MacvlanShimOptions): Link {
  const master = nl.requireLink(o.master);
  let shim = nl.getLink(o.name);
  if (!shim) {
    try {
      shim = nl.createMacvlan({ name: o.name, master, mode: 'bridge' });
    } catch (err) {
      if (!isNetlinkError(err, 'EEXIST')) throw err;
      shim = nl.requireLink(o.name);
    }
  }
  if (shim.info?.kind !== 'macvlan' || shim.info.mode !== 'bridge' || shim.parentIndex !== master.index) {
    throw new WeftError(CniCode.InvalidNetworkConfig, `${o.name} exists and is not a bridge-mode macvlan on ${master.name}`);
  }
  if (!nl.listAddresses({ link: shim, family: o.address.ip.family }).some((a) => cidrEquals(a.cidr, o.address))) {
    nl.replaceAddress(shim, o.address, o.address.ip.family === 6 ? { noDad: true } : {});
  }
  nl.setLink(shim, { up: true });
  for (const dst of o.routes) {
    nl.replaceRoute({ dst: networkOf(dst), oif: shim, scope: 'link', src: o.address.ip });
  }
  return nl.requireLink(shim.index);
}

/** Removes the shim (its address and routes go with it); false when there was none. */
export function removeMacvlanShim(nl: Netlink, name: string): boolean {
  const shim = nl.getLink(name);
  if (!shim) return false;
  if (shim.info?.kind !== 'macvlan') throw new WeftError(CniCode.InvalidNetworkConfig, `${name} is not a macvlan shim (${shim.kind ?? 'plain'} device)`);
  return nl.deleteLink(shim.index);
}

