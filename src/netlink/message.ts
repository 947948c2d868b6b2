// Netlink message framing (struct nlmsghdr: len u32, type u16, flags u16, seq u32, pid u32) and
// the kernel's NLMSG_ERROR reply, including extended ACK attributes.

import { WeftError, CniCode } from '../errors.js';
import { AttrSet, encodedLength, writeAttrs, align4, type Attr } from './attrs.js';
import { NLMSG_ERROR, NLM_F_CAPPED, NLM_F_ACK_TLVS, NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS } from './constants.js';

export const NLMSG_HDRLEN = 16;

export interface NlHeader {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  readonly pid: number;
}

export interface NlMessage extends NlHeader {
  /** Everything after the 16-byte header (fixed struct + attributes). */
  readonly payload: Buffer;
}

export interface RequestSpec {
  readonly type: number;
  readonly flags: number;
  readonly seq?: number;
  /** The family-specific fixed struct (ifinfomsg, rtmsg, ...). */
  readonly fixed: Uint8Array;
  readonly attrs?: readonly Attr[];
}

/** Bytes encodeMessage/encodeMessageInto write for req. */
export function encodedMessageLength(req: RequestSpec): number {
  return NLMSG_HDRLEN + align4(req.fixed.length) + (req.attrs && req.attrs.length > 0 ? encodedLength(req.attrs) : 0);
}

/**
 * Writes req at `offset` of `buf` (which must hold `len` more bytes, zeroed: padding is not
 * written) and returns the offset after it; flags and seq override the request's own. Batches
 * pack thousands of messages into one datagram this way, without a buffer or object per message.
 */
export function encodeMessageInto(req: RequestSpec, buf: Buffer, offset: number, flags = req.flags, seq = req.seq ?? 0, len = encodedMessageLength(req)): number {
  buf.writeUInt32LE(len, offset);
  buf.writeUInt16LE(req.type, offset + 4);
  buf.writeUInt16LE(flags, offset + 6);
  buf.writeUInt32LE(seq >>> 0, offset + 8);
  buf.writeUInt32LE(0, offset + 12); // pid 0: let the kernel match us by socket
  buf.set(req.fixed, offset + NLMSG_HDRLEN);
  if (req.attrs && req.attrs.length > 0) writeAttrs(req.attrs, buf, offset + NLMSG_HDRLEN + align4(req.fixed.length));
  return offset + len;
}

export function encodeMessage(req: RequestSpec): Buffer {
  const buf = Buffer.alloc(encodedMessageLength(req));
  encodeMessageInto(req, buf, 0);
  return buf;
}

/** Rewrites the sequence number of an encoded message in place. */
export function setSeq(msg: Buffer, seq: number): void {
  msg.writeUInt32LE(seq >>> 0, 8);
}

/** Splits one received datagram into its messages. */
export function decodeMessages(buf: Buffer): NlMessage[] {
  const out: NlMessage[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const len = buf.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > buf.length) {
      throw new WeftError(CniCode.Netlink, `malformed netlink message at offset ${off}: length ${len} with ${buf.length - off} bytes left`);
    }
    out.push({
      type: buf.readUInt16LE(off + 4),
      flags: buf.readUInt16LE(off + 6),
      seq: buf.readUInt32LE(off + 8),
      pid: buf.readUInt32LE(off + 12),
      payload: buf.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  return out;
}

/** A decoded NLMSG_ERROR. errno 0 is an ACK. */
export interface NlErrorReply {
  /** Positive errno (the kernel sends it negated); 0 for a plain ACK. */
  readonly errno: number;
  /** The header of the request this answers. */
  readonly request: NlHeader;
  /** The kernel's extended-ACK text, e.g. "Nexthop has invalid gateway". */
  readonly extackMessage?: string;
  /** Byte offset of the offending attribute in the request, when the kernel says. */
  readonly extackOffset?: number;
}

export function decodeError(msg: NlMessage): NlErrorReply {
  if (msg.type !== NLMSG_ERROR) throw new WeftError(CniCode.Netlink, `expected NLMSG_ERROR, got message type ${msg.type}`);
  const p = msg.payload;
  if (p.length < 4 + NLMSG_HDRLEN) throw new WeftError(CniCode.Netlink, `truncated NLMSG_ERROR (${p.length} bytes)`);
  const raw = p.readInt32LE(0);
  const errno = raw === 0 ? 0 : -raw;
  const origLen = p.readUInt32LE(4);
  const request: NlHeader = { type: p.readUInt16LE(8), flags: p.readUInt16LE(10), seq: p.readUInt32LE(12), pid: p.readUInt32LE(16) };
  let result: NlErrorReply = { errno, request };
  if (msg.flags & NLM_F_ACK_TLVS) {
    // The echoed request is only the header when capped (ACKs, or NETLINK_CAP_ACK sockets).
    const tlvStart = 4 + (msg.flags & NLM_F_CAPPED ? NLMSG_HDRLEN : align4(origLen));
    if (tlvStart <= p.length) {
      const tlvs = new AttrSet(p.subarray(tlvStart));
      const text = tlvs.str(NLMSGERR_ATTR_MSG);
      const offs = tlvs.u32(NLMSGERR_ATTR_OFFS);
      if (text !== undefined) result = { ...result, extackMessage: text };
      if (offs !== undefined) result = { ...result, extackOffset: offs };
    }
  }
  return result;
}
