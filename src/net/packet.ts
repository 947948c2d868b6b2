// Just enough of IPv4/IPv6 and TCP/UDP/ICMP headers to say who sent a packet to whom: NFLOG hands
// over the first bytes of a dropped packet (its copy range), and a flow record needs addresses,
// protocol and ports. Truncated input gives what it has (addresses without ports), never throws.

import { ipFromBytes, type IP, type IPFamily } from './ip.js';

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ICMPV6 = 58;
export const IPPROTO_DCCP = 33;
export const IPPROTO_SCTP = 132;
export const IPPROTO_UDPLITE = 136;

/** Protocols whose header starts with 16-bit source and destination ports. */
const PORT_PROTOCOLS = new Set([IPPROTO_TCP, IPPROTO_UDP, IPPROTO_DCCP, IPPROTO_SCTP, IPPROTO_UDPLITE]);

// IPv6 extension headers walked to reach the transport header.
const V6_HOP_BY_HOP = 0;
const V6_ROUTING = 43;
const V6_FRAGMENT = 44;
const V6_AH = 51;
const V6_DEST_OPTS = 60;
const V6_MAX_EXTENSIONS = 8;

export interface PacketSummary {
  readonly family: IPFamily;
  readonly src: IP;
  readonly dst: IP;
  /** Transport protocol number, after any IPv6 extension headers. */
  readonly proto: number;
  /** The whole IP packet's length from its header (more than the bytes seen when truncated). */
  readonly length: number;
  readonly srcPort?: number;
  readonly dstPort?: number;
  /** TCP flag bits (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, …). */
  readonly tcpFlags?: number;
  /** ICMP/ICMPv6 type and code; id for echo requests and replies. */
  readonly icmp?: { readonly type: number; readonly code: number; readonly id?: number };
  /** A fragment other than the first: it carries no transport header. */
  readonly laterFragment?: boolean;
}

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_ACK = 0x10;

/** Parses an IP packet (IPv4 or IPv6 by its version nibble); undefined when it is neither or too short. */
export function parseIpPacket(buf: Uint8Array): PacketSummary | undefined {
  if (buf.length < 1) return undefined;
  const version = buf[0]! >> 4;
  if (version === 4) return parseIPv4(buf);
  if (version === 6) return parseIPv6(buf);
  return undefined;
}

function u16(buf: Uint8Array, off: number): number {
  return (buf[off]! << 8) | buf[off + 1]!;
}

function parseIPv4(buf: Uint8Array): PacketSummary | undefined {
  if (buf.length < 20) return undefined;
  const ihl = (buf[0]! & 0x0f) * 4;
  if (ihl < 20) return undefined;
  const fragOffset = u16(buf, 6) & 0x1fff;
  const base = {
    family: 4 as const,
    src: ipFromBytes(buf.subarray(12, 16)),
    dst: ipFromBytes(buf.subarray(16, 20)),
    proto: buf[9]!,
    length: u16(buf, 2),
  };
  if (fragOffset !== 0) return { ...base, laterFragment: true };
  return { ...base, ...transport(base.proto, buf, ihl, false) };
}

function parseIPv6(buf: Uint8Array): PacketSummary | undefined {
  if (buf.length < 40) return undefined;
  let next = buf[6]!;
  let off = 40;
  const base = {
    family: 6 as const,
    src: ipFromBytes(buf.subarray(8, 24)),
    dst: ipFromBytes(buf.subarray(24, 40)),
    length: 40 + u16(buf, 4),
  };
  for (let i = 0; i < V6_MAX_EXTENSIONS; i++) {
    if (next === V6_HOP_BY_HOP || next === V6_ROUTING || next === V6_DEST_OPTS) {
      if (off + 2 > buf.length) return { ...base, proto: next };
      const len = (buf[off + 1]! + 1) * 8;
      next = buf[off]!;
      off += len;
    } else if (next === V6_AH) {
      if (off + 2 > buf.length) return { ...base, proto: next };
      const len = (buf[off + 1]! + 2) * 4;
      next = buf[off]!;
      off += len;
    } else if (next === V6_FRAGMENT) {
      if (off + 8 > buf.length) return { ...base, proto: next };
      const fragOffset = u16(buf, off + 2) >> 3;
      next = buf[off]!;
      off += 8;
      if (fragOffset !== 0) return { ...base, proto: next, laterFragment: true };
    } else {
      break;
    }
  }
  return { ...base, proto: next, ...transport(next, buf, off, true) };
}

function transport(proto: number, buf: Uint8Array, off: number, v6: boolean): Partial<PacketSummary> {
  if (PORT_PROTOCOLS.has(proto)) {
    if (off + 4 > buf.length) return {};
    const ports = { srcPort: u16(buf, off), dstPort: u16(buf, off + 2) };
    if (proto === IPPROTO_TCP && off + 14 <= buf.length) return { ...ports, tcpFlags: buf[off + 13]! };
    return ports;
  }
  if (proto === (v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP)) {
    if (off + 2 > buf.length) return {};
    const type = buf[off]!;
    const code = buf[off + 1]!;
    // Echo request/reply: 8/0 (ICMP), 128/129 (ICMPv6); the identifier follows the checksum.
    const echo = v6 ? type === 128 || type === 129 : type === 8 || type === 0;
    if (echo && off + 6 <= buf.length) return { icmp: { type, code, id: u16(buf, off + 4) } };
    return { icmp: { type, code } };
  }
  return {};
}
