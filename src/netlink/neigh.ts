// RTM_*NEIGH: struct ndmsg {family u8, pad u8, pad u16, ifindex i32, state u16, flags u8,
// type u8} + NDA_*. The same messages carry ARP/ND entries (AF_INET/AF_INET6) and bridge/vxlan
// forwarding entries (AF_BRIDGE, "fdb").

import { WeftError, CniCode } from '../errors.js';
import type { IP, IPFamily } from '../net/ip.js';
import { AttrSet, formatMac, nla, parseMac, type Attr, smallBuffer } from './attrs.js';
import * as C from './constants.js';
import { afOf, familyOfAf } from './family.js';
import type { NlMessage, RequestSpec } from './message.js';

export const NDMSG_LEN = 12;

export function ndmsg(h: { family: number; index?: number; state?: number; flags?: number; type?: number }): Buffer {
  const b = smallBuffer(NDMSG_LEN);
  b.writeUInt8(h.family, 0);
  b.writeInt32LE(h.index ?? 0, 4);
  b.writeUInt16LE(h.state ?? 0, 8);
  b.writeUInt8(h.flags ?? 0, 10);
  b.writeUInt8(h.type ?? 0, 11);
  return b;
}

export interface Neigh {
  readonly index: number;
  readonly family: IPFamily;
  readonly ip: IP;
  readonly mac?: string;
  /** NUD_* bits. */
  readonly state: number;
  /** NTF_* bits. */
  readonly flags: number;
  readonly permanent: boolean;
}

export interface NeighSpec {
  readonly index: number;
  readonly ip: IP;
  readonly mac: string;
  /** NUD_* state; default NUD_PERMANENT. */
  readonly state?: number;
}

export interface FdbEntry {
  /** The port (bridge port or vxlan device) the entry points at. */
  readonly index: number;
  readonly mac: string;
  /** Remote VTEP for vxlan entries. */
  readonly dst?: IP;
  readonly vlan?: number;
  readonly vni?: number;
  readonly port?: number;
  /** The bridge owning the entry, when it came from the bridge's table (NDA_MASTER). */
  readonly master?: number;
  readonly state: number;
  readonly flags: number;
  readonly permanent: boolean;
}

export interface FdbSpec {
  readonly index: number;
  readonly mac: string;
  readonly dst?: IP;
  readonly vlan?: number;
  readonly vni?: number;
  readonly port?: number;
  /** Put the entry in the master bridge's table (NTF_MASTER) instead of the device's own (NTF_SELF). */
  readonly master?: boolean;
  /** NUD_* state; default NUD_PERMANENT. */
  readonly state?: number;
}

export function decodeNeigh(msg: NlMessage): Neigh | undefined {
  const p = msg.payload;
  if (p.length < NDMSG_LEN) throw new WeftError(CniCode.Netlink, `truncated neighbour message (${p.length} bytes)`);
  const family = familyOfAf(p.readUInt8(0));
  if (!family) return undefined;
  const a = new AttrSet(p.subarray(NDMSG_LEN));
  const ip = a.ip(C.NDA_DST);
  if (!ip) return undefined;
  const ll = a.bytes(C.NDA_LLADDR);
  const state = p.readUInt16LE(8);
  return {
    index: p.readInt32LE(4),
    family,
    ip,
    state,
    flags: p.readUInt8(10),
    permanent: (state & C.NUD_PERMANENT) !== 0,
    ...(ll && ll.length > 0 && { mac: formatMac(ll) }),
  };
}

export function decodeFdb(msg: NlMessage): FdbEntry | undefined {
  const p = msg.payload;
  if (p.length < NDMSG_LEN) throw new WeftError(CniCode.Netlink, `truncated fdb message (${p.length} bytes)`);
  if (p.readUInt8(0) !== C.AF_BRIDGE) return undefined;
  const a = new AttrSet(p.subarray(NDMSG_LEN));
  const ll = a.bytes(C.NDA_LLADDR);
  if (!ll) return undefined;
  const dst = a.ip(C.NDA_DST);
  const vlan = a.u16(C.NDA_VLAN);
  const vni = a.u32(C.NDA_VNI);
  const port = a.be16(C.NDA_PORT);
  const master = a.u32(C.NDA_MASTER);
  const state = p.readUInt16LE(8);
  return {
    index: p.readInt32LE(4),
    mac: formatMac(ll),
    state,
    flags: p.readUInt8(10),
    permanent: (state & C.NUD_PERMANENT) !== 0,
    ...(dst && { dst }),
    ...(vlan !== undefined && { vlan }),
    ...(vni !== undefined && { vni }),
    ...(port !== undefined && { port }),
    ...(master !== undefined && { master }),
  };
}

export function neighReplaceRequest(n: NeighSpec): RequestSpec {
  return {
    type: C.RTM_NEWNEIGH,
    flags: C.NLM_F_REQUEST | C.NLM_F_ACK | C.NLM_F_CREATE | C.NLM_F_REPLACE,
    fixed: ndmsg({ family: afOf(n.ip.family), index: n.index, state: n.state ?? C.NUD_PERMANENT }),
    attrs: [nla.ip(C.NDA_DST, n.ip), nla.bytes(C.NDA_LLADDR, parseMac(n.mac))],
  };
}

export function neighDeleteRequest(index: number, ip: IP): RequestSpec {
  return {
    type: C.RTM_DELNEIGH,
    flags: C.NLM_F_REQUEST | C.NLM_F_ACK,
    fixed: ndmsg({ family: afOf(ip.family), index }),
    attrs: [nla.ip(C.NDA_DST, ip)],
  };
}

/** With strict checking a neighbour dump filters by NDA_IFINDEX (the header's ifindex must be 0). */
export function neighDumpRequest(family?: IPFamily, index?: number): RequestSpec {
  return {
    type: C.RTM_GETNEIGH,
    flags: C.NLM_F_REQUEST | C.NLM_F_DUMP,
    fixed: ndmsg({ family: family ? afOf(family) : C.AF_UNSPEC }),
    ...(index !== undefined && { attrs: [nla.u32(C.NDA_IFINDEX, index)] }),
  };
}

function fdbAttrs(f: FdbSpec): Attr[] {
  const attrs: Attr[] = [nla.bytes(C.NDA_LLADDR, parseMac(f.mac))];
  if (f.dst) attrs.push(nla.ip(C.NDA_DST, f.dst));
  if (f.vlan !== undefined) attrs.push(nla.u16(C.NDA_VLAN, f.vlan));
  if (f.port !== undefined) attrs.push(nla.be16(C.NDA_PORT, f.port));
  if (f.vni !== undefined) attrs.push(nla.u32(C.NDA_VNI, f.vni));
  return attrs;
}

export type FdbOp = 'append' | 'replace' | 'delete';

export function fdbRequest(op: FdbOp, f: FdbSpec): RequestSpec {
  const createFlags = op === 'append' ? C.NLM_F_CREATE | C.NLM_F_APPEND : op === 'replace' ? C.NLM_F_CREATE | C.NLM_F_REPLACE : 0;
  return {
    type: op === 'delete' ? C.RTM_DELNEIGH : C.RTM_NEWNEIGH,
    flags: C.NLM_F_REQUEST | C.NLM_F_ACK | createFlags,
    fixed: ndmsg({
      family: C.AF_BRIDGE,
      index: f.index,
      state: op === 'delete' ? 0 : f.state ?? C.NUD_PERMANENT,
      flags: f.master ? C.NTF_MASTER : C.NTF_SELF,
    }),
    attrs: fdbAttrs(f),
  };
}

/** With strict checking the kernel filters by port (ndm_ifindex) and by bridge (NDA_MASTER). */
export function fdbDumpRequest(index?: number, bridgeIndex?: number): RequestSpec {
  return {
    type: C.RTM_GETNEIGH,
    flags: C.NLM_F_REQUEST | C.NLM_F_DUMP,
    fixed: ndmsg({ family: C.AF_BRIDGE, index: index ?? 0 }),
    ...(bridgeIndex !== undefined && { attrs: [nla.u32(C.NDA_MASTER, bridgeIndex)] }),
  };
}
