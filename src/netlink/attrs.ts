// Netlink attributes (struct nlattr): a 4-byte header {len u16, type u16} followed by the value,
// padded to 4 bytes. Values are in host byte order (little endian on every machine weft targets)
// except where the kernel says otherwise (ports are big endian). Nesting is an attribute whose
// value is itself a list of attributes.

import { WeftError, CniCode } from '../errors.js';
import { ipToBytes, ipFromBytes, type IP } from '../net/ip.js';
import { NLA_F_NESTED, NLA_TYPE_MASK } from './constants.js';

export const NLA_HDRLEN = 4;

/**
 * A zero-filled buffer for the small structs and attribute values every request is made of.
 * Buffer.alloc gives each its own ArrayBuffer; allocUnsafe slices Node's shared pool, which is
 * what keeps a batch of thousands of requests from spending most of its time allocating and
 * collecting them.
 */
export function smallBuffer(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  zeroFill(b, 0, n);
  return b;
}

/** Zeroes buf[start, end) with the typed array's own fill (Buffer#fill adds argument checks that cost more than the work at this size). */
export function zeroFill(buf: Uint8Array, start: number, end: number): void {
  Uint8Array.prototype.fill.call(buf, 0, start, end);
}
export const align4 = (n: number): number => (n + 3) & ~3;

/** An attribute to encode: raw bytes, or children (a nest). */
export interface Attr {
  readonly type: number;
  readonly value: Uint8Array | readonly Attr[];
  /** Set NLA_F_NESTED on a nest; some kernel paths (bridge port PROTINFO) require it. */
  readonly nestedFlag?: boolean;
}

export function encodedLength(attrs: readonly Attr[]): number {
  let n = 0;
  for (const a of attrs) n += align4(NLA_HDRLEN + valueLength(a));
  return n;
}

function valueLength(a: Attr): number {
  return a.value instanceof Uint8Array ? a.value.length : encodedLength(a.value as readonly Attr[]);
}

/** Writes attrs at offset (whose padding bytes must already be zero); returns the end offset. */
export function writeAttrs(attrs: readonly Attr[], buf: Buffer, offset: number): number {
  for (const a of attrs) {
    const len = NLA_HDRLEN + valueLength(a);
    if (len > 0xffff) throw new WeftError(CniCode.Netlink, `netlink attribute ${a.type} is too long (${len} bytes)`);
    buf.writeUInt16LE(len, offset);
    buf.writeUInt16LE(a.type | (a.nestedFlag ? NLA_F_NESTED : 0), offset + 2);
    if (a.value instanceof Uint8Array) buf.set(a.value, offset + NLA_HDRLEN);
    else writeAttrs(a.value as readonly Attr[], buf, offset + NLA_HDRLEN);
    offset += align4(len); // padding bytes stay zero (Buffer.alloc)
  }
  return offset;
}

export function encodeAttrs(attrs: readonly Attr[]): Buffer {
  const buf = Buffer.alloc(encodedLength(attrs));
  writeAttrs(attrs, buf, 0);
  return buf;
}

// ---- constructors for common value types ----

export const nla = {
  bytes: (type: number, value: Uint8Array): Attr => ({ type, value }),
  u8: (type: number, n: number): Attr => ({ type, value: Uint8Array.of(n & 0xff) }),
  u16: (type: number, n: number): Attr => {
    const b = Buffer.allocUnsafe(2);
    b.writeUInt16LE(n);
    return { type, value: b };
  },
  /** A 16-bit value in network byte order (UDP ports). */
  be16: (type: number, n: number): Attr => {
    const b = Buffer.allocUnsafe(2);
    b.writeUInt16BE(n);
    return { type, value: b };
  },
  /** A 32-bit value in network byte order (every nfnetlink integer). */
  be32: (type: number, n: number): Attr => {
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32BE(n >>> 0);
    return { type, value: b };
  },
  u32: (type: number, n: number): Attr => {
    const b = Buffer.allocUnsafe(4); // every byte is written below
    b.writeUInt32LE(n >>> 0);
    return { type, value: b };
  },
  /** A NUL-terminated string, as the kernel expects for names and kinds. */
  str: (type: number, s: string): Attr => ({ type, value: Buffer.from(s + '\0', 'utf8') }),
  ip: (type: number, ip: IP): Attr => ({ type, value: ipToBytes(ip) }),
  nest: (type: number, children: readonly Attr[], nestedFlag = false): Attr =>
    nestedFlag ? { type, value: children, nestedFlag } : { type, value: children },
};

// ---- decoding ----

export interface RawAttr {
  readonly type: number;
  readonly nested: boolean;
  readonly data: Buffer;
}

export function decodeAttrs(buf: Buffer): RawAttr[] {
  const out: RawAttr[] = [];
  let off = 0;
  while (off + NLA_HDRLEN <= buf.length) {
    const len = buf.readUInt16LE(off);
    const rawType = buf.readUInt16LE(off + 2);
    if (len < NLA_HDRLEN || off + len > buf.length) {
      throw new WeftError(CniCode.Netlink, `malformed netlink attribute at offset ${off}: length ${len} with ${buf.length - off} bytes left`);
    }
    out.push({ type: rawType & NLA_TYPE_MASK, nested: (rawType & NLA_F_NESTED) !== 0, data: buf.subarray(off + NLA_HDRLEN, off + len) });
    off += align4(len);
  }
  return out;
}

/** Typed read access to a decoded attribute list (first occurrence wins for get*). */
export class AttrSet {
  readonly list: readonly RawAttr[];

  constructor(bufOrList: Buffer | readonly RawAttr[]) {
    this.list = Buffer.isBuffer(bufOrList) ? decodeAttrs(bufOrList) : bufOrList;
  }

  has(type: number): boolean {
    return this.list.some((a) => a.type === type);
  }

  bytes(type: number): Buffer | undefined {
    return this.list.find((a) => a.type === type)?.data;
  }

  all(type: number): Buffer[] {
    return this.list.filter((a) => a.type === type).map((a) => a.data);
  }

  u8(type: number): number | undefined {
    const b = this.bytes(type);
    return b && b.length >= 1 ? b.readUInt8(0) : undefined;
  }

  u16(type: number): number | undefined {
    const b = this.bytes(type);
    return b && b.length >= 2 ? b.readUInt16LE(0) : undefined;
  }

  be16(type: number): number | undefined {
    const b = this.bytes(type);
    return b && b.length >= 2 ? b.readUInt16BE(0) : undefined;
  }

  u32(type: number): number | undefined {
    const b = this.bytes(type);
    return b && b.length >= 4 ? b.readUInt32LE(0) : undefined;
  }

  be32(type: number): number | undefined {
    const b = this.bytes(type);
    return b && b.length >= 4 ? b.readUInt32BE(0) : undefined;
  }

  /** A big-endian u64 (nfnetlink counters, timestamps). */
  be64(type: number): bigint | undefined {
    const b = this.bytes(type);
    return b && b.length >= 8 ? b.readBigUInt64BE(0) : undefined;
  }

  i32(type: number): number | undefined {
    const b = this.bytes(type);
    return b && b.length >= 4 ? b.readInt32LE(0) : undefined;
  }

  str(type: number): string | undefined {
    const b = this.bytes(type);
    if (!b) return undefined;
    const nul = b.indexOf(0);
    return b.toString('utf8', 0, nul < 0 ? b.length : nul);
  }

  ip(type: number): IP | undefined {
    const b = this.bytes(type);
    return b && (b.length === 4 || b.length === 16) ? ipFromBytes(b) : undefined;
  }

  nested(type: number): AttrSet | undefined {
    const b = this.bytes(type);
    return b ? new AttrSet(b) : undefined;
  }
}

export function formatMac(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}

export function parseMac(s: string): Buffer {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(s)) {
    throw new WeftError(CniCode.InvalidNetworkConfig, `invalid MAC address ${JSON.stringify(s)} (expected six colon-separated hex bytes, e.g. 02:42:ac:11:00:02)`);
  }
  return Buffer.from(s.replaceAll(':', ''), 'hex');
}
