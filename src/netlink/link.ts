// RTM_*LINK: struct ifinfomsg {family u8, pad u8, type u16, index i32, flags u32, change u32}
// followed by IFLA_* attributes. Encoders build requests; decodeLink turns a kernel reply into a
// typed Link.

import { WeftError, CniCode } from '../errors.js';
import type { IP } from '../net/ip.js';
import { AttrSet, encodeAttrs, formatMac, nla, parseMac, type Attr, smallBuffer } from './attrs.js';
import * as C from './constants.js';
import type { NlMessage, RequestSpec } from './message.js';

export const IFINFOMSG_LEN = 16;

export interface IfInfo {
  family?: number;
  type?: number;
  index?: number;
  flags?: number;
  change?: number;
}

export function ifinfomsg(h: IfInfo = {}): Buffer {
  const b = smallBuffer(IFINFOMSG_LEN);
  b.writeUInt8(h.family ?? 0, 0);
  b.writeUInt16LE(h.type ?? 0, 2);
  b.writeInt32LE(h.index ?? 0, 4);
  b.writeUInt32LE((h.flags ?? 0) >>> 0, 8);
  b.writeUInt32LE((h.change ?? 0) >>> 0, 12);
  return b;
}

// ---- the typed view of a link ----

export type OperState = 'unknown' | 'notpresent' | 'down' | 'lowerlayerdown' | 'testing' | 'dormant' | 'up';
const OPER_STATES: readonly OperState[] = ['unknown', 'notpresent', 'down', 'lowerlayerdown', 'testing', 'dormant', 'up'];

export type MacvlanMode = 'private' | 'vepa' | 'bridge' | 'passthru' | 'source';
const MACVLAN_MODES: Record<MacvlanMode, number> = { private: 1, vepa: 2, bridge: 4, passthru: 8, source: 16 };

export function macvlanModeValue(mode: MacvlanMode): number {
  return MACVLAN_MODES[mode];
}

function macvlanModeName(v: number): MacvlanMode | undefined {
  return (Object.keys(MACVLAN_MODES) as MacvlanMode[]).find((k) => MACVLAN_MODES[k] === v);
}

export type LinkInfo =
  | { readonly kind: 'veth' }
  | { readonly kind: 'bridge'; readonly vlanFiltering: boolean }
  | {
      readonly kind: 'vxlan';
      readonly vni: number;
      readonly port: number;
      readonly learning: boolean;
      readonly local?: IP;
      readonly group?: IP;
      /** Index of the underlay device (IFLA_VXLAN_LINK). */
      readonly dev?: number;
      readonly ttl?: number;
    }
  | { readonly kind: 'macvlan'; readonly mode: MacvlanMode };

export interface BridgePortInfo {
  readonly hairpin: boolean;
}

export interface Link {
  readonly index: number;
  readonly name: string;
  /** ifi_flags (IFF_*). */
  readonly flags: number;
  /** Administratively up (IFF_UP). */
  readonly up: boolean;
  /** Carrier present (IFF_LOWER_UP). */
  readonly lowerUp: boolean;
  readonly promisc: boolean;
  readonly mtu: number;
  readonly operState: OperState;
  /** ARPHRD_* hardware type (1 = ethernet, 772 = loopback, 65534 = none/tun). */
  readonly hwType: number;
  readonly mac?: string;
  readonly master?: number;
  /** IFLA_LINK: the parent (macvlan/vlan) or the peer (veth), possibly in another namespace. */
  readonly parentIndex?: number;
  /** The netns id (as this namespace knows it) where parentIndex lives, when not here. */
  readonly linkNetnsId?: number;
  readonly txqlen?: number;
  readonly kind?: string;
  readonly info?: LinkInfo;
  /** Set when the link is a bridge port. */
  readonly bridgePort?: BridgePortInfo;
  /** Device group (IFLA_GROUP); absent for the default group 0. */
  readonly group?: number;
  /** The kernel's counters (IFLA_STATS64); only in answers to requests that ask for them. */
  readonly stats?: LinkStats;
}

/**
 * struct rtnl_link_stats64, as the device reports it (for a veth: what that end sent and
 * received). Values are u64 in the kernel; they are exact here up to 2^53 (8 PiB).
 */
export interface LinkStats {
  readonly rxPackets: number;
  readonly txPackets: number;
  readonly rxBytes: number;
  readonly txBytes: number;
  readonly rxErrors: number;
  readonly txErrors: number;
  readonly rxDropped: number;
  readonly txDropped: number;
  readonly multicast: number;
  readonly collisions: number;
  readonly rxLengthErrors: number;
  readonly rxOverErrors: number;
  readonly rxCrcErrors: number;
  readonly rxFrameErrors: number;
  readonly rxFifoErrors: number;
  readonly rxMissedErrors: number;
  readonly txAbortedErrors: number;
  readonly txCarrierErrors: number;
  readonly txFifoErrors: number;
  readonly txHeartbeatErrors: number;
  readonly txWindowErrors: number;
  readonly rxCompressed: number;
  readonly txCompressed: number;
  /** Frames no protocol handler took (kernel 4.6+). */
  readonly rxNohandler?: number;
  /** Frames for another host's MAC address dropped by IP (kernel 5.19+). */
  readonly rxOtherhostDropped?: number;
}

/** The fields of rtnl_link_stats64 in kernel order; older kernels send a prefix of them. */
const STATS64_FIELDS = [
  'rxPackets', 'txPackets', 'rxBytes', 'txBytes', 'rxErrors', 'txErrors', 'rxDropped', 'txDropped', 'multicast', 'collisions',
  'rxLengthErrors', 'rxOverErrors', 'rxCrcErrors', 'rxFrameErrors', 'rxFifoErrors', 'rxMissedErrors',
  'txAbortedErrors', 'txCarrierErrors', 'txFifoErrors', 'txHeartbeatErrors', 'txWindowErrors',
  'rxCompressed', 'txCompressed', 'rxNohandler', 'rxOtherhostDropped',
] as const satisfies readonly (keyof LinkStats)[];

/** The fields every kernel weft runs on sends (up to txCompressed, since 2.6). */
const STATS64_REQUIRED = 23;

/** Decodes an IFLA_STATS64 value; undefined when it is shorter than any kernel sends. */
export function decodeLinkStats(b: Buffer): LinkStats | undefined {
  const n = Math.min(STATS64_FIELDS.length, Math.floor(b.length / 8));
  if (n < STATS64_REQUIRED) return undefined;
  const out: Partial<Record<keyof LinkStats, number>> = {};
  for (let i = 0; i < n; i++) out[STATS64_FIELDS[i]!] = Number(b.readBigUInt64LE(i * 8));
  return out as LinkStats;
}

export function decodeLink(msg: NlMessage): Link {
  const p = msg.payload;
  if (p.length < IFINFOMSG_LEN) throw new WeftError(CniCode.Netlink, `truncated link message (${p.length} bytes)`);
  const index = p.readInt32LE(4);
  const flags = p.readUInt32LE(8);
  const a = new AttrSet(p.subarray(IFINFOMSG_LEN));
  const mac = a.bytes(C.IFLA_ADDRESS);
  const master = a.u32(C.IFLA_MASTER);
  const parent = a.u32(C.IFLA_LINK);
  const netnsId = a.i32(C.IFLA_LINK_NETNSID);
  const txqlen = a.u32(C.IFLA_TXQLEN);
  const group = a.u32(C.IFLA_GROUP);
  const linkinfo = a.nested(C.IFLA_LINKINFO);
  const kind = linkinfo?.str(C.IFLA_INFO_KIND);
  const info = linkinfo && kind ? decodeLinkInfo(kind, linkinfo.nested(C.IFLA_INFO_DATA)) : undefined;
  const slaveKind = linkinfo?.str(C.IFLA_INFO_SLAVE_KIND);
  const slaveData = linkinfo?.nested(C.IFLA_INFO_SLAVE_DATA);
  const statsRaw = a.bytes(C.IFLA_STATS64);
  const stats = statsRaw ? decodeLinkStats(statsRaw) : undefined;
  return {
    index,
    name: a.str(C.IFLA_IFNAME) ?? '',
    flags,
    up: (flags & C.IFF_UP) !== 0,
    lowerUp: (flags & C.IFF_LOWER_UP) !== 0,
    promisc: (flags & C.IFF_PROMISC) !== 0,
    mtu: a.u32(C.IFLA_MTU) ?? 0,
    operState: OPER_STATES[a.u8(C.IFLA_OPERSTATE) ?? 0] ?? 'unknown',
    hwType: p.readUInt16LE(2),
    ...(mac && mac.length > 0 && { mac: formatMac(mac) }),
    ...(master !== undefined && master !== 0 && { master }),
    // A plain device reports itself as its own IFLA_LINK; a veth peer elsewhere may share our index.
    ...(parent !== undefined && parent !== 0 && (parent !== index || netnsId !== undefined) && { parentIndex: parent }),
    ...(netnsId !== undefined && netnsId >= 0 && { linkNetnsId: netnsId }),
    ...(txqlen !== undefined && { txqlen }),
    ...(kind !== undefined && { kind }),
    ...(info && { info }),
    ...(slaveKind === 'bridge' && { bridgePort: { hairpin: (slaveData?.u8(C.IFLA_BRPORT_MODE) ?? 0) !== 0 } }),
    ...(group !== undefined && group !== 0 && { group }),
    ...(stats && { stats }),
  };
}

function decodeLinkInfo(kind: string, data: AttrSet | undefined): LinkInfo | undefined {
  switch (kind) {
    case 'veth':
      return { kind };
    case 'bridge':
      return { kind, vlanFiltering: (data?.u8(C.IFLA_BR_VLAN_FILTERING) ?? 0) !== 0 };
    case 'vxlan': {
      if (!data) return undefined;
      const local = data.ip(C.IFLA_VXLAN_LOCAL) ?? data.ip(C.IFLA_VXLAN_LOCAL6);
      const group = data.ip(C.IFLA_VXLAN_GROUP) ?? data.ip(C.IFLA_VXLAN_GROUP6);
      const dev = data.u32(C.IFLA_VXLAN_LINK);
      const ttl = data.u8(C.IFLA_VXLAN_TTL);
      return {
        kind,
        vni: data.u32(C.IFLA_VXLAN_ID) ?? 0,
        port: data.be16(C.IFLA_VXLAN_PORT) ?? 0,
        learning: (data.u8(C.IFLA_VXLAN_LEARNING) ?? 0) !== 0,
        ...(local && { local }),
        ...(group && { group }),
        ...(dev !== undefined && dev !== 0 && { dev }),
        ...(ttl !== undefined && ttl !== 0 && { ttl }),
      };
    }
    case 'macvlan': {
      const mode = macvlanModeName(data?.u32(C.IFLA_MACVLAN_MODE) ?? 0);
      return mode ? { kind, mode } : undefined;
    }
    default:
      return undefined;
  }
}

// ---- requests ----

/** Settings every created link may carry. nsFd creates the link directly in that namespace. */
export interface LinkCommon {
  readonly name: string;
  readonly mtu?: number;
  readonly mac?: string;
  readonly nsFd?: number;
  /** Bring the link up as part of creation (saves a round trip). */
  readonly up?: boolean;
}

export type LinkCreateSpec =
  | (LinkCommon & { readonly kind: 'veth'; readonly peer: LinkCommon })
  | (LinkCommon & { readonly kind: 'bridge'; readonly vlanFiltering?: boolean })
  | (LinkCommon & {
      readonly kind: 'vxlan';
      readonly vni: number;
      readonly local?: IP;
      readonly group?: IP;
      readonly port?: number;
      readonly learning?: boolean;
      readonly dev?: number;
      readonly ttl?: number;
    })
  | (LinkCommon & { readonly kind: 'macvlan'; readonly master: number; readonly mode: MacvlanMode })
  | (LinkCommon & { readonly kind: 'dummy' });

function commonAttrs(c: LinkCommon): Attr[] {
  const attrs: Attr[] = [nla.str(C.IFLA_IFNAME, c.name)];
  if (c.mtu !== undefined) attrs.push(nla.u32(C.IFLA_MTU, c.mtu));
  if (c.mac !== undefined) attrs.push(nla.bytes(C.IFLA_ADDRESS, parseMac(c.mac)));
  if (c.nsFd !== undefined) attrs.push(nla.u32(C.IFLA_NET_NS_FD, c.nsFd));
  return attrs;
}

function upFlags(c: LinkCommon): IfInfo {
  return c.up ? { flags: C.IFF_UP, change: C.IFF_UP } : {};
}

function infoData(spec: LinkCreateSpec): Attr[] {
  switch (spec.kind) {
    case 'veth':
      // The peer is a whole ifinfomsg + attributes inside VETH_INFO_PEER; its own IFLA_NET_NS_FD
      // puts it straight into the target namespace (far cheaper than moving it afterwards).
      return [
        {
          type: C.VETH_INFO_PEER,
          value: Buffer.concat([ifinfomsg(upFlags(spec.peer)), encodeAttrs(commonAttrs(spec.peer))]),
        },
      ];
    case 'bridge':
      // Off is the default; sending the attribute at all fails on kernels built without
      // CONFIG_BRIDGE_VLAN_FILTERING, so it only goes out when filtering is wanted.
      return spec.vlanFiltering ? [nla.u8(C.IFLA_BR_VLAN_FILTERING, 1)] : [];
    case 'vxlan': {
      const d: Attr[] = [nla.u32(C.IFLA_VXLAN_ID, spec.vni)];
      if (spec.group) d.push(nla.ip(spec.group.family === 4 ? C.IFLA_VXLAN_GROUP : C.IFLA_VXLAN_GROUP6, spec.group));
      if (spec.dev !== undefined) d.push(nla.u32(C.IFLA_VXLAN_LINK, spec.dev));
      if (spec.local) d.push(nla.ip(spec.local.family === 4 ? C.IFLA_VXLAN_LOCAL : C.IFLA_VXLAN_LOCAL6, spec.local));
      if (spec.ttl !== undefined) d.push(nla.u8(C.IFLA_VXLAN_TTL, spec.ttl));
      if (spec.learning !== undefined) d.push(nla.u8(C.IFLA_VXLAN_LEARNING, spec.learning ? 1 : 0));
      if (spec.port !== undefined) d.push(nla.be16(C.IFLA_VXLAN_PORT, spec.port));
      return d;
    }
    case 'macvlan':
      return [nla.u32(C.IFLA_MACVLAN_MODE, macvlanModeValue(spec.mode))];
    case 'dummy':
      return [];
  }
}

export function linkCreateRequest(spec: LinkCreateSpec): RequestSpec {
  const data = infoData(spec);
  const linkinfo: Attr[] = [nla.str(C.IFLA_INFO_KIND, spec.kind)];
  if (data.length > 0) linkinfo.push(nla.nest(C.IFLA_INFO_DATA, data));
  const attrs = commonAttrs(spec);
  if (spec.kind === 'macvlan') attrs.push(nla.u32(C.IFLA_LINK, spec.master));
  attrs.push(nla.nest(C.IFLA_LINKINFO, linkinfo));
  return {
    type: C.RTM_NEWLINK,
    flags: C.NLM_F_REQUEST | C.NLM_F_ACK | C.NLM_F_CREATE | C.NLM_F_EXCL,
    fixed: ifinfomsg(upFlags(spec)),
    attrs,
  };
}

export interface LinkChanges {
  readonly up?: boolean;
  readonly promisc?: boolean;
  readonly mtu?: number;
  readonly name?: string;
  /** Enslave to this master's index; null releases it (IFLA_MASTER 0). */
  readonly master?: number | null;
  readonly mac?: string;
  /** Move the link into the namespace behind this fd. */
  readonly nsFd?: number;
  /** Device group (IFLA_GROUP, 0 = default). */
  readonly group?: number;
}

export function linkSetRequest(index: number, ch: LinkChanges): RequestSpec {
  let flags = 0;
  let change = 0;
  if (ch.up !== undefined) {
    change |= C.IFF_UP;
    if (ch.up) flags |= C.IFF_UP;
  }
  if (ch.promisc !== undefined) {
    change |= C.IFF_PROMISC;
    if (ch.promisc) flags |= C.IFF_PROMISC;
  }
  const attrs: Attr[] = [];
  if (ch.name !== undefined) attrs.push(nla.str(C.IFLA_IFNAME, ch.name));
  if (ch.mtu !== undefined) attrs.push(nla.u32(C.IFLA_MTU, ch.mtu));
  if (ch.mac !== undefined) attrs.push(nla.bytes(C.IFLA_ADDRESS, parseMac(ch.mac)));
  if (ch.master !== undefined) attrs.push(nla.u32(C.IFLA_MASTER, ch.master ?? 0));
  if (ch.nsFd !== undefined) attrs.push(nla.u32(C.IFLA_NET_NS_FD, ch.nsFd));
  if (ch.group !== undefined) attrs.push(nla.u32(C.IFLA_GROUP, checkGroup(ch.group)));
  return { type: C.RTM_NEWLINK, flags: C.NLM_F_REQUEST | C.NLM_F_ACK, fixed: ifinfomsg({ index, flags, change }), attrs };
}

/** Bridge-port options go to the bridge driver: AF_BRIDGE + IFLA_PROTINFO (nested). */
export function bridgePortSetRequest(index: number, opts: { readonly hairpin?: boolean }): RequestSpec {
  const port: Attr[] = [];
  if (opts.hairpin !== undefined) port.push(nla.u8(C.IFLA_BRPORT_MODE, opts.hairpin ? 1 : 0));
  return {
    type: C.RTM_SETLINK,
    flags: C.NLM_F_REQUEST | C.NLM_F_ACK,
    fixed: ifinfomsg({ family: C.AF_BRIDGE, index }),
    attrs: [nla.nest(C.IFLA_PROTINFO, port, true)],
  };
}

export type LinkRef = number | string;

function refAttrs(ref: LinkRef): { fixed: Buffer; attrs: Attr[] } {
  return typeof ref === 'number'
    ? { fixed: ifinfomsg({ index: ref }), attrs: [] }
    : { fixed: ifinfomsg(), attrs: [nla.str(C.IFLA_IFNAME, ref)] };
}

export function linkGetRequest(ref: LinkRef): RequestSpec {
  const { fixed, attrs } = refAttrs(ref);
  attrs.push(nla.u32(C.IFLA_EXT_MASK, C.RTEXT_FILTER_SKIP_STATS));
  return { type: C.RTM_GETLINK, flags: C.NLM_F_REQUEST, fixed, attrs };
}

/**
 * Every link of the namespace. Without `stats` the kernel leaves the counters out (a third of a
 * veth's reply); with it each link carries IFLA_STATS64, read from the devices' own per-CPU
 * counters at dump time — what `ip -s link` shows, at no cost to the packets themselves.
 */
export function linkDumpRequest(opts: { readonly stats?: boolean } = {}): RequestSpec {
  return {
    type: C.RTM_GETLINK,
    flags: C.NLM_F_REQUEST | C.NLM_F_DUMP,
    fixed: ifinfomsg(),
    attrs: [nla.u32(C.IFLA_EXT_MASK, opts.stats ? 0 : C.RTEXT_FILTER_SKIP_STATS)],
  };
}

export function linkDeleteRequest(ref: LinkRef): RequestSpec {
  const { fixed, attrs } = refAttrs(ref);
  return { type: C.RTM_DELLINK, flags: C.NLM_F_REQUEST | C.NLM_F_ACK, fixed, attrs };
}

function checkGroup(group: number): number {
  if (!Number.isInteger(group) || group < 0 || group > 0xffffffff) {
    throw new WeftError(CniCode.Netlink, `device group ${group} is not a 32-bit unsigned integer`);
  }
  return group;
}

/**
 * Deletes every link of a device group in one request (what `ip link delete group N` sends):
 * index 0 plus IFLA_GROUP. The kernel unregisters them together (unregister_netdevice_many), so
 * the grace periods a device removal waits for are paid once for the whole group. Group 0 holds
 * every ordinary device, so it is refused here.
 */
export function linkGroupDeleteRequest(group: number): RequestSpec {
  if (checkGroup(group) === 0) throw new WeftError(CniCode.Netlink, 'refusing to delete device group 0 (every ungrouped device is in it)');
  return { type: C.RTM_DELLINK, flags: C.NLM_F_REQUEST | C.NLM_F_ACK, fixed: ifinfomsg(), attrs: [nla.u32(C.IFLA_GROUP, group)] };
}
