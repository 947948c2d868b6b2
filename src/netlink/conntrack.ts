// The kernel's connection tracking table over ctnetlink (NFNL_SUBSYS_CTNETLINK): a live stream
// of events (new, update, destroy) from the NFNLGRP_CONNTRACK_* multicast groups, and a dump for
// a start-up snapshot. Flow records are built from these: the destroy event carries the
// connection's final packet/byte counters and its start/stop times.
//
// The kernel sends a destroy when the entry dies: at once when a RST or a reopened tuple ends it,
// otherwise when its garbage collector finds it expired, which can be up to a minute late —
// stopMs is the real end either way.
//
// A message is struct nfgenmsg {family u8, version u8, res_id be16} + CTA_* attributes, whose
// integers are all big endian. Counters need net.netfilter.nf_conntrack_acct=1 and timestamps
// net.netfilter.nf_conntrack_timestamp=1 in the namespace, both before the connection starts
// (see enableConntrackAccounting). A namespace only tracks connections once something there
// uses conntrack (an nftables `ct` match, NAT).

import { WeftError, CniCode } from '../errors.js';
import { type IP, type IPFamily, ipToBytes } from '../net/ip.js';
import { writeSysctl } from '../netns/sysctl.js';
import { type Attr, AttrSet, nla } from './attrs.js';
import { NetlinkError } from './error.js';
import * as C from './constants.js';
import { familyOfAf } from './family.js';
import { DEFAULT_EVENT_BUFFER_BYTES, NetlinkListener, type ListenerProblem } from './listener.js';
import type { NlMessage, RequestSpec } from './message.js';
import { nfgenmsg, nfnlType } from './nfnetlink.js';
import { NetlinkSocket } from './socket.js';

export interface ConntrackIcmp {
  readonly type: number;
  readonly code: number;
  readonly id: number;
}

/** One direction of a connection as conntrack keys it. */
export interface ConntrackTuple {
  readonly src: IP;
  readonly dst: IP;
  /** IP protocol number: 6 tcp, 17 udp, 1 icmp, 58 ipv6-icmp, 132 sctp, … */
  readonly proto: number;
  /** TCP, UDP, SCTP, DCCP, UDP-Lite. */
  readonly srcPort?: number;
  readonly dstPort?: number;
  /** ICMP and ICMPv6 (echo id, type, code). */
  readonly icmp?: ConntrackIcmp;
  /** A zone that applies to this direction only (CTA_TUPLE_ZONE). */
  readonly zone?: number;
}

export interface ConntrackCounter {
  readonly packets: number;
  /** Layer 3 bytes: IP headers included, link-layer framing not. */
  readonly bytes: number;
}

export type TcpConntrackState =
  | 'none' | 'syn-sent' | 'syn-recv' | 'established' | 'fin-wait' | 'close-wait' | 'last-ack' | 'time-wait' | 'close' | 'syn-sent2';

const TCP_STATES: readonly TcpConntrackState[] = ['none', 'syn-sent', 'syn-recv', 'established', 'fin-wait', 'close-wait', 'last-ack', 'time-wait', 'close', 'syn-sent2'];

export interface ConntrackFlow {
  readonly family: IPFamily;
  /** As the first packet saw it. */
  readonly original: ConntrackTuple;
  /** What answers look like: src/dst swapped, and rewritten when NAT applies. */
  readonly reply: ConntrackTuple;
  /** IPS_* bits (nlconst.IPS_ASSURED, IPS_SEEN_REPLY, IPS_SRC_NAT, …). */
  readonly status: number;
  /** The kernel's id for the entry; stable for its lifetime, so new and destroy pair up by it. */
  readonly id?: number;
  readonly mark?: number;
  readonly zone?: number;
  /** Seconds until the entry expires, as of the message. */
  readonly timeoutSec?: number;
  readonly tcpState?: TcpConntrackState;
  /** Present when accounting was on as the connection started. */
  readonly counters?: { readonly original: ConntrackCounter; readonly reply: ConntrackCounter };
  /** Wall-clock milliseconds (sub-µs fraction kept) when timestamps were on as it started. */
  readonly startMs?: number;
  /** When the entry died; destroy events only. */
  readonly stopMs?: number;
  /**
   * When the kernel generated this event (Linux 6.14+, timestamps on): a destroy event can
   * reach us long after the entry expired, since the kernel's garbage collector finds it late.
   */
  readonly eventMs?: number;
}

export type ConntrackEventType = 'new' | 'update' | 'destroy';

/**
 * What a watch delivers. 'overrun': the kernel dropped events because the reader fell behind;
 * re-dump to resynchronise. 'error': fatal ones close the watch.
 */
export type ConntrackEvent = { readonly type: ConntrackEventType; readonly flow: ConntrackFlow } | ListenerProblem;

const CT_NEW = nfnlType(C.NFNL_SUBSYS_CTNETLINK, C.IPCTNL_MSG_CT_NEW);
const CT_GET = nfnlType(C.NFNL_SUBSYS_CTNETLINK, C.IPCTNL_MSG_CT_GET);
const CT_DELETE = nfnlType(C.NFNL_SUBSYS_CTNETLINK, C.IPCTNL_MSG_CT_DELETE);

const GROUPS: Record<ConntrackEventType, number> = {
  new: C.NFNLGRP_CONNTRACK_NEW,
  update: C.NFNLGRP_CONNTRACK_UPDATE,
  destroy: C.NFNLGRP_CONNTRACK_DESTROY,
};

function malformed(what: string): WeftError {
  return new WeftError(CniCode.Netlink, `malformed conntrack message: ${what}`);
}

/** Decodes a CTA_TUPLE_ORIG/REPLY nest. */
export function decodeTuple(a: AttrSet, which: string): ConntrackTuple {
  const ip = a.nested(C.CTA_TUPLE_IP);
  const proto = a.nested(C.CTA_TUPLE_PROTO);
  if (!ip || !proto) throw malformed(`${which} tuple without ${ip ? 'CTA_TUPLE_PROTO' : 'CTA_TUPLE_IP'}`);
  const src = ip.ip(C.CTA_IP_V4_SRC) ?? ip.ip(C.CTA_IP_V6_SRC);
  const dst = ip.ip(C.CTA_IP_V4_DST) ?? ip.ip(C.CTA_IP_V6_DST);
  const num = proto.u8(C.CTA_PROTO_NUM);
  if (!src || !dst || num === undefined) throw malformed(`${which} tuple without ${!src ? 'source address' : !dst ? 'destination address' : 'protocol number'}`);
  const srcPort = proto.be16(C.CTA_PROTO_SRC_PORT);
  const dstPort = proto.be16(C.CTA_PROTO_DST_PORT);
  const v6 = proto.has(C.CTA_PROTO_ICMPV6_TYPE);
  const icmpType = v6 ? proto.u8(C.CTA_PROTO_ICMPV6_TYPE) : proto.u8(C.CTA_PROTO_ICMP_TYPE);
  const zone = a.be16(C.CTA_TUPLE_ZONE);
  return {
    src,
    dst,
    proto: num,
    ...(srcPort !== undefined && { srcPort }),
    ...(dstPort !== undefined && { dstPort }),
    ...(icmpType !== undefined && {
      icmp: {
        type: icmpType,
        code: (v6 ? proto.u8(C.CTA_PROTO_ICMPV6_CODE) : proto.u8(C.CTA_PROTO_ICMP_CODE)) ?? 0,
        id: (v6 ? proto.be16(C.CTA_PROTO_ICMPV6_ID) : proto.be16(C.CTA_PROTO_ICMP_ID)) ?? 0,
      },
    }),
    ...(zone !== undefined && { zone }),
  };
}

/** CTA_COUNTERS_* nest: 64-bit values, or the 32-bit ones very old kernels sent. */
function decodeCounter(a: AttrSet | undefined): ConntrackCounter | undefined {
  if (!a) return undefined;
  const packets = a.be64(C.CTA_COUNTERS_PACKETS) ?? (a.be32(C.CTA_COUNTERS32_PACKETS) !== undefined ? BigInt(a.be32(C.CTA_COUNTERS32_PACKETS)!) : undefined);
  const bytes = a.be64(C.CTA_COUNTERS_BYTES) ?? (a.be32(C.CTA_COUNTERS32_BYTES) !== undefined ? BigInt(a.be32(C.CTA_COUNTERS32_BYTES)!) : undefined);
  return { packets: Number(packets ?? 0n), bytes: Number(bytes ?? 0n) };
}

const nsToMs = (ns: bigint): number => Number(ns / 1000n) / 1000;

/** Decodes an IPCTNL_MSG_CT_NEW/DELETE message (event or dump reply) into a flow. */
export function decodeConntrackFlow(msg: NlMessage): ConntrackFlow {
  const p = msg.payload;
  if (p.length < C.NFGENMSG_LEN) throw malformed(`payload of ${p.length} bytes`);
  const family = familyOfAf(p.readUInt8(0));
  if (!family) throw malformed(`address family ${p.readUInt8(0)}`);
  const a = new AttrSet(p.subarray(C.NFGENMSG_LEN));
  const orig = a.nested(C.CTA_TUPLE_ORIG);
  const reply = a.nested(C.CTA_TUPLE_REPLY);
  if (!orig || !reply) throw malformed(`no ${orig ? 'reply' : 'original'} tuple`);
  const id = a.be32(C.CTA_ID);
  const mark = a.be32(C.CTA_MARK);
  const zone = a.be16(C.CTA_ZONE);
  const timeoutSec = a.be32(C.CTA_TIMEOUT);
  const tcpStateNum = a.nested(C.CTA_PROTOINFO)?.nested(C.CTA_PROTOINFO_TCP)?.u8(C.CTA_PROTOINFO_TCP_STATE);
  const tcpState = tcpStateNum !== undefined ? TCP_STATES[tcpStateNum] : undefined;
  const cOrig = decodeCounter(a.nested(C.CTA_COUNTERS_ORIG));
  const cReply = decodeCounter(a.nested(C.CTA_COUNTERS_REPLY));
  const ts = a.nested(C.CTA_TIMESTAMP);
  const start = ts?.be64(C.CTA_TIMESTAMP_START);
  const stop = ts?.be64(C.CTA_TIMESTAMP_STOP);
  const event = a.be64(C.CTA_TIMESTAMP_EVENT);
  const zero = { packets: 0, bytes: 0 };
  return {
    family,
    original: decodeTuple(orig, 'original'),
    reply: decodeTuple(reply, 'reply'),
    status: a.be32(C.CTA_STATUS) ?? 0,
    ...(id !== undefined && { id }),
    ...(mark !== undefined && { mark }),
    ...(zone !== undefined && { zone }),
    ...(timeoutSec !== undefined && { timeoutSec }),
    ...(tcpState !== undefined && { tcpState }),
    ...((cOrig || cReply) && { counters: { original: cOrig ?? zero, reply: cReply ?? zero } }),
    // A zero start means the entry was created before timestamps were switched on.
    ...(start !== undefined && start > 0n && { startMs: nsToMs(start) }),
    ...(stop !== undefined && stop > 0n && { stopMs: nsToMs(stop) }),
    ...(event !== undefined && event > 0n && { eventMs: nsToMs(event) }),
  };
}

/**
 * An event message → its kind and flow; undefined for other messages. The kernel sends new
 * connections as CT_NEW with NLM_F_CREATE|NLM_F_EXCL, changes as CT_NEW without them, and
 * removals as CT_DELETE.
 */
export function decodeConntrackEvent(msg: NlMessage): { readonly type: ConntrackEventType; readonly flow: ConntrackFlow } | undefined {
  let type: ConntrackEventType;
  if (msg.type === CT_DELETE) type = 'destroy';
  else if (msg.type === CT_NEW) type = msg.flags & (C.NLM_F_CREATE | C.NLM_F_EXCL) ? 'new' : 'update';
  else return undefined;
  return { type, flow: decodeConntrackFlow(msg) };
}

/** IPCTNL_MSG_CT_GET with NLM_F_DUMP: every entry, or one family's. */
export function conntrackDumpRequest(family?: IPFamily): RequestSpec {
  return {
    type: CT_GET,
    flags: C.NLM_F_REQUEST | C.NLM_F_DUMP,
    fixed: nfgenmsg(family === 4 ? C.AF_INET : family === 6 ? C.AF_INET6 : C.AF_UNSPEC),
  };
}

export interface ConntrackDumpOptions {
  readonly nsPath?: string;
  readonly family?: IPFamily;
}

/**
 * The table as it is now. To miss nothing, start the watch first and dump second: a connection
 * may then appear in both, which its id resolves.
 */
export function dumpConntrack(opts: ConntrackDumpOptions = {}): ConntrackFlow[] {
  const sock = NetlinkSocket.open({ ...(opts.nsPath !== undefined && { nsPath: opts.nsPath }), protocol: C.NETLINK_NETFILTER });
  try {
    const where = opts.nsPath ? ` in ${opts.nsPath}` : '';
    return sock.dump(conntrackDumpRequest(opts.family), `dump conntrack table${where}`, CT_NEW).map(decodeConntrackFlow);
  } finally {
    sock.close();
  }
}

/**
 * Empties the namespace's connection table (IPCTNL_MSG_CT_DELETE without a tuple, as
 * `conntrack -F`): for tests that must not see one round's connections carried into the next.
 */
export function flushConntrack(nsPath: string): void {
  const sock = NetlinkSocket.open({ nsPath, protocol: C.NETLINK_NETFILTER });
  try {
    sock.request({ type: CT_DELETE, flags: C.NLM_F_REQUEST | C.NLM_F_ACK, fixed: nfgenmsg(C.AF_UNSPEC) }, `flush conntrack table in ${nsPath}`);
  } finally {
    sock.close();
  }
}

/** IPCTNL_MSG_CT_GET for the one entry whose original direction is `t` (ports: TCP, UDP, SCTP). */
export function conntrackGetRequest(t: ConntrackTuple): RequestSpec {
  const v4 = t.src.family === 4;
  const proto: Attr[] = [nla.u8(C.CTA_PROTO_NUM, t.proto)];
  if (t.srcPort !== undefined) proto.push(nla.be16(C.CTA_PROTO_SRC_PORT, t.srcPort));
  if (t.dstPort !== undefined) proto.push(nla.be16(C.CTA_PROTO_DST_PORT, t.dstPort));
  return {
    type: CT_GET,
    flags: C.NLM_F_REQUEST,
    fixed: nfgenmsg(v4 ? C.AF_INET : C.AF_INET6),
    attrs: [{
      type: C.CTA_TUPLE_ORIG, nestedFlag: true, value: [
        { type: C.CTA_TUPLE_IP, nestedFlag: true, value: [
          { type: v4 ? C.CTA_IP_V4_SRC : C.CTA_IP_V6_SRC, value: ipToBytes(t.src) },
          { type: v4 ? C.CTA_IP_V4_DST : C.CTA_IP_V6_DST, value: ipToBytes(t.dst) },
        ] },
        { type: C.CTA_TUPLE_PROTO, nestedFlag: true, value: proto },
      ],
    }],
  };
}

/**
 * Reads single entries by their original tuple, on one socket kept open: counters come only
 * with a destroy event or a read, and a read of one entry costs what it returns, unlike a dump of
 * the whole table. undefined when the entry is gone.
 */
export class ConntrackReader {
  private sock: NetlinkSocket | undefined;

  constructor(private readonly nsPath?: string) {}

  get(t: ConntrackTuple): ConntrackFlow | undefined {
    this.sock ??= NetlinkSocket.open({ ...(this.nsPath !== undefined && { nsPath: this.nsPath }), protocol: C.NETLINK_NETFILTER });
    try {
      return decodeConntrackFlow(this.sock.query(conntrackGetRequest(t), 'read a conntrack entry', CT_NEW));
    } catch (err) {
      if (err instanceof NetlinkError && err.errno === 2 /* ENOENT */) return undefined;
      throw err;
    }
  }

  close(): void {
    this.sock?.close();
    this.sock = undefined;
  }
}

export interface ConntrackWatchOptions {
  readonly nsPath?: string;
  /** Which events to receive; default all three. Updates are many (every TCP state change). */
  readonly events?: readonly ConntrackEventType[];
  /** Kernel-side queue for unread events (default 8 MiB, doubled by the kernel). */
  readonly receiveBufferBytes?: number;
}

export interface ConntrackWatch {
  close(): void;
  readonly closed: boolean;
}

/**
 * Delivers conntrack events of the namespace to onEvent, from the event loop, until close().
 * A message that fails to decode is reported as a non-fatal 'error' and skipped.
 */
export function watchConntrack(onEvent: (e: ConntrackEvent) => void, opts: ConntrackWatchOptions = {}): ConntrackWatch {
  const events = opts.events ?? ['new', 'update', 'destroy'];
  if (events.length === 0) throw new WeftError(CniCode.Internal, 'watchConntrack: no event types asked for');
  const listener = NetlinkListener.open(
    {
      protocol: C.NETLINK_NETFILTER,
      groups: [...new Set(events)].map((e) => GROUPS[e]),
      receiveBufferBytes: opts.receiveBufferBytes ?? DEFAULT_EVENT_BUFFER_BYTES,
      ...(opts.nsPath !== undefined && { nsPath: opts.nsPath }),
    },
    'conntrack events',
  );
  listener.start(
    // A message that does not decode is reported by the listener as a non-fatal error.
    (msg) => {
      const ev = decodeConntrackEvent(msg);
      if (ev) onEvent(ev);
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

/** The per-namespace switches for counters and start/stop times; they apply to connections that start afterwards. */
export const CONNTRACK_ACCOUNTING_SYSCTLS = ['net.netfilter.nf_conntrack_acct', 'net.netfilter.nf_conntrack_timestamp'] as const;

/**
 * Turns on conntrack counters and timestamps in the namespace at nsPath (undefined: our own —
 * weftd on a real host; tests always pass their namespace).
 */
export function enableConntrackAccounting(nsPath: string | undefined): void {
  for (const key of CONNTRACK_ACCOUNTING_SYSCTLS) writeSysctl(key, 1, nsPath);
}
