// BGP-4 message codec: OPEN, UPDATE, NOTIFICATION, KEEPALIVE, ROUTE-REFRESH (RFC 4271, 2918,
// 4456, 4724, 4760, 6793) with IPv6 unicast in the multiprotocol attributes (RFC 2545). Decoding
// never trusts a length: every read is bounds-checked and a violation becomes a BgpError naming
// the NOTIFICATION the RFCs prescribe for it.
import { type Cidr, type IP, type IPFamily, formatIP, ipFromBytes, ipFromValue, ipToBytes, maskValue, networkOf } from '../net/ip.js';
import {
  AFI_IPV4, AS_TRANS, AsPathSegmentType, AttrFlag, AttrType, BGP_VERSION, CapabilityCode, ErrorCode,
  HEADER_LENGTH, HeaderSubcode, MAX_MESSAGE_LENGTH, MessageType, OpenSubcode, OptionalParamType, type Origin,
  SAFI_UNICAST, UpdateSubcode,
} from './constants.js';
import { BgpError, type Decoded } from './errors.js';
import { type AddressFamily, afiSafiOf, familyOf, familyOfAfiSafi } from './family.js';

// ---------------------------------------------------------------- types

export type Capability =
  | { kind: 'multiprotocol'; afi: number; safi: number }
  | { kind: 'route-refresh' }
  | { kind: 'four-octet-asn'; asn: number }
  | {
      kind: 'graceful-restart';
      /** R bit: the sender has just restarted and its peer must not wait for its End-of-RIB first. */
      restarting: boolean;
      restartTime: number;
      families: GracefulRestartFamily[];
    }
  | { kind: 'unknown'; code: number; data: Buffer };

export interface GracefulRestartFamily {
  afi: number;
  safi: number;
  forwardingPreserved: boolean;
}

export interface OpenMessage {
  type: 'open';
  version: number;
  /** The speaker's AS: the 4-octet capability's value when present, else the 2-octet field. */
  asn: number;
  holdTime: number;
  bgpId: IP;
  capabilities: Capability[];
}

export type AsPathSegment = { type: 'sequence' | 'set' | 'confed-sequence' | 'confed-set'; asns: number[] };

export interface RawAttribute {
  flags: number;
  code: number;
  value: Buffer;
}

export interface PathAttributes {
  origin: Origin;
  asPath: AsPathSegment[];
  nextHop?: IP | undefined;
  med?: number | undefined;
  localPref?: number | undefined;
  atomicAggregate?: boolean | undefined;
  aggregator?: { asn: number; address: IP } | undefined;
  communities?: number[] | undefined;
  originatorId?: IP | undefined;
  clusterList?: IP[] | undefined;
  /** Unrecognized optional transitive attributes, passed on with the Partial bit set. */
  unknown?: RawAttribute[] | undefined;
}

export interface UpdateMessage {
  type: 'update';
  /** Withdrawn prefixes of both families: the Withdrawn Routes field and MP_UNREACH_NLRI. */
  withdrawn: Cidr[];
  /**
   * Present exactly when the UPDATE carries reachable NLRI (`nlri` or `ipv6`). Its nextHop is the
   * IPv4 one, so it is undefined in an UPDATE that announces IPv6 prefixes only.
   */
  attributes: PathAttributes | undefined;
  /** Reachable IPv4 unicast prefixes: the NLRI field and an IPv4 MP_REACH_NLRI. */
  nlri: Cidr[];
  /** Reachable IPv6 unicast prefixes (MP_REACH_NLRI): `attributes` apply with this next hop. */
  ipv6?: Ipv6Reach | undefined;
  /** The family this UPDATE is the End-of-RIB marker of (RFC 4724 §2). */
  endOfRib?: AddressFamily | undefined;
  /**
   * Malformed attributes handled without a session reset (RFC 7606); absent when there were
   * none. With a treat-as-withdraw among them the UPDATE's NLRI are already in `withdrawn`.
   */
  errors?: UpdateAttributeError[] | undefined;
}

export interface Ipv6Reach {
  /** The global next hop; a route needs one the kernel can forward to without an interface. */
  nextHop: IP;
  /** RFC 2545's second next hop, when the peer sent 32 bytes and the second is link-local. */
  linkLocalNextHop?: IP | undefined;
  nlri: Cidr[];
}

/**
 * RFC 7606 §2: the two ways a malformed attribute is handled while the session stays up.
 * attribute-discard drops just the attribute (it cannot change route selection);
 * treat-as-withdraw withdraws every prefix the UPDATE announced.
 */
export interface UpdateAttributeError {
  action: 'attribute-discard' | 'treat-as-withdraw';
  /** The UPDATE error subcode RFC 4271 would have sent the peer (code 3), for logs. */
  subcode: number;
  message: string;
}

export interface NotificationMessage {
  type: 'notification';
  code: number;
  subcode: number;
  data: Buffer;
}

export interface KeepaliveMessage {
  type: 'keepalive';
}

export interface RouteRefreshMessage {
  type: 'route-refresh';
  afi: number;
  safi: number;
}

export type BgpMessage = OpenMessage | UpdateMessage | NotificationMessage | KeepaliveMessage | RouteRefreshMessage;

/** What both sides agreed on in their OPENs and changes how UPDATEs are laid out. */
export interface CodecContext {
  fourOctetAs: boolean;
}

export const DEFAULT_CONTEXT: CodecContext = { fourOctetAs: false };

// ---------------------------------------------------------------- reading helpers

/** A bounds-checked cursor; running past the end raises the error the caller chose for this region. */
class Reader {
  pos: number;
  constructor(private readonly buf: Buffer, start: number, readonly end: number, private readonly overrun: () => BgpError) {
    this.pos = start;
  }
  need(n: number): void {
    if (this.pos + n > this.end) throw this.overrun();
  }
  u8(): number { this.need(1); return this.buf[this.pos++] as number; }
  u16(): number { this.need(2); const v = this.buf.readUInt16BE(this.pos); this.pos += 2; return v; }
  u32(): number { this.need(4); const v = this.buf.readUInt32BE(this.pos); this.pos += 4; return v; }
  bytes(n: number): Buffer { this.need(n); const b = this.buf.subarray(this.pos, this.pos + n); this.pos += n; return b; }
  get remaining(): number { return this.end - this.pos; }
}

function u16(n: number): Buffer { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; }
function u32(n: number): Buffer { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b; }

// ---------------------------------------------------------------- header + framing

const MARKER = Buffer.alloc(16, 0xff);

function frame(type: number, body: Buffer): Buffer {
  const len = HEADER_LENGTH + body.length;
  if (len > MAX_MESSAGE_LENGTH) throw new Error(`BGP message of ${len} bytes exceeds ${MAX_MESSAGE_LENGTH}`);
  const out = Buffer.alloc(len);
  MARKER.copy(out, 0);
  out.writeUInt16BE(len, 16);
  out[18] = type;
  body.copy(out, HEADER_LENGTH);
  return out;
}

const MIN_LENGTH: Record<number, number> = {
  [MessageType.Open]: 29,
  [MessageType.Update]: 23,
  [MessageType.Notification]: 21,
  [MessageType.Keepalive]: 19,
  [MessageType.RouteRefresh]: 23,
};

function badLength(len: number): BgpError {
  return new BgpError(ErrorCode.MessageHeader, HeaderSubcode.BadMessageLength, `bad message length ${len}`, u16(len));
}

/** Checks marker and length field of a header prefix (at least 18 bytes). */
function checkMarkerAndLength(buf: Buffer, at: number): number {
  for (let i = 0; i < 16; i++) {
    if (buf[at + i] !== 0xff) {
      throw new BgpError(ErrorCode.MessageHeader, HeaderSubcode.ConnectionNotSynchronized, 'message marker is not all ones');
    }
  }
  const len = buf.readUInt16BE(at + 16);
  if (len < HEADER_LENGTH || len > MAX_MESSAGE_LENGTH) throw badLength(len);
  return len;
}

/**
 * Splits a TCP byte stream into whole BGP messages, however the stream was cut into reads. A
 * header error poisons the stream (nothing after it can be trusted), so it is raised once and
 * every later push raises it again.
 */
export class MessageFramer {
  private pending: Buffer = Buffer.alloc(0);
  private failed: BgpError | undefined;

  push(chunk: Buffer): Buffer[] {
    if (this.failed) throw this.failed;
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: Buffer[] = [];
    let at = 0;
    try {
      while (this.pending.length - at >= 18) {
        const len = checkMarkerAndLength(this.pending, at);
        if (this.pending.length - at < len) break;
        out.push(Buffer.from(this.pending.subarray(at, at + len)));
        at += len;
      }
    } catch (err) {
      if (err instanceof BgpError) this.failed = err;
      throw err;
    }
    this.pending = at === 0 ? this.pending : Buffer.from(this.pending.subarray(at));
    return out;
  }

  get buffered(): number {
    return this.pending.length;
  }
}

/** Decodes one whole message (as cut by MessageFramer). Never throws: malformed input is an error result. */
export function decodeMessage(buf: Buffer, ctx: CodecContext = DEFAULT_CONTEXT): Decoded<BgpMessage> {
  try {
    return { ok: true, value: decodeOrThrow(buf, ctx) };
  } catch (err) {
    if (err instanceof BgpError) return { ok: false, error: err };
    throw err;
  }
}

function decodeOrThrow(buf: Buffer, ctx: CodecContext): BgpMessage {
  if (buf.length < HEADER_LENGTH) throw badLength(buf.length);
  const len = checkMarkerAndLength(buf, 0);
  if (len !== buf.length) throw badLength(len);
  const type = buf[18] as number;
  const min = MIN_LENGTH[type];
  if (min === undefined) {
    throw new BgpError(ErrorCode.MessageHeader, HeaderSubcode.BadMessageType, `unknown message type ${type}`, Buffer.from([type]));
  }
  if (len < min) throw badLength(len);
  switch (type) {
    case MessageType.Open: return decodeOpen(buf);
    case MessageType.Update: return decodeUpdate(buf, ctx);
    case MessageType.Notification:
      return { type: 'notification', code: buf[19] as number, subcode: buf[20] as number, data: Buffer.from(buf.subarray(21)) };
    case MessageType.Keepalive:
      if (len !== HEADER_LENGTH) throw badLength(len);
      return { type: 'keepalive' };
    case MessageType.RouteRefresh:
      if (len !== 23) throw badLength(len);
      return { type: 'route-refresh', afi: buf.readUInt16BE(19), safi: buf[22] as number };
    default:
      throw new BgpError(ErrorCode.MessageHeader, HeaderSubcode.BadMessageType, `unknown message type ${type}`, Buffer.from([type]));
  }
}

// ---------------------------------------------------------------- OPEN

export interface OpenParams {
  asn: number;
  holdTime: number;
  bgpId: IP;
  capabilities: Capability[];
}

function encodeCapability(c: Capability): Buffer {
  let code: number;
  let value: Buffer;
  switch (c.kind) {
    case 'multiprotocol':
      code = CapabilityCode.Multiprotocol;
      value = Buffer.from([c.afi >> 8, c.afi & 0xff, 0, c.safi]);
      break;
    case 'route-refresh':
      code = CapabilityCode.RouteRefresh;
      value = Buffer.alloc(0);
      break;
    case 'four-octet-asn':
      code = CapabilityCode.FourOctetAsn;
      value = u32(c.asn);
      break;
    case 'graceful-restart': {
      code = CapabilityCode.GracefulRestart;
      const head = u16((c.restarting ? 0x8000 : 0) | (c.restartTime & 0x0fff));
      const fams = c.families.map((f) => Buffer.from([f.afi >> 8, f.afi & 0xff, f.safi, f.forwardingPreserved ? 0x80 : 0]));
      value = Buffer.concat([head, ...fams]);
      break;
    }
    case 'unknown':
      code = c.code;
      value = c.data;
      break;
  }
  return Buffer.concat([Buffer.from([code, value.length]), value]);
}

export function encodeOpen(p: OpenParams): Buffer {
  const caps = Buffer.concat(p.capabilities.map(encodeCapability));
  const params = caps.length > 0 ? Buffer.concat([Buffer.from([OptionalParamType.Capabilities, caps.length]), caps]) : Buffer.alloc(0);
  if (params.length > 255) throw new Error('OPEN optional parameters exceed 255 bytes');
  const body = Buffer.alloc(10);
  body[0] = BGP_VERSION;
  body.writeUInt16BE(p.asn > 0xffff ? AS_TRANS : p.asn, 1);
  body.writeUInt16BE(p.holdTime, 3);
  ipToBytes(p.bgpId).copy(body, 5);
  body[9] = params.length;
  return frame(MessageType.Open, Buffer.concat([body, params]));
}

function openError(subcode: number, message: string, data?: Buffer): BgpError {
  return new BgpError(ErrorCode.Open, subcode, message, data);
}

function decodeCapability(code: number, value: Buffer): Capability {
  const malformed = (): BgpError => openError(OpenSubcode.Unspecific, `malformed capability ${code}`);
  switch (code) {
    case CapabilityCode.Multiprotocol:
      if (value.length !== 4) throw malformed();
      return { kind: 'multiprotocol', afi: value.readUInt16BE(0), safi: value[3] as number };
    case CapabilityCode.RouteRefresh:
      if (value.length !== 0) throw malformed();
      return { kind: 'route-refresh' };
    case CapabilityCode.FourOctetAsn:
      if (value.length !== 4) throw malformed();
      return { kind: 'four-octet-asn', asn: value.readUInt32BE(0) };
    case CapabilityCode.GracefulRestart: {
      if (value.length < 2 || (value.length - 2) % 4 !== 0) throw malformed();
      const head = value.readUInt16BE(0);
      const families: GracefulRestartFamily[] = [];
      for (let i = 2; i < value.length; i += 4) {
        families.push({ afi: value.readUInt16BE(i), safi: value[i + 2] as number, forwardingPreserved: ((value[i + 3] as number) & 0x80) !== 0 });
      }
      return { kind: 'graceful-restart', restarting: (head & 0x8000) !== 0, restartTime: head & 0x0fff, families };
    }
    default:
      return { kind: 'unknown', code, data: Buffer.from(value) };
  }
}

function decodeOpen(buf: Buffer): OpenMessage {
  const r = new Reader(buf, HEADER_LENGTH, buf.length, () => badLength(buf.length));
  const version = r.u8();
  if (version !== BGP_VERSION) {
    throw openError(OpenSubcode.UnsupportedVersion, `unsupported BGP version ${version}`, u16(BGP_VERSION));
  }
  const as2 = r.u16();
  const holdTime = r.u16();
  const idBytes = r.bytes(4);
  const optLen = r.u8();
  if (optLen !== r.remaining) {
    throw openError(OpenSubcode.Unspecific, `optional parameters length ${optLen} does not match the ${r.remaining} bytes present`);
  }
  const capabilities: Capability[] = [];
  const pr = new Reader(buf, r.pos, buf.length, () => openError(OpenSubcode.Unspecific, 'optional parameter overruns the OPEN message'));
  while (pr.remaining > 0) {
    const ptype = pr.u8();
    const plen = pr.u8();
    const pval = pr.bytes(plen);
    if (ptype !== OptionalParamType.Capabilities) {
      throw openError(OpenSubcode.UnsupportedOptionalParameter, `unsupported optional parameter ${ptype}`, Buffer.from([ptype]));
    }
    const cr = new Reader(pval, 0, pval.length, () => openError(OpenSubcode.Unspecific, 'capability overruns its optional parameter'));
    while (cr.remaining > 0) {
      const code = cr.u8();
      const clen = cr.u8();
      capabilities.push(decodeCapability(code, cr.bytes(clen)));
    }
  }
  const fours = capabilities.filter((c): c is Extract<Capability, { kind: 'four-octet-asn' }> => c.kind === 'four-octet-asn');
  const four = fours[0];
  const asn = four ? four.asn : as2;
  if (asn === 0) throw openError(OpenSubcode.BadPeerAs, 'peer AS 0 is invalid', four ? u32(0) : u16(as2));
  if (four) {
    // RFC 6793 §4.1: the capability carries the speaker's AS, and the 2-octet field the same AS
    // or AS_TRANS. Any disagreement leaves the peer's AS unknown: Bad Peer AS, as FRR answers.
    const other = fours.find((c) => c.asn !== four.asn);
    if (other) throw openError(OpenSubcode.BadPeerAs, `4-octet AS capability given twice, as AS ${four.asn} and AS ${other.asn}`, u32(four.asn));
    if (four.asn === AS_TRANS) throw openError(OpenSubcode.BadPeerAs, `4-octet AS capability carries AS_TRANS (${AS_TRANS}) instead of an AS`, u32(four.asn));
    if (as2 !== AS_TRANS && as2 !== four.asn) {
      throw openError(OpenSubcode.BadPeerAs, `4-octet AS capability says AS ${four.asn} but the OPEN's AS field says ${as2}`, u32(four.asn));
    }
  }
  if (holdTime === 1 || holdTime === 2) {
    throw openError(OpenSubcode.UnacceptableHoldTime, `hold time ${holdTime} s is neither 0 nor at least 3`, u16(holdTime));
  }
  const bgpId = ipFromBytes(idBytes);
  if (bgpId.value === 0n) throw openError(OpenSubcode.BadBgpIdentifier, 'BGP identifier 0.0.0.0 is invalid', idBytes);
  return { type: 'open', version, asn, holdTime, bgpId, capabilities };
}

// ---------------------------------------------------------------- NOTIFICATION, KEEPALIVE, ROUTE-REFRESH

export function encodeNotification(code: number, subcode: number, data: Buffer = Buffer.alloc(0)): Buffer {
  return frame(MessageType.Notification, Buffer.concat([Buffer.from([code, subcode]), data]));
}

export function encodeKeepalive(): Buffer {
  return frame(MessageType.Keepalive, Buffer.alloc(0));
}

export function encodeRouteRefresh(afi: number = AFI_IPV4, safi: number = SAFI_UNICAST): Buffer {
  return frame(MessageType.RouteRefresh, Buffer.from([afi >> 8, afi & 0xff, 0, safi]));
}

export function encodeMessage(m: BgpMessage, ctx: CodecContext = DEFAULT_CONTEXT): Buffer {
  switch (m.type) {
    case 'open': return encodeOpen(m);
    case 'update': return encodeUpdate(m, ctx);
    case 'notification': return encodeNotification(m.code, m.subcode, m.data);
    case 'keepalive': return encodeKeepalive();
    case 'route-refresh': return encodeRouteRefresh(m.afi, m.safi);
  }
}

// ---------------------------------------------------------------- prefixes

/** Length in bytes of one encoded prefix (either family). */
export function prefixWireLength(c: Cidr): number {
  return 1 + ((c.prefix + 7) >> 3);
}

function writePrefix(c: Cidr, out: Buffer, at: number): number {
  out[at] = c.prefix;
  const n = (c.prefix + 7) >> 3;
  if (c.ip.family === 6) {
    ipToBytes(networkOf(c).ip).copy(out, at + 1, 0, n);
    return at + 1 + n;
  }
  const v = Number(c.ip.value);
  for (let i = 0; i < n; i++) out[at + 1 + i] = (v >>> (24 - 8 * i)) & 0xff;
  return at + 1 + n;
}

function encodePrefixes(list: readonly Cidr[]): Buffer {
  let total = 0;
  for (const c of list) total += prefixWireLength(c);
  const out = Buffer.alloc(total);
  let at = 0;
  for (const c of list) at = writePrefix(c, out, at);
  return out;
}

function decodePrefixes(buf: Buffer, start: number, end: number, what: string, family: IPFamily = 4): Cidr[] {
  const out: Cidr[] = [];
  const invalid = (why: string): BgpError =>
    new BgpError(ErrorCode.Update, UpdateSubcode.InvalidNetworkField, `invalid ${what}: ${why}`);
  const max = family === 4 ? 32 : 128;
  let at = start;
  while (at < end) {
    const len = buf[at] as number;
    if (len > max) throw invalid(`prefix length ${len} exceeds ${max}`);
    const n = (len + 7) >> 3;
    if (at + 1 + n > end) throw invalid('prefix runs past the end of its field');
    if (family === 6) {
      // One BigInt per prefix from its hex digits, not sixteen shifts.
      const v = BigInt(`0x${buf.toString('hex', at + 1, at + 1 + n).padEnd(32, '0')}`);
      out.push({ ip: ipFromValue(6, v & maskValue(6, len)), prefix: len });
      at += 1 + n;
      continue;
    }
    let v = 0;
    for (let i = 0; i < n; i++) v |= (buf[at + 1 + i] as number) << (24 - 8 * i);
    // Bits past the prefix length carry no meaning; dropping them makes equal prefixes compare equal.
    const value = BigInt(v >>> 0) & maskValue(4, len);
    out.push({ ip: ipFromValue(4, value), prefix: len });
    at += 1 + n;
  }
  return out;
}

// ---------------------------------------------------------------- UPDATE: encoding

const WELL_KNOWN = AttrFlag.Transitive;
const OPTIONAL = AttrFlag.Optional;
const OPTIONAL_TRANSITIVE = AttrFlag.Optional | AttrFlag.Transitive;

function attr(flags: number, code: number, value: Buffer): Buffer {
  if (value.length > 255) {
    const head = Buffer.from([flags | AttrFlag.ExtendedLength, code, value.length >> 8, value.length & 0xff]);
    return Buffer.concat([head, value]);
  }
  return Buffer.concat([Buffer.from([flags & ~AttrFlag.ExtendedLength, code, value.length]), value]);
}

const SEGMENT_CODE: Record<AsPathSegment['type'], number> = {
  set: AsPathSegmentType.Set,
  sequence: AsPathSegmentType.Sequence,
  'confed-sequence': AsPathSegmentType.ConfedSequence,
  'confed-set': AsPathSegmentType.ConfedSet,
};

function encodeAsPath(segments: readonly AsPathSegment[], fourOctet: boolean): Buffer {
  const parts: Buffer[] = [];
  const width = fourOctet ? 4 : 2;
  for (const seg of segments) {
    // A segment holds at most 255 ASNs; longer runs continue in another segment of the same type.
    for (let i = 0; i < seg.asns.length; i += 255) {
      const chunk = seg.asns.slice(i, i + 255);
      const b = Buffer.alloc(2 + chunk.length * width);
      b[0] = SEGMENT_CODE[seg.type];
      b[1] = chunk.length;
      chunk.forEach((asn, j) => {
        if (fourOctet) b.writeUInt32BE(asn >>> 0, 2 + j * 4);
        else b.writeUInt16BE(asn > 0xffff ? AS_TRANS : asn, 2 + j * 2);
      });
      parts.push(b);
    }
  }
  return Buffer.concat(parts);
}

/**
 * The path attributes, after `mp` — the multiprotocol attributes, which RFC 7606 §5.1 puts first
 * so a receiver can still find the NLRI when a later attribute is malformed. NEXT_HOP is IPv4's
 * only: an IPv6 next hop travels inside MP_REACH_NLRI.
 */
export function encodePathAttributes(a: PathAttributes, ctx: CodecContext, mp: readonly Buffer[] = []): Buffer {
  const parts: Buffer[] = [...mp];
  parts.push(attr(WELL_KNOWN, AttrType.Origin, Buffer.from([a.origin])));
  parts.push(attr(WELL_KNOWN, AttrType.AsPath, encodeAsPath(a.asPath, ctx.fourOctetAs)));
  // RFC 6793 §4.2.2: towards a 2-octet speaker, 4-octet ASNs become AS_TRANS in AS_PATH and the
  // true path rides along in AS4_PATH (which carries no confederation segments).
  const as4Path = a.asPath.filter((s) => s.type === 'sequence' || s.type === 'set');
  const needsAs4 = !ctx.fourOctetAs && as4Path.some((s) => s.asns.some((n) => n > 0xffff));
  if (a.nextHop && a.nextHop.family === 4) parts.push(attr(WELL_KNOWN, AttrType.NextHop, ipToBytes(a.nextHop)));
  if (a.med !== undefined) parts.push(attr(OPTIONAL, AttrType.Med, u32(a.med)));
  if (a.localPref !== undefined) parts.push(attr(WELL_KNOWN, AttrType.LocalPref, u32(a.localPref)));
  if (a.atomicAggregate) parts.push(attr(WELL_KNOWN, AttrType.AtomicAggregate, Buffer.alloc(0)));
  if (a.aggregator) {
    const asn = ctx.fourOctetAs ? u32(a.aggregator.asn) : u16(a.aggregator.asn > 0xffff ? AS_TRANS : a.aggregator.asn);
    parts.push(attr(OPTIONAL_TRANSITIVE, AttrType.Aggregator, Buffer.concat([asn, ipToBytes(a.aggregator.address)])));
  }
  if (a.communities && a.communities.length > 0) {
    parts.push(attr(OPTIONAL_TRANSITIVE, AttrType.Communities, Buffer.concat(a.communities.map(u32))));
  }
  if (a.originatorId) parts.push(attr(OPTIONAL, AttrType.OriginatorId, ipToBytes(a.originatorId)));
  if (a.clusterList && a.clusterList.length > 0) {
    parts.push(attr(OPTIONAL, AttrType.ClusterList, Buffer.concat(a.clusterList.map(ipToBytes))));
  }
  if (needsAs4) parts.push(attr(OPTIONAL_TRANSITIVE, AttrType.As4Path, encodeAsPath(as4Path, true)));
  for (const u of a.unknown ?? []) parts.push(attr(u.flags | AttrFlag.Partial, u.code, u.value));
  return Buffer.concat(parts);
}

/** MP_REACH_NLRI for IPv6 unicast: 16 bytes of next hop, or 32 with a link-local one (RFC 2545 §3). */
function mpReachIpv6(nextHop: IP, linkLocal: IP | undefined, nlri: Buffer): Buffer {
  const { afi, safi } = afiSafiOf('ipv6');
  const nh = linkLocal ? Buffer.concat([ipToBytes(nextHop), ipToBytes(linkLocal)]) : ipToBytes(nextHop);
  // The zero after the next hop is RFC 4760's reserved octet (once RFC 2858's SNPA count).
  return attr(OPTIONAL, AttrType.MpReachNlri, Buffer.concat([Buffer.from([afi >> 8, afi & 0xff, safi, nh.length]), nh, Buffer.from([0]), nlri]));
}

function mpUnreach(family: AddressFamily, withdrawn: Buffer): Buffer {
  const { afi, safi } = afiSafiOf(family);
  return attr(OPTIONAL, AttrType.MpUnreachNlri, Buffer.concat([Buffer.from([afi >> 8, afi & 0xff, safi]), withdrawn]));
}

export interface UpdateParts {
  /** Either family: IPv4 prefixes go in the Withdrawn Routes field, IPv6 ones in MP_UNREACH_NLRI. */
  withdrawn: readonly Cidr[];
  attributes: PathAttributes | undefined;
  /** IPv4 prefixes, for the NLRI field. */
  nlri: readonly Cidr[];
  ipv6?: { nextHop: IP; linkLocalNextHop?: IP | undefined; nlri: readonly Cidr[] } | undefined;
  /** An IPv6 End-of-RIB is an empty MP_UNREACH_NLRI; IPv4's is the empty UPDATE. */
  endOfRib?: AddressFamily | undefined;
}

export function encodeUpdate(u: UpdateParts, ctx: CodecContext = DEFAULT_CONTEXT): Buffer {
  const nlri6 = u.ipv6?.nlri ?? [];
  const announces = u.nlri.length > 0 || nlri6.length > 0;
  if (announces && !u.attributes) throw new Error('an UPDATE with NLRI needs path attributes');
  if (u.nlri.some((c) => c.ip.family !== 4)) throw new Error('IPv6 prefixes go in MP_REACH_NLRI (`ipv6`), not the NLRI field');
  if (nlri6.some((c) => c.ip.family !== 6) || (u.ipv6 && u.ipv6.nextHop.family !== 6)) throw new Error('`ipv6` takes IPv6 prefixes and an IPv6 next hop');
  const withdrawn6 = u.withdrawn.filter((c) => c.ip.family === 6);
  const mp: Buffer[] = [];
  if (u.ipv6 && nlri6.length > 0) mp.push(mpReachIpv6(u.ipv6.nextHop, u.ipv6.linkLocalNextHop, encodePrefixes(nlri6)));
  if (withdrawn6.length > 0 || u.endOfRib === 'ipv6') mp.push(mpUnreach('ipv6', encodePrefixes(withdrawn6)));
  // RFC 4760 §3: an UPDATE announcing only multiprotocol NLRI carries no NEXT_HOP.
  const attrs = announces && u.attributes
    ? encodePathAttributes(u.nlri.length > 0 ? u.attributes : { ...u.attributes, nextHop: undefined }, ctx, mp)
    : Buffer.concat(mp);
  const withdrawn = encodePrefixes(u.withdrawn.filter((c) => c.ip.family === 4));
  return frame(MessageType.Update, Buffer.concat([u16(withdrawn.length), withdrawn, u16(attrs.length), attrs, encodePrefixes(u.nlri)]));
}

/** The End-of-RIB marker for a family (RFC 4724 §2). */
export function encodeEndOfRib(family: AddressFamily = 'ipv4'): Buffer {
  return encodeUpdate({ withdrawn: [], attributes: undefined, nlri: [], endOfRib: family });
}

export function isEndOfRib(u: UpdateMessage): boolean {
  return u.endOfRib !== undefined;
}

/**
 * The UPDATE's announcements, one per family, each with the attributes its routes take: IPv6
 * prefixes get MP_REACH_NLRI's next hop in place of NEXT_HOP.
 */
export function announcements(u: UpdateMessage): { family: AddressFamily; attributes: PathAttributes; nlri: Cidr[] }[] {
  const a = u.attributes;
  if (!a) return [];
  const out: { family: AddressFamily; attributes: PathAttributes; nlri: Cidr[] }[] = [];
  if (u.nlri.length > 0) out.push({ family: 'ipv4', attributes: a, nlri: u.nlri });
  if (u.ipv6 && u.ipv6.nlri.length > 0) out.push({ family: 'ipv6', attributes: { ...a, nextHop: u.ipv6.nextHop }, nlri: u.ipv6.nlri });
  return out;
}

/** Room for prefixes in one UPDATE after the header, the two length fields and the attributes. */
const UPDATE_FIXED = HEADER_LENGTH + 4;
/** An extended-length attribute header, AFI, SAFI, next hop length, a global IPv6 next hop, reserved. */
const MP_REACH_IPV6_FIXED = 4 + 4 + 16 + 1;
/** An extended-length attribute header, AFI and SAFI. */
const MP_UNREACH_FIXED = 4 + 3;

/** Cuts prefixes into runs whose encoding fits `room` bytes each, in order. */
function chunkByWireLength(prefixes: readonly Cidr[], room: number): Cidr[][] {
  const out: Cidr[][] = [];
  let batch: Cidr[] = [];
  let used = 0;
  for (const p of prefixes) {
    const n = prefixWireLength(p);
    if (used + n > room && batch.length > 0) {
      out.push(batch);
      batch = [];
      used = 0;
    }
    batch.push(p);
    used += n;
  }
  if (batch.length > 0) out.push(batch);
  return out;
}

/**
 * Packs withdrawals, or announcements sharing one set of attributes, into as few UPDATEs as the
 * 4096-byte limit allows: the attributes are encoded once and every message carries them.
 * Withdrawals of both families may be mixed; each family gets its own messages.
 */
export function packWithdrawals(prefixes: readonly Cidr[]): Buffer[] {
  const v4 = prefixes.filter((p) => p.ip.family === 4);
  const v6 = prefixes.filter((p) => p.ip.family === 6);
  return [
    ...chunkByWireLength(v4, MAX_MESSAGE_LENGTH - UPDATE_FIXED).map((withdrawn) => encodeUpdate({ withdrawn, attributes: undefined, nlri: [] })),
    ...chunkByWireLength(v6, MAX_MESSAGE_LENGTH - UPDATE_FIXED - MP_UNREACH_FIXED).map((withdrawn) => encodeUpdate({ withdrawn, attributes: undefined, nlri: [] })),
  ];
}

/**
 * Announcements of one family: the next hop in `attributes` says which (IPv4 prefixes with an
 * IPv4 NEXT_HOP in the NLRI field, IPv6 prefixes with an IPv6 next hop in MP_REACH_NLRI).
 */
export function packAnnouncements(attributes: PathAttributes, prefixes: readonly Cidr[], ctx: CodecContext): Buffer[] {
  const nh = attributes.nextHop;
  const family = nh?.family ?? 4;
  if (prefixes.some((p) => p.ip.family !== family)) throw new Error(`IPv${family === 4 ? 6 : 4} prefixes cannot share an IPv${family} next hop`);
  if (nh && nh.family === 6) {
    const attrs = encodePathAttributes(attributes, ctx);
    const room = MAX_MESSAGE_LENGTH - UPDATE_FIXED - attrs.length - MP_REACH_IPV6_FIXED;
    if (room < 17) throw new Error('path attributes leave no room for NLRI in a 4096-byte UPDATE');
    return chunkByWireLength(prefixes, room).map((chunk) => {
      const mp = mpReachIpv6(nh, undefined, encodePrefixes(chunk));
      return frame(MessageType.Update, Buffer.concat([u16(0), u16(mp.length + attrs.length), mp, attrs]));
    });
  }
  const attrs = encodePathAttributes(attributes, ctx);
  const room = MAX_MESSAGE_LENGTH - UPDATE_FIXED - attrs.length;
  if (room < 5) throw new Error('path attributes leave no room for NLRI in a 4096-byte UPDATE');
  return chunkByWireLength(prefixes, room).map((chunk) =>
    frame(MessageType.Update, Buffer.concat([u16(0), u16(attrs.length), attrs, encodePrefixes(chunk)])));
}

// ---------------------------------------------------------------- UPDATE: decoding

function updateError(subcode: number, message: string, data?: Buffer): BgpError {
  return new BgpError(ErrorCode.Update, subcode, message, data);
}

interface AttrDef {
  name: string;
  /** Expected Optional/Transitive bits for a recognized attribute. */
  flags: number;
  /** Fixed length, if the attribute has one. */
  length?: number;
}

const KNOWN: Record<number, AttrDef> = {
  [AttrType.Origin]: { name: 'ORIGIN', flags: WELL_KNOWN, length: 1 },
  [AttrType.AsPath]: { name: 'AS_PATH', flags: WELL_KNOWN },
  [AttrType.NextHop]: { name: 'NEXT_HOP', flags: WELL_KNOWN, length: 4 },
  [AttrType.Med]: { name: 'MULTI_EXIT_DISC', flags: OPTIONAL, length: 4 },
  [AttrType.LocalPref]: { name: 'LOCAL_PREF', flags: WELL_KNOWN, length: 4 },
  [AttrType.AtomicAggregate]: { name: 'ATOMIC_AGGREGATE', flags: WELL_KNOWN, length: 0 },
  [AttrType.Aggregator]: { name: 'AGGREGATOR', flags: OPTIONAL_TRANSITIVE },
  [AttrType.Communities]: { name: 'COMMUNITIES', flags: OPTIONAL_TRANSITIVE },
  [AttrType.OriginatorId]: { name: 'ORIGINATOR_ID', flags: OPTIONAL, length: 4 },
  [AttrType.ClusterList]: { name: 'CLUSTER_LIST', flags: OPTIONAL },
  [AttrType.MpReachNlri]: { name: 'MP_REACH_NLRI', flags: OPTIONAL },
  [AttrType.MpUnreachNlri]: { name: 'MP_UNREACH_NLRI', flags: OPTIONAL },
};

/** The segments, or why the path is malformed (RFC 7606 §7.2 decides what that costs). */
function decodeAsPath(value: Buffer, fourOctet: boolean): { ok: true; segments: AsPathSegment[] } | { ok: false; why: string } {
  const width = fourOctet ? 4 : 2;
  const segments: AsPathSegment[] = [];
  let at = 0;
  while (at < value.length) {
    if (at + 2 > value.length) return { ok: false, why: 'truncated segment header' };
    const t = value[at] as number;
    const count = value[at + 1] as number;
    const type = t === 1 ? 'set' : t === 2 ? 'sequence' : t === 3 ? 'confed-sequence' : t === 4 ? 'confed-set' : undefined;
    if (!type) return { ok: false, why: `segment type ${t}` };
    if (count === 0) return { ok: false, why: 'empty segment' };
    if (at + 2 + count * width > value.length) return { ok: false, why: 'segment runs past the attribute' };
    const asns: number[] = [];
    for (let i = 0; i < count; i++) {
      const p = at + 2 + i * width;
      asns.push(fourOctet ? value.readUInt32BE(p) : value.readUInt16BE(p));
    }
    segments.push({ type, asns });
    at += 2 + count * width;
  }
  return { ok: true, segments };
}

/**
 * Why an address cannot be a route's next hop, or undefined when it can. Shared by the decoder
 * (such a route is treat-as-withdraw) and by callers checking a next hop before announcing.
 */
export function nextHopProblem(ip: IP): string | undefined {
  if (ip.family === 4) {
    const first = Number(ip.value) >>> 24;
    // 0.0.0.0/8, multicast, class E and broadcast can never be a forwarding address.
    if (first === 0) return 'in 0.0.0.0/8';
    return first >= 224 ? 'multicast or reserved' : undefined;
  }
  const v = ip.value;
  if (v === 0n) return 'the unspecified address';
  if (v === 1n) return 'the loopback address';
  if (v >> 120n === 0xffn) return 'multicast';
  // A link-local next hop means nothing without the interface it was learned on, which a route
  // event does not carry: only a global one (RFC 2545's first) can be installed.
  if (v >> 118n === 0x3fan) return 'link-local, and a route needs a global IPv6 next hop';
  if (v >> 32n === 0xffffn) return 'an IPv4-mapped address';
  return undefined;
}

/**
 * What RFC 7606 does with each malformed attribute while the UPDATE is parsed. Session-reset
 * errors are thrown at once (the strongest approach wins anyway, §3 f); the weaker ones are
 * collected, with the attribute's bytes for a NOTIFICATION should §5.2 make them fatal.
 */
class UpdateProblems {
  readonly errors: UpdateAttributeError[] = [];
  private firstWithdraw: { subcode: number; message: string; data: Buffer | undefined } | undefined;

  discard(subcode: number, message: string): void {
    this.errors.push({ action: 'attribute-discard', subcode, message });
  }

  withdraw(subcode: number, message: string, data?: Buffer): void {
    this.errors.push({ action: 'treat-as-withdraw', subcode, message });
    this.firstWithdraw ??= { subcode, message, data };
  }

  get withdrawing(): boolean {
    return this.firstWithdraw !== undefined;
  }

  /** The treat-as-withdraw error as a session reset (RFC 7606 §5.2: no NLRI to withdraw). */
  asSessionReset(): BgpError | undefined {
    const w = this.firstWithdraw;
    return w && updateError(w.subcode, `${w.message}, in an UPDATE without reachable NLRI (RFC 7606 §5.2)`, w.data);
  }
}

/** RFC 7606 §7: the attributes whose malformation cannot change route selection are discarded. */
const DISCARDABLE = new Set<number>([AttrType.AtomicAggregate, AttrType.Aggregator]);

function decodeUpdate(buf: Buffer, ctx: CodecContext): UpdateMessage {
  const end = buf.length;
  const malformedList = (why: string): BgpError => updateError(UpdateSubcode.MalformedAttributeList, `malformed attribute list: ${why}`);
  let at = HEADER_LENGTH;
  const wlen = buf.readUInt16BE(at);
  at += 2;
  // Without trustworthy field lengths the NLRI cannot be found, so nothing can be treated as
  // withdrawn: these stay session resets (RFC 7606 §3 j), as do syntax errors in the prefixes.
  if (at + wlen + 2 > end) throw malformedList(`withdrawn routes length ${wlen} overruns the message`);
  const withdrawn = decodePrefixes(buf, at, at + wlen, 'withdrawn routes');
  at += wlen;
  const alen = buf.readUInt16BE(at);
  at += 2;
  if (at + alen > end) throw malformedList(`total path attribute length ${alen} overruns the message`);
  const attrEnd = at + alen;
  const nlri = decodePrefixes(buf, attrEnd, end, 'NLRI');

  const problems = new UpdateProblems();
  const seen = new Set<number>();
  let origin: Origin | undefined;
  let asPath: AsPathSegment[] | undefined;
  const out: Partial<PathAttributes> = {};
  const unknown: RawAttribute[] = [];
  let mpNextHop: IP | undefined;
  let ipv6: Ipv6Reach | undefined;
  /** The family of an MP_UNREACH_NLRI that withdrew nothing: End-of-RIB, if it came alone. */
  let emptyUnreach: AddressFamily | undefined;
  let as4Path: AsPathSegment[] | undefined;
  /** Anything but MP_UNREACH_NLRI was present (RFC 7606 §5.2). */
  let otherThanUnreach = false;

  while (at < attrEnd) {
    const start = at;
    otherThanUnreach ||= buf[at + 1] !== AttrType.MpUnreachNlri || attrEnd - at < 3;
    // RFC 7606 §4: an attribute running past the Total Attribute Length is treat-as-withdraw;
    // that length still locates the NLRI, and nothing after the break can be trusted.
    if (at + 3 > attrEnd) { problems.withdraw(UpdateSubcode.MalformedAttributeList, 'malformed attribute list: truncated attribute header'); break; }
    const flags = buf[at] as number;
    const code = buf[at + 1] as number;
    const ext = (flags & AttrFlag.ExtendedLength) !== 0;
    if (ext && at + 4 > attrEnd) { problems.withdraw(UpdateSubcode.MalformedAttributeList, 'malformed attribute list: truncated attribute header'); break; }
    const len = ext ? buf.readUInt16BE(at + 2) : (buf[at + 2] as number);
    const vstart = at + (ext ? 4 : 3);
    if (vstart + len > attrEnd) {
      problems.withdraw(UpdateSubcode.AttributeLengthError, `attribute ${code} length ${len} overruns the attribute list`, Buffer.from(buf.subarray(start, attrEnd)));
      break;
    }
    const value = buf.subarray(vstart, vstart + len);
    const whole = Buffer.from(buf.subarray(start, vstart + len));
    at = vstart + len;
    if (seen.has(code)) {
      // RFC 7606 §3 g: a second MP_(UN)REACH_NLRI leaves the NLRI in doubt; any other repeat is dropped.
      if (code === AttrType.MpReachNlri || code === AttrType.MpUnreachNlri) throw malformedList(`attribute ${code} appears twice`);
      problems.discard(UpdateSubcode.MalformedAttributeList, `attribute ${code} appears twice; the repeat is discarded`);
      continue;
    }
    seen.add(code);

    if (code === AttrType.As4Path || code === AttrType.As4Aggregator) {
      // RFC 6793 §4.1: meaningless (and discarded) between 4-octet speakers; from a 2-octet
      // speaker AS4_PATH restores the true path, and a malformed one is discarded, not fatal.
      if (code === AttrType.As4Path && !ctx.fourOctetAs) {
        const p = decodeAsPath(value, true);
        if (p.ok) as4Path = p.segments;
        else problems.discard(UpdateSubcode.MalformedAsPath, `malformed AS4_PATH: ${p.why}`);
      }
      continue;
    }
    const def = KNOWN[code];
    if (!def) {
      // RFC 7606 leaves RFC 4271's handling of an unknown well-known attribute as it was.
      if ((flags & AttrFlag.Optional) === 0) {
        throw updateError(UpdateSubcode.UnrecognizedWellKnownAttribute, `unrecognized well-known attribute ${code}`, whole);
      }
      if ((flags & AttrFlag.Transitive) !== 0) unknown.push({ flags: flags & ~AttrFlag.ExtendedLength, code, value: Buffer.from(value) });
      continue;
    }
    const multiprotocol = code === AttrType.MpReachNlri || code === AttrType.MpUnreachNlri;
    const otBits = flags & (AttrFlag.Optional | AttrFlag.Transitive);
    const partialOnWellKnown = (flags & AttrFlag.Optional) === 0 && (flags & AttrFlag.Partial) !== 0;
    if (otBits !== def.flags || partialOnWellKnown) {
      // RFC 7606 §3 c. The MP attributes are still read below: their NLRI are what gets withdrawn.
      problems.withdraw(UpdateSubcode.AttributeFlagsError, `${def.name} has flags 0x${flags.toString(16)}`, whole);
      if (!multiprotocol) continue;
    }
    if (def.length !== undefined && len !== def.length) {
      const why = `${def.name} has length ${len}, expected ${def.length}`;
      if (DISCARDABLE.has(code)) problems.discard(UpdateSubcode.AttributeLengthError, why);
      else problems.withdraw(UpdateSubcode.AttributeLengthError, why, whole);
      continue;
    }
    switch (code) {
      case AttrType.Origin: {
        const o = value[0] as number;
        if (o > 2) problems.withdraw(UpdateSubcode.InvalidOrigin, `invalid ORIGIN ${o}`, whole);
        else origin = o as Origin;
        break;
      }
      case AttrType.AsPath: {
        const p = decodeAsPath(value, ctx.fourOctetAs);
        if (p.ok) asPath = p.segments;
        else problems.withdraw(UpdateSubcode.MalformedAsPath, `malformed AS_PATH: ${p.why}`, whole);
        break;
      }
      case AttrType.NextHop: {
        const nh = ipFromBytes(value);
        // RFC 4271 §6.3 already says a semantically wrong next hop is logged and the route ignored.
        if (nextHopProblem(nh)) problems.withdraw(UpdateSubcode.InvalidNextHop, `invalid NEXT_HOP ${formatIP(nh)}`, whole);
        else out.nextHop = nh;
        break;
      }
      case AttrType.Med: out.med = value.readUInt32BE(0); break;
      case AttrType.LocalPref: out.localPref = value.readUInt32BE(0); break;
      case AttrType.AtomicAggregate: out.atomicAggregate = true; break;
      case AttrType.Aggregator: {
        const w = ctx.fourOctetAs ? 4 : 2;
        if (len !== w + 4) { problems.discard(UpdateSubcode.AttributeLengthError, `AGGREGATOR has length ${len}, expected ${w + 4}`); break; }
        out.aggregator = { asn: w === 4 ? value.readUInt32BE(0) : value.readUInt16BE(0), address: ipFromBytes(value.subarray(w)) };
        break;
      }
      case AttrType.Communities:
        if (len === 0 || len % 4 !== 0) { problems.withdraw(UpdateSubcode.OptionalAttributeError, `COMMUNITIES length ${len} is not a non-zero multiple of 4`, whole); break; }
        out.communities = [];
        for (let i = 0; i < len; i += 4) out.communities.push(value.readUInt32BE(i));
        break;
      case AttrType.OriginatorId: out.originatorId = ipFromBytes(value); break;
      case AttrType.ClusterList:
        if (len === 0 || len % 4 !== 0) { problems.withdraw(UpdateSubcode.OptionalAttributeError, `CLUSTER_LIST length ${len} is not a non-zero multiple of 4`, whole); break; }
        out.clusterList = [];
        for (let i = 0; i < len; i += 4) out.clusterList.push(ipFromBytes(value.subarray(i, i + 4)));
        break;
      case AttrType.MpReachNlri: {
        // RFC 4760: IPv4 and IPv6 unicast are ours; other families are ignored, as is their
        // End-of-RIB. A next hop length that is wrong for the family leaves the NLRI unlocatable,
        // so it stays a session reset (RFC 7606 §7.11), as does NLRI that cannot be read.
        const bad = (why: string): BgpError => updateError(UpdateSubcode.OptionalAttributeError, `malformed MP_REACH_NLRI: ${why}`, whole);
        if (len < 5) throw bad(`length ${len} is shorter than its fixed fields`);
        const afi = value.readUInt16BE(0);
        const safi = value[2] as number;
        const nhLen = value[3] as number;
        if (4 + nhLen + 1 > len) throw bad(`next hop length ${nhLen} runs past the attribute`);
        const family = familyOfAfiSafi(afi, safi);
        if (family === 'ipv4') {
          if (nhLen !== 4) throw bad(`IPv4 next hop length ${nhLen}, expected 4`);
          mpNextHop = ipFromBytes(value.subarray(4, 8));
          nlri.push(...decodePrefixes(value, 4 + nhLen + 1, len, 'MP_REACH_NLRI'));
        } else if (family === 'ipv6') {
          // RFC 2545 §3: the global address, optionally followed by a link-local one.
          if (nhLen !== 16 && nhLen !== 32) throw bad(`IPv6 next hop length ${nhLen}, expected 16 or 32`);
          const nextHop = ipFromBytes(value.subarray(4, 20));
          const second = nhLen === 32 ? ipFromBytes(value.subarray(20, 36)) : undefined;
          const prefixes = decodePrefixes(value, 4 + nhLen + 1, len, 'MP_REACH_NLRI', 6);
          const why = nextHopProblem(nextHop);
          if (why) problems.withdraw(UpdateSubcode.InvalidNextHop, `invalid IPv6 next hop ${formatIP(nextHop)}: ${why}`, whole);
          ipv6 = { nextHop, nlri: prefixes };
          if (second && second.value >> 118n === 0x3fan) ipv6.linkLocalNextHop = second;
        }
        break;
      }
      case AttrType.MpUnreachNlri: {
        if (len < 3) throw updateError(UpdateSubcode.OptionalAttributeError, `malformed MP_UNREACH_NLRI: length ${len} is shorter than AFI and SAFI`, whole);
        const family = familyOfAfiSafi(value.readUInt16BE(0), value[2] as number);
        if (!family) break;
        const gone = decodePrefixes(value, 3, len, 'MP_UNREACH_NLRI', family === 'ipv4' ? 4 : 6);
        withdrawn.push(...gone);
        if (gone.length === 0) emptyUnreach = family;
        break;
      }
    }
  }

  const errors = problems.errors.length > 0 ? { errors: problems.errors } : {};
  const nlri6 = ipv6?.nlri ?? [];
  if (nlri.length === 0 && nlri6.length === 0) {
    // RFC 7606 §5.2: attributes but nothing announced means the NLRI may not have been found.
    const fatal = otherThanUnreach ? problems.asSessionReset() : undefined;
    if (fatal) throw fatal;
    // RFC 4724 §2: IPv4's marker is the empty UPDATE, another family's an empty MP_UNREACH_NLRI alone.
    const bare = problems.errors.length === 0 && withdrawn.length === 0;
    const endOfRib = bare && alen === 0 ? 'ipv4' : bare && emptyUnreach && seen.size === 1 ? emptyUnreach : undefined;
    return { type: 'update', withdrawn, attributes: undefined, nlri, ...(endOfRib && { endOfRib }), ...errors };
  }
  // RFC 7606 §3 d: a missing well-known mandatory attribute withdraws instead of resetting.
  const missing = (code: number, name: string): void =>
    problems.withdraw(UpdateSubcode.MissingWellKnownAttribute, `missing well-known attribute ${name}`, Buffer.from([code]));
  if (!seen.has(AttrType.Origin)) missing(AttrType.Origin, 'ORIGIN');
  if (!seen.has(AttrType.AsPath)) missing(AttrType.AsPath, 'AS_PATH');
  const hasPlainNlri = attrEnd !== end;
  // RFC 4760 §3: NEXT_HOP in an UPDATE announcing only multiprotocol NLRI is ignored (though a
  // malformed one still withdraws above: nothing in the UPDATE is trusted more than its parts).
  if (nlri.length === 0) delete out.nextHop;
  else if (!hasPlainNlri && mpNextHop !== undefined) out.nextHop = mpNextHop;
  else if (!seen.has(AttrType.NextHop)) missing(AttrType.NextHop, 'NEXT_HOP');
  if (problems.withdrawing || origin === undefined || asPath === undefined || (nlri.length > 0 && out.nextHop === undefined)) {
    return { type: 'update', withdrawn: [...withdrawn, ...nlri, ...nlri6], attributes: undefined, nlri: [], errors: problems.errors };
  }
  if (as4Path) asPath = mergeAs4Path(asPath, as4Path);
  const attributes: PathAttributes = { ...out, origin, asPath };
  if (unknown.length > 0) attributes.unknown = unknown;
  return { type: 'update', withdrawn, attributes, nlri, ...(ipv6 && nlri6.length > 0 && { ipv6 }), ...errors };
}

/** Path length as the decision process counts it: a set is one hop, confederation segments none. */
function hops(path: readonly AsPathSegment[]): number {
  let n = 0;
  for (const s of path) n += s.type === 'sequence' ? s.asns.length : s.type === 'set' ? 1 : 0;
  return n;
}

/**
 * RFC 6793 §4.2.3: the leading hops of AS_PATH that AS4_PATH lacks (added by 2-octet speakers
 * after the path left 4-octet country) followed by AS4_PATH. A longer AS4_PATH is ignored.
 */
export function mergeAs4Path(asPath: readonly AsPathSegment[], as4Path: readonly AsPathSegment[]): AsPathSegment[] {
  let keep = hops(asPath) - hops(as4Path);
  if (keep < 0) return [...asPath];
  const head: AsPathSegment[] = [];
  for (const seg of asPath) {
    if (keep <= 0) break;
    if (seg.type === 'sequence') {
      const take = seg.asns.slice(0, keep);
      head.push({ type: 'sequence', asns: take });
      keep -= take.length;
    } else if (seg.type === 'set') {
      head.push(seg);
      keep -= 1;
    } else {
      head.push(seg);
    }
  }
  return [...head, ...as4Path];
}

// ---------------------------------------------------------------- helpers for callers

export function capabilitiesOf<K extends Capability['kind']>(open: OpenMessage, kind: K): Extract<Capability, { kind: K }>[] {
  return open.capabilities.filter((c): c is Extract<Capability, { kind: K }> => c.kind === kind);
}
