// NFLOG (nfnetlink_log, NFNL_SUBSYS_ULOG): packets that an nftables rule such as
// `log prefix "weft-deny:ns/policy" group 7 drop` hands to userspace, with the rule's prefix, the
// interfaces, the mark and the first bytes of the packet. This is how a denied connection
// becomes a flow record naming the policy that dropped it.
//
// One socket binds one group in its namespace (NFULNL_CFG_CMD_BIND); the kernel then unicasts
// that group's packets to it, and forgets the binding when the socket closes. A group has one
// listener per namespace: a second bind from another socket fails with EPERM.

import { WeftError, CniCode } from '../errors.js';
import type { IPFamily } from '../net/ip.js';
import { parseIpPacket, type PacketSummary } from '../net/packet.js';
import { AttrSet, formatMac, nla, smallBuffer, type Attr } from './attrs.js';
import * as C from './constants.js';
import { isNetlinkError } from './error.js';
import { DEFAULT_EVENT_BUFFER_BYTES, NetlinkListener, type ListenerProblem } from './listener.js';
import type { NlMessage, RequestSpec } from './message.js';
import { nfgenmsg, nfnlType } from './nfnetlink.js';

const NFULNL_PACKET = nfnlType(C.NFNL_SUBSYS_ULOG, C.NFULNL_MSG_PACKET);
const NFULNL_CONFIG = nfnlType(C.NFNL_SUBSYS_ULOG, C.NFULNL_MSG_CONFIG);
const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;

export type NflogCopyMode = 'none' | 'meta' | 'packet';

const COPY_MODES: Record<NflogCopyMode, number> = { none: C.NFULNL_COPY_NONE, meta: C.NFULNL_COPY_META, packet: C.NFULNL_COPY_PACKET };

export interface NflogConfig {
  /** 0–65535, the N of nft's `log group N`. */
  readonly group: number;
  /** 'packet' (default): metadata and the first copyRange bytes; 'meta': metadata only. */
  readonly copyMode?: NflogCopyMode;
  /** Bytes of each packet to copy (default 128: IPv6 + TCP headers with room to spare). */
  readonly copyRange?: number;
  /**
   * Packets wait in the kernel until qthreshold are queued or this much time passed (10 ms
   * steps; default 10 ms). With qthreshold 1 (the default) each packet goes out at once.
   */
  readonly flushMs?: number;
  readonly qthreshold?: number;
  /** The kernel's batch buffer for this group (bytes); its default is about a page. */
  readonly nlbufsiz?: number;
}

function checkU16(n: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff) throw new WeftError(CniCode.InvalidNetworkConfig, `NFLOG ${what} must be an integer 0–65535, got ${n}`);
}

function checkU32(n: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new WeftError(CniCode.InvalidNetworkConfig, `NFLOG ${what} must be a non-negative 32-bit integer, got ${n}`);
}

function configCmd(cmd: number): Attr {
  return nla.u8(C.NFULA_CFG_CMD, cmd);
}

/**
 * NFULNL_MSG_CONFIG that binds `group` to the sending socket and sets its copy mode, flush
 * timeout and queue threshold — all in one message: the kernel creates the instance first and
 * then applies the settings, so no packet is ever sent with the defaults.
 */
export function nflogBindRequest(cfg: NflogConfig): RequestSpec {
  checkU16(cfg.group, 'group');
  const range = cfg.copyRange ?? 128;
  checkU32(range, 'copy range');
  const mode = smallBuffer(6); // struct nfulnl_msg_config_mode is packed: be32 range, u8 mode, u8 pad
  mode.writeUInt32BE(range, 0);
  mode.writeUInt8(COPY_MODES[cfg.copyMode ?? 'packet'], 4);
  const flushMs = cfg.flushMs ?? 10;
  const qthreshold = cfg.qthreshold ?? 1;
  checkU32(flushMs, 'flush timeout');
  checkU32(qthreshold, 'queue threshold');
  const attrs: Attr[] = [
    configCmd(C.NFULNL_CFG_CMD_BIND),
    nla.bytes(C.NFULA_CFG_MODE, mode),
    nla.be32(C.NFULA_CFG_TIMEOUT, Math.ceil(flushMs / 10)),
    nla.be32(C.NFULA_CFG_QTHRESH, qthreshold),
  ];
  if (cfg.nlbufsiz !== undefined) {
    checkU32(cfg.nlbufsiz, 'buffer size');
    attrs.push(nla.be32(C.NFULA_CFG_NLBUFSIZ, cfg.nlbufsiz));
  }
  return { type: NFULNL_CONFIG, flags: C.NLM_F_REQUEST | C.NLM_F_ACK, fixed: nfgenmsg(C.AF_UNSPEC, cfg.group), attrs };
}

export function nflogUnbindRequest(group: number): RequestSpec {
  checkU16(group, 'group');
  return { type: NFULNL_CONFIG, flags: C.NLM_F_REQUEST | C.NLM_F_ACK, fixed: nfgenmsg(C.AF_UNSPEC, group), attrs: [configCmd(C.NFULNL_CFG_CMD_UNBIND)] };
}

/**
 * Makes nfnetlink_log the namespace's default logger for a family (PF_BIND), or removes it
 * (PF_UNBIND). Only loggers invoked without a type of their own use it (conntrack's invalid
 * packet log, old xtables); nft's `log group N` names NFLOG itself and needs no binding.
 */
export function nflogFamilyRequest(cmd: 'bind' | 'unbind', family: IPFamily): RequestSpec {
  return {
    type: NFULNL_CONFIG,
    flags: C.NLM_F_REQUEST | C.NLM_F_ACK,
    fixed: nfgenmsg(family === 4 ? C.AF_INET : C.AF_INET6),
    attrs: [configCmd(cmd === 'bind' ? C.NFULNL_CFG_CMD_PF_BIND : C.NFULNL_CFG_CMD_PF_UNBIND)],
  };
}

export interface NflogPacket {
  readonly group: number;
  /** The hook's protocol family: 2 IPv4, 10 IPv6, 7 bridge. */
  readonly family: number;
  /** The rule's `log prefix`. */
  readonly prefix?: string;
  /** Ethertype (0x0800, 0x86dd) from NFULA_PACKET_HDR. */
  readonly hwProtocol?: number;
  /** Netfilter hook number (0 prerouting, 1 input, 2 forward, 3 output, 4 postrouting). */
  readonly hook?: number;
  readonly mark?: number;
  readonly inIfindex?: number;
  readonly outIfindex?: number;
  /** Bridge ports, when the packet crossed a bridge. */
  readonly physInIfindex?: number;
  readonly physOutIfindex?: number;
  /** The sender's link-layer address (input side). */
  readonly hwAddr?: string;
  /** Wall-clock ms (µs precision); only when the kernel timestamped the packet. */
  readonly timestampMs?: number;
  /** Socket owner, for locally generated packets. */
  readonly uid?: number;
  readonly gid?: number;
  /** The first copyRange bytes of the packet from its network header on (empty in 'meta' mode). */
  readonly payload: Buffer;
  /** Addresses, protocol and ports parsed from payload, when it is IPv4 or IPv6. */
  readonly ip?: PacketSummary;
}

function malformed(what: string): WeftError {
  return new WeftError(CniCode.Netlink, `malformed NFLOG message: ${what}`);
}

/** NFULNL_MSG_PACKET → a packet; undefined for other messages. */
export function decodeNflogPacket(msg: NlMessage): NflogPacket | undefined {
  if (msg.type !== NFULNL_PACKET) return undefined;
  const p = msg.payload;
  if (p.length < C.NFGENMSG_LEN) throw malformed(`payload of ${p.length} bytes`);
  const family = p.readUInt8(0);
  const group = p.readUInt16BE(2);
  const a = new AttrSet(p.subarray(C.NFGENMSG_LEN));
  const hdr = a.bytes(C.NFULA_PACKET_HDR);
  const hwProtocol = hdr && hdr.length >= 3 ? hdr.readUInt16BE(0) : undefined;
  const hook = hdr && hdr.length >= 3 ? hdr.readUInt8(2) : undefined;
  const ts = a.bytes(C.NFULA_TIMESTAMP);
  const hw = a.bytes(C.NFULA_HWADDR);
  const hwLen = hw && hw.length >= 4 ? Math.min(hw.readUInt16BE(0), hw.length - 4) : 0;
  // Copied: the message buffer is the whole datagram, possibly many packets.
  const payload = Buffer.from(a.bytes(C.NFULA_PAYLOAD) ?? Buffer.alloc(0));
  const isIp = family === C.AF_INET || family === C.AF_INET6 || hwProtocol === ETH_P_IP || hwProtocol === ETH_P_IPV6;
  const ip = isIp ? parseIpPacket(payload) : undefined;
  const opt = <K extends string, V>(k: K, v: V | undefined): { [P in K]?: V } => (v === undefined ? {} : ({ [k]: v } as { [P in K]: V }));
  return {
    group,
    family,
    ...opt('prefix', a.str(C.NFULA_PREFIX)),
    ...opt('hwProtocol', hwProtocol),
    ...opt('hook', hook),
    ...opt('mark', a.be32(C.NFULA_MARK)),
    ...opt('inIfindex', a.be32(C.NFULA_IFINDEX_INDEV)),
    ...opt('outIfindex', a.be32(C.NFULA_IFINDEX_OUTDEV)),
    ...opt('physInIfindex', a.be32(C.NFULA_IFINDEX_PHYSINDEV)),
    ...opt('physOutIfindex', a.be32(C.NFULA_IFINDEX_PHYSOUTDEV)),
    ...opt('hwAddr', hwLen > 0 ? formatMac(hw!.subarray(4, 4 + hwLen)) : undefined),
    ...opt('timestampMs', ts && ts.length >= 16 ? Number(ts.readBigUInt64BE(0)) * 1000 + Number(ts.readBigUInt64BE(8)) / 1000 : undefined),
    ...opt('uid', a.be32(C.NFULA_UID)),
    ...opt('gid', a.be32(C.NFULA_GID)),
    payload,
    ...opt('ip', ip),
  };
}

/** What a watch delivers; 'overrun' means packets were lost (the kernel's queue was full). */
export type NflogEvent = { readonly type: 'packet'; readonly packet: NflogPacket } | ListenerProblem;

export interface NflogWatchOptions extends Omit<NflogConfig, 'group'> {
  readonly nsPath?: string;
  /** Kernel-side queue for unread packets (default 8 MiB, doubled by the kernel). */
  readonly receiveBufferBytes?: number;
  /** Also make NFLOG the namespace's default logger for these families (see nflogFamilyRequest). */
  readonly bindFamilies?: readonly IPFamily[];
}

export interface NflogWatch {
  close(): void;
  readonly closed: boolean;
}

/** Binds NFLOG `group` in the namespace and delivers its packets to onEvent until close(). */
export function watchNflog(group: number, onEvent: (e: NflogEvent) => void, opts: NflogWatchOptions = {}): NflogWatch {
  const bind = nflogBindRequest({ ...opts, group });
  const listener = NetlinkListener.open(
    {
      protocol: C.NETLINK_NETFILTER,
      receiveBufferBytes: opts.receiveBufferBytes ?? DEFAULT_EVENT_BUFFER_BYTES,
      ...(opts.nsPath !== undefined && { nsPath: opts.nsPath }),
    },
    `NFLOG group ${group}`,
  );
  try {
    for (const f of opts.bindFamilies ?? []) listener.request(nflogFamilyRequest('bind', f), `${listener.what}: make NFLOG the IPv${f} logger`);
    try {
      listener.request(bind, `${listener.what}: bind`);
    } catch (err) {
      if (isNetlinkError(err, 'EPERM')) throw new WeftError(CniCode.Netlink, `${listener.what}: another socket in that namespace has bound the group`, '', { cause: err });
      throw err;
    }
  } catch (err) {
    listener.close();
    throw err;
  }
  listener.start(
    // A message that does not decode is reported by the listener as a non-fatal error.
    (msg) => {
      const packet = decodeNflogPacket(msg);
      if (packet) onEvent({ type: 'packet', packet });
    },
    onEvent,
  );
  return {
    close: () => listener.close(),
    get closed() {
      return listener.closed;
    },
  };
}
