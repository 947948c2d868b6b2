// The dataplane's public surface. Most callers need only Netlink and the types.
export { Netlink, type NetlinkOp, type LinkRef, type VethOptions, type BridgeOptions, type VxlanOptions, type MacvlanOptions, type DummyOptions, type LinkSettings, type RouteInput, type NeighInput, type FdbInput, type NexthopInput } from './netlink.js';
export type { Link, LinkInfo, OperState, MacvlanMode, BridgePortInfo } from './link.js';
export type { Address, AddressOptions } from './addr.js';
export type { Route, RouteSpec, RouteFilter, RouteType, RouteScope, Nexthop } from './route.js';
export type { Neigh, FdbEntry } from './neigh.js';
export type { NexthopObject, NexthopSpec } from './nexthop.js';
export { NetlinkError, isNetlinkError } from './error.js';
export { NetlinkSocket } from './socket.js';
export { openTun, type TunDevice, type TunOptions } from './tun.js';
export * as nlconst from './constants.js';
export {
  watchConntrack, dumpConntrack, enableConntrackAccounting, decodeConntrackEvent, decodeConntrackFlow,
  type ConntrackEvent, type ConntrackEventType, type ConntrackFlow, type ConntrackTuple, type ConntrackCounter, type ConntrackWatch, type ConntrackWatchOptions, type TcpConntrackState,
} from './conntrack.js';
export { watchNflog, decodeNflogPacket, type NflogEvent, type NflogPacket, type NflogWatch, type NflogWatchOptions, type NflogCopyMode } from './nflog.js';
export type { ListenerProblem } from './listener.js';
