// RTM_*ADDR: struct ifaddrmsg {family u8, prefixlen u8, flags u8, scope u8, index u32} + IFA_*.

import { WeftError, CniCode } from '../errors.js';
import { lastAddress, type Cidr, type IP, type IPFamily } from '../net/ip.js';
import { AttrSet, nla, type Attr, smallBuffer } from './attrs.js';
import * as C from './constants.js';
import { afOf, familyOfAf } from './family.js';
import type { NlMessage, RequestSpec } from './message.js';

export const IFADDRMSG_LEN = 8;

export function ifaddrmsg(h: { family: number; prefixlen?: number; flags?: number; scope?: number; index?: number }): Buffer {
  const b = smallBuffer(IFADDRMSG_LEN);
  b.writeUInt8(h.family, 0);
  b.writeUInt8(h.prefixlen ?? 0, 1);
  b.writeUInt8((h.flags ?? 0) & 0xff, 2);
  b.writeUInt8(h.scope ?? 0, 3);
  b.writeUInt32LE(h.index ?? 0, 4);
  return b;
}

export interface Address {
  readonly index: number;
  readonly family: IPFamily;
  /** The interface's own address with its prefix (IFA_LOCAL, or IFA_ADDRESS for IPv6). */
  readonly cidr: Cidr;
  /** The far end of a point-to-point address, when it differs from the local one. */
  readonly peer?: IP;
  readonly broadcast?: IP;
  readonly scope: number;
  /** IFA_F_* (the 32-bit IFA_FLAGS when present). */
  readonly flags: number;
  readonly label?: string;
}

export interface AddressOptions {
  /** IPv4 broadcast; default: computed from the prefix (below /31), like `brd +`. false: none. */
  readonly broadcast?: IP | false;
  readonly peer?: IP;
  /** Skip duplicate address detection (IPv6). */
  readonly noDad?: boolean;
  /** Do not add the prefix route for the address's subnet. */
  readonly noPrefixRoute?: boolean;
  readonly scope?: number;
  readonly label?: string;
}

export function decodeAddress(msg: NlMessage): Address | undefined {
  const p = msg.payload;
  if (p.length < IFADDRMSG_LEN) throw new WeftError(CniCode.Netlink, `truncated address message (${p.length} bytes)`);
  const family = familyOfAf(p.readUInt8(0));
  if (!family) return undefined;
  const prefix = p.readUInt8(1);
  const a = new AttrSet(p.subarray(IFADDRMSG_LEN));
  const local = a.ip(C.IFA_LOCAL);
  const address = a.ip(C.IFA_ADDRESS);
  const own = local ?? address;
  if (!own) return undefined;
  const peer = local && address && address.value !== local.value ? address : undefined;
  const broadcast = a.ip(C.IFA_BROADCAST);
  const label = a.str(C.IFA_LABEL);
  return {
    index: p.readUInt32LE(4),
    family,
    cidr: { ip: own, prefix },
    scope: p.readUInt8(3),
    flags: a.u32(C.IFA_FLAGS) ?? p.readUInt8(2),
    ...(peer && { peer }),
    ...(broadcast && { broadcast }),
    ...(label !== undefined && { label }),
  };
}

function addrAttrs(cidr: Cidr, opts: AddressOptions): Attr[] {
  const attrs: Attr[] = [nla.ip(C.IFA_LOCAL, cidr.ip), nla.ip(C.IFA_ADDRESS, opts.peer ?? cidr.ip)];
  if (cidr.ip.family === 4 && opts.broadcast !== false) {
    const brd = opts.broadcast ?? (cidr.prefix < 31 && !opts.peer ? lastAddress(cidr) : undefined);
    if (brd) attrs.push(nla.ip(C.IFA_BROADCAST, brd));
  }
  if (opts.label !== undefined) attrs.push(nla.str(C.IFA_LABEL, opts.label));
  const flags = (opts.noDad ? C.IFA_F_NODAD : 0) | (opts.noPrefixRoute ? C.IFA_F_NOPREFIXROUTE : 0);
  if (flags) attrs.push(nla.u32(C.IFA_FLAGS, flags));
  return attrs;
}

export function addressAddRequest(index: number, cidr: Cidr, opts: AddressOptions = {}, replace = false): RequestSpec {
  const flags = (opts.noDad ? C.IFA_F_NODAD : 0) | (opts.noPrefixRoute ? C.IFA_F_NOPREFIXROUTE : 0);
  return {
    type: C.RTM_NEWADDR,
    flags: C.NLM_F_REQUEST | C.NLM_F_ACK | C.NLM_F_CREATE | (replace ? C.NLM_F_REPLACE : C.NLM_F_EXCL),
    fixed: ifaddrmsg({ family: afOf(cidr.ip.family), prefixlen: cidr.prefix, flags, scope: opts.scope ?? 0, index }),
    attrs: addrAttrs(cidr, opts),
  };
}

export function addressDeleteRequest(index: number, cidr: Cidr): RequestSpec {
  return {
    type: C.RTM_DELADDR,
    flags: C.NLM_F_REQUEST | C.NLM_F_ACK,
    fixed: ifaddrmsg({ family: afOf(cidr.ip.family), prefixlen: cidr.prefix, index }),
    attrs: [nla.ip(C.IFA_LOCAL, cidr.ip)],
  };
}

/**
 * With strict checking the kernel filters by ifa_index itself. netnsId dumps the namespace with
 * that id (as the socket's namespace numbers it, e.g. a veth's IFLA_LINK_NETNSID) instead of the
 * socket's own; index is then an index in that namespace.
 */
export function addressDumpRequest(family?: IPFamily, index?: number, netnsId?: number): RequestSpec {
  const attrs: Attr[] = [];
  if (netnsId !== undefined) {
    const b = Buffer.allocUnsafe(4);
    b.writeInt32LE(netnsId);
    attrs.push(nla.bytes(C.IFA_TARGET_NETNSID, b));
  }
  return {
    type: C.RTM_GETADDR,
    flags: C.NLM_F_REQUEST | C.NLM_F_DUMP,
    fixed: ifaddrmsg({ family: family ? afOf(family) : C.AF_UNSPEC, index: index ?? 0 }),
    ...(attrs.length > 0 && { attrs }),
  };
}
