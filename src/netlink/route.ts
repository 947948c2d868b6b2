// RTM_*ROUTE: struct rtmsg {family, dst_len, src_len, tos, table, protocol, scope, type: u8;
// flags: u32} + RTA_*. Tables above 255 only fit in RTA_TABLE, so it is always sent.

import { WeftError, CniCode } from '../errors.js';
import { ipFromValue, type Cidr, type IP, type IPFamily } from '../net/ip.js';
import { AttrSet, nla, type Attr, smallBuffer } from './attrs.js';
import * as C from './constants.js';
import { afOf, familyOfAf } from './family.js';
import type { NlMessage, RequestSpec } from './message.js';

export const RTMSG_LEN = 12;

export type RouteType = 'unicast' | 'local' | 'broadcast' | 'anycast' | 'multicast' | 'blackhole' | 'unreachable' | 'prohibit' | 'throw';
const ROUTE_TYPES: Record<RouteType, number> = {
  unicast: C.RTN_UNICAST,
  local: C.RTN_LOCAL,
  broadcast: C.RTN_BROADCAST,
  anycast: C.RTN_ANYCAST,
  multicast: C.RTN_MULTICAST,
  blackhole: C.RTN_BLACKHOLE,
  unreachable: C.RTN_UNREACHABLE,
  prohibit: C.RTN_PROHIBIT,
  throw: C.RTN_THROW,
};

function routeTypeName(v: number): RouteType | undefined {
  return (Object.keys(ROUTE_TYPES) as RouteType[]).find((k) => ROUTE_TYPES[k] === v);
}

/** Named scopes, or the raw number. */
export type RouteScope = 'universe' | 'site' | 'link' | 'host' | 'nowhere';
const SCOPES: Record<RouteScope, number> = { universe: C.RT_SCOPE_UNIVERSE, site: C.RT_SCOPE_SITE, link: C.RT_SCOPE_LINK, host: C.RT_SCOPE_HOST, nowhere: C.RT_SCOPE_NOWHERE };

export function scopeValue(s: RouteScope | number): number {
  return typeof s === 'number' ? s : SCOPES[s];
}

export interface Nexthop {
  readonly gateway?: IP;
  readonly oif: number;
  readonly weight: number;
  readonly onlink: boolean;
}

/** A route as the kernel reports it. Pass it back to deleteRoute to remove exactly it. */
export interface Route {
  readonly family: IPFamily;
  readonly dst: Cidr;
  readonly table: number;
  readonly protocol: number;
  readonly scope: number;
  readonly type: RouteType;
  readonly onlink: boolean;
  readonly gateway?: IP;
  readonly oif?: number;
  readonly priority?: number;
  readonly mtu?: number;
  /** Preferred source address (RTA_PREFSRC, `ip route ... src X`). */
  readonly src?: IP;
  readonly nexthops?: readonly Nexthop[];
  /** The nexthop object the route uses (RTA_NH_ID); gateway and oif then describe that object. */
  readonly nhid?: number;
}

/** A route to add, replace or delete. Unset fields take iproute2's defaults (or match anything, for delete). */
export interface RouteSpec {
  readonly dst: Cidr | 'default';
  /** Needed only for a default route with neither gateway nor src. */
  readonly family?: IPFamily;
  readonly gateway?: IP;
  readonly oif?: number;
  readonly table?: number;
  readonly protocol?: number;
  readonly scope?: RouteScope | number;
  readonly type?: RouteType;
  readonly onlink?: boolean;
  readonly priority?: number;
  readonly mtu?: number;
  readonly src?: IP;
  /** Use nexthop object `nhid` (see nexthop.ts) instead of gateway/oif. */
  readonly nhid?: number;
}

export function rtmsg(h: { family: number; dstLen?: number; table?: number; protocol?: number; scope?: number; type?: number; flags?: number }): Buffer {
  const b = smallBuffer(RTMSG_LEN);
  b.writeUInt8(h.family, 0);
  b.writeUInt8(h.dstLen ?? 0, 1);
  b.writeUInt8(h.table ?? 0, 4);
  b.writeUInt8(h.protocol ?? 0, 5);
  b.writeUInt8(h.scope ?? 0, 6);
  b.writeUInt8(h.type ?? 0, 7);
  b.writeUInt32LE((h.flags ?? 0) >>> 0, 8);
  return b;
}

function familyOfSpec(r: RouteSpec): IPFamily {
  const f = r.dst !== 'default' ? r.dst.ip.family : r.family ?? r.gateway?.family ?? r.src?.family;
  if (!f) throw new WeftError(CniCode.InvalidNetworkConfig, 'a default route needs a family, a gateway or a src');
  for (const [what, ip] of [['gateway', r.gateway], ['src', r.src]] as const) {
    if (ip && ip.family !== f) throw new WeftError(CniCode.InvalidNetworkConfig, `route ${what} is IPv${ip.family} but the destination is IPv${f}`);
  }
  return f;
}

function dstOf(r: RouteSpec, family: IPFamily): Cidr {
  return r.dst === 'default' ? { ip: ipFromValue(family, 0n), prefix: 0 } : r.dst;
}

type RouteOp = 'add' | 'replace' | 'delete';

export function routeRequest(op: RouteOp, r: RouteSpec): RequestSpec {
  const family = familyOfSpec(r);
  const dst = dstOf(r, family);
  const table = r.table ?? C.RT_TABLE_MAIN;
  const del = op === 'delete';
  // iproute2's defaults: new routes are proto boot, unicast; scope link when there is no
  // gateway. A delete leaves them wildcard (0 / RT_SCOPE_NOWHERE) unless given.
  const type = r.type ? ROUTE_TYPES[r.type] : del ? C.RTN_UNSPEC : C.RTN_UNICAST;
  const protocol = r.protocol ?? (del ? C.RTPROT_UNSPEC : C.RTPROT_BOOT);
  let scope: number;
  if (r.scope !== undefined) scope = scopeValue(r.scope);
  else if (del) scope = C.RT_SCOPE_NOWHERE;
  else if (type === C.RTN_LOCAL) scope = C.RT_SCOPE_HOST;
  else if (type === C.RTN_UNICAST && !r.gateway && r.nhid === undefined && family === 4) scope = C.RT_SCOPE_LINK;
  else scope = C.RT_SCOPE_UNIVERSE;

  const attrs: Attr[] = [nla.u32(C.RTA_TABLE, table)];
  if (dst.prefix > 0) attrs.push(nla.ip(C.RTA_DST, dst.ip));
  if (r.priority !== undefined) attrs.push(nla.u32(C.RTA_PRIORITY, r.priority));
  if (r.src) attrs.push(nla.ip(C.RTA_PREFSRC, r.src));
  if (r.gateway) attrs.push(nla.ip(C.RTA_GATEWAY, r.gateway));
  if (r.oif !== undefined) attrs.push(nla.u32(C.RTA_OIF, r.oif));
  if (r.nhid !== undefined) attrs.push(nla.u32(C.RTA_NH_ID, r.nhid));
  if (r.mtu !== undefined) attrs.push(nla.nest(C.RTA_METRICS, [nla.u32(C.RTAX_MTU, r.mtu)]));

  const flags =
    C.NLM_F_REQUEST | C.NLM_F_ACK | (op === 'add' ? C.NLM_F_CREATE | C.NLM_F_EXCL : op === 'replace' ? C.NLM_F_CREATE | C.NLM_F_REPLACE : 0);
  return {
    type: del ? C.RTM_DELROUTE : C.RTM_NEWROUTE,
    flags,
    fixed: rtmsg({
      family: afOf(family),
      dstLen: dst.prefix,
      table: table < 256 ? table : C.RT_TABLE_UNSPEC,
      protocol,
      scope,
      type,
      flags: r.onlink ? C.RTNH_F_ONLINK : 0,
    }),
    attrs,
  };
}

export interface RouteFilter {
  readonly family?: IPFamily;
  /** A table id, or 'all'. Default: main. */
  readonly table?: number | 'all';
  readonly protocol?: number;
  readonly oif?: number;
}

export function routeDumpRequest(f: RouteFilter = {}): RequestSpec {
  const table = f.table === 'all' ? C.RT_TABLE_UNSPEC : f.table ?? C.RT_TABLE_MAIN;
  const attrs: Attr[] = [];
  if (table >= 256) attrs.push(nla.u32(C.RTA_TABLE, table));
  if (f.oif !== undefined) attrs.push(nla.u32(C.RTA_OIF, f.oif));
  return {
    type: C.RTM_GETROUTE,
    flags: C.NLM_F_REQUEST | C.NLM_F_DUMP,
    fixed: rtmsg({ family: f.family ? afOf(f.family) : C.AF_UNSPEC, table: table < 256 ? table : 0, protocol: f.protocol ?? 0 }),
    attrs,
  };
}

export function decodeRoute(msg: NlMessage): Route | undefined {
  const p = msg.payload;
  if (p.length < RTMSG_LEN) throw new WeftError(CniCode.Netlink, `truncated route message (${p.length} bytes)`);
  const family = familyOfAf(p.readUInt8(0));
  const type = routeTypeName(p.readUInt8(7));
  if (!family || !type) return undefined;
  const a = new AttrSet(p.subarray(RTMSG_LEN));
  const dstLen = p.readUInt8(1);
  const rtmFlags = p.readUInt32LE(8);
  const gateway = a.ip(C.RTA_GATEWAY);
  const oif = a.u32(C.RTA_OIF);
  const priority = a.u32(C.RTA_PRIORITY);
  const mtu = a.nested(C.RTA_METRICS)?.u32(C.RTAX_MTU);
  const src = a.ip(C.RTA_PREFSRC);
  const mp = a.bytes(C.RTA_MULTIPATH);
  const nhid = a.u32(C.RTA_NH_ID);
  return {
    family,
    dst: { ip: a.ip(C.RTA_DST) ?? ipFromValue(family, 0n), prefix: dstLen },
    table: a.u32(C.RTA_TABLE) ?? p.readUInt8(4),
    protocol: p.readUInt8(5),
    scope: p.readUInt8(6),
    type,
    onlink: (rtmFlags & C.RTNH_F_ONLINK) !== 0,
    ...(gateway && { gateway }),
    ...(oif !== undefined && { oif }),
    ...(priority !== undefined && { priority }),
    ...(mtu !== undefined && { mtu }),
    ...(src && { src }),
    ...(mp && { nexthops: decodeMultipath(mp) }),
    ...(nhid !== undefined && { nhid }),
  };
}

// struct rtnexthop {len u16, flags u8, hops u8, ifindex i32} + RTA_* (gateway).
function decodeMultipath(b: Buffer): Nexthop[] {
  const out: Nexthop[] = [];
  let off = 0;
  while (off + 8 <= b.length) {
    const len = b.readUInt16LE(off);
    if (len < 8 || off + len > b.length) break;
    const gw = new AttrSet(b.subarray(off + 8, off + len)).ip(C.RTA_GATEWAY);
    out.push({ oif: b.readInt32LE(off + 4), weight: b.readUInt8(off + 3) + 1, onlink: (b.readUInt8(off + 2) & C.RTNH_F_ONLINK) !== 0, ...(gw && { gateway: gw }) });
    off += (len + 3) & ~3;
  }
  return out;
}
