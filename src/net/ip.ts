// Address math for IPv4 and IPv6. Values are bigints so one set of functions serves both
// families; parse functions are the only constructors, so every IP in the program is valid.

declare const ipBrand: unique symbol;

export type IPFamily = 4 | 6;

export interface IP {
  readonly family: IPFamily;
  /** The address as an unsigned integer (32 or 128 bits). */
  readonly value: bigint;
  readonly [ipBrand]: true;
}

export interface Cidr {
  /** The address as written (may have host bits set, e.g. 10.244.3.1/24). */
  readonly ip: IP;
  readonly prefix: number;
}

export class AddressError extends Error {
  override readonly name = 'AddressError';
}

const BITS: Record<IPFamily, number> = { 4: 32, 6: 128 };

export function bitsOf(family: IPFamily): number {
  return BITS[family];
}

function make(family: IPFamily, value: bigint): IP {
  return { family, value } as IP;
}

export function ipFromValue(family: IPFamily, value: bigint): IP {
  const max = (1n << BigInt(BITS[family])) - 1n;
  if (value < 0n || value > max) throw new AddressError(`address value out of range for IPv${family}`);
  return make(family, value);
}

function parseV4(s: string): bigint | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  // Accumulated as a number (32 bits fit exactly): one BigInt per address, not four shifts.
  let v = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    v = v * 256 + n;
  }
  return BigInt(v);
}

function parseV6(s: string): bigint | undefined {
  if (s.length === 0 || s.length > 45) return undefined;
  let head = s;
  let tailV4: bigint | undefined;
  // A trailing dotted quad (::ffff:1.2.3.4) stands for the last two groups.
  const lastColon = s.lastIndexOf(':');
  if (s.includes('.')) {
    tailV4 = parseV4(s.slice(lastColon + 1));
    if (tailV4 === undefined) return undefined;
    head = s.slice(0, lastColon + 1) + '0:0';
  }
  const halves = head.split('::');
  if (halves.length > 2) return undefined;
  const parseGroups = (h: string): number[] | undefined => {
    if (h === '') return [];
    const out: number[] = [];
    for (const g of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const left = parseGroups(halves[0] ?? '');
  const right = halves.length === 2 ? parseGroups(halves[1] ?? '') : [];
  if (!left || !right) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const missing = 8 - left.length - right.length;
    if (missing < 1) return undefined;
    groups = [...left, ...new Array<number>(missing).fill(0), ...right];
  } else {
    groups = left;
  }
  if (groups.length !== 8) return undefined;
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(g);
  if (tailV4 !== undefined) v = (v & ~0xffffffffn) | tailV4;
  return v;
}

export function tryParseIP(s: string): IP | undefined {
  if (typeof s !== 'string') return undefined;
  if (s.includes(':')) {
    const v = parseV6(s);
    return v === undefined ? undefined : make(6, v);
  }
  const v = parseV4(s);
  return v === undefined ? undefined : make(4, v);
}

export function parseIP(s: string): IP {
  const ip = tryParseIP(s);
  if (!ip) throw new AddressError(`invalid IP address ${JSON.stringify(s)}`);
  return ip;
}

export function parseIPv4(s: string): IP {
  const ip = parseIP(s);
  if (ip.family !== 4) throw new AddressError(`expected an IPv4 address, got ${JSON.stringify(s)}`);
  return ip;
}

export function formatIP(ip: IP): string {
  if (ip.family === 4) {
    const v = Number(ip.value);
    return `${(v >>> 24) & 255}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
  }
  // RFC 5952 §5: an IPv4-mapped address keeps its IPv4 part dotted (::ffff:1.2.3.4).
  if (ip.value >> 32n === 0xffffn) return `::ffff:${formatIP(make(4, ip.value & 0xffffffffn))}`;
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((ip.value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (length ≥ 2) of zero groups, leftmost on ties.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export function ipToBytes(ip: IP): Buffer {
  if (ip.family === 4) {
    const buf = Buffer.allocUnsafe(4);
    buf.writeUInt32BE(Number(ip.value), 0);
    return buf;
  }
  const len = 16;
  const buf = Buffer.allocUnsafe(len); // pooled: every byte is written below
  let v = ip.value;
  for (let i = len - 1; i >= 0; i--) { buf[i] = Number(v & 0xffn); v >>= 8n; }
  return buf;
}

export function ipFromBytes(bytes: Uint8Array): IP {
  if (bytes.length !== 4 && bytes.length !== 16) throw new AddressError(`an address has 4 or 16 bytes, got ${bytes.length}`);
  if (bytes.length === 4) return make(4, BigInt(((bytes[0]! << 24) >>> 0) + (bytes[1]! << 16) + (bytes[2]! << 8) + bytes[3]!));
  let v = 0n;
  for (const b of bytes) v = (v << 8n) | BigInt(b);
  return make(6, v);
}

export function ipEquals(a: IP, b: IP): boolean {
  return a.family === b.family && a.value === b.value;
}

export function ipCompare(a: IP, b: IP): number {
  if (a.family !== b.family) return a.family - b.family;
  return a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
}

/** ip + n, throwing when the result leaves the family's space. */
export function ipAdd(ip: IP, n: bigint | number): IP {
  return ipFromValue(ip.family, ip.value + BigInt(n));
}

// ---- CIDR ----

export function tryParseCidr(s: string): Cidr | undefined {
  if (typeof s !== 'string') return undefined;
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const ip = tryParseIP(s.slice(0, slash));
  const p = s.slice(slash + 1);
  if (!ip || !/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
  const prefix = Number(p);
  if (prefix > BITS[ip.family]) return undefined;
  return { ip, prefix };
}

export function parseCidr(s: string): Cidr {
  const c = tryParseCidr(s);
  if (!c) throw new AddressError(`invalid CIDR ${JSON.stringify(s)} (expected address/prefix, e.g. 10.244.0.0/16)`);
  return c;
}

export function formatCidr(c: Cidr): string {
  return `${formatIP(c.ip)}/${c.prefix}`;
}

export function maskValue(family: IPFamily, prefix: number): bigint {
  const bits = BigInt(BITS[family]);
  const all = (1n << bits) - 1n;
  return (all << (bits - BigInt(prefix))) & all;
}

/** The dotted/hex netmask of a prefix, e.g. 24 → 255.255.255.0. */
export function prefixToMask(family: IPFamily, prefix: number): IP {
  return make(family, maskValue(family, prefix));
}

/** The network (all host bits zero) of a CIDR. */
export function networkOf(c: Cidr): Cidr {
  return { ip: make(c.ip.family, c.ip.value & maskValue(c.ip.family, c.prefix)), prefix: c.prefix };
}

export function isNetworkAddress(c: Cidr): boolean {
  return (c.ip.value & ~maskValue(c.ip.family, c.prefix)) === 0n;
}

/** The last address of the CIDR (the broadcast address for IPv4). */
export function lastAddress(c: Cidr): IP {
  const hostMask = ((1n << BigInt(BITS[c.ip.family])) - 1n) & ~maskValue(c.ip.family, c.prefix);
  return make(c.ip.family, (c.ip.value & maskValue(c.ip.family, c.prefix)) | hostMask);
}

export function cidrSize(c: Cidr): bigint {
  return 1n << BigInt(BITS[c.ip.family] - c.prefix);
}

export function cidrContains(c: Cidr, ip: IP): boolean {
  if (c.ip.family !== ip.family) return false;
  const m = maskValue(c.ip.family, c.prefix);
  return (c.ip.value & m) === (ip.value & m);
}

/** True when inner lies wholly within outer. */
export function cidrContainsCidr(outer: Cidr, inner: Cidr): boolean {
  return outer.ip.family === inner.ip.family && inner.prefix >= outer.prefix && cidrContains(outer, inner.ip);
}

export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  if (a.ip.family !== b.ip.family) return false;
  return a.prefix <= b.prefix ? cidrContains(a, b.ip) : cidrContains(b, a.ip);
}

export function cidrEquals(a: Cidr, b: Cidr): boolean {
  return a.prefix === b.prefix && ipEquals(a.ip, b.ip);
}

/** The n-th address of the CIDR's network (0 = network address). */
export function nthAddress(c: Cidr, n: bigint | number): IP {
  const big = BigInt(n);
  if (big < 0n || big >= cidrSize(c)) throw new AddressError(`address #${big} is outside ${formatCidr(networkOf(c))}`);
  return make(c.ip.family, networkOf(c).ip.value + big);
}

/** The index of the n-th subnet of length subnetLen inside c. */
export function nthSubnet(c: Cidr, subnetLen: number, n: bigint | number): Cidr {
  if (subnetLen < c.prefix || subnetLen > BITS[c.ip.family]) {
    throw new AddressError(`cannot split /${c.prefix} into /${subnetLen} subnets`);
  }
  const step = 1n << BigInt(BITS[c.ip.family] - subnetLen);
  const count = 1n << BigInt(subnetLen - c.prefix);
  const big = BigInt(n);
  if (big < 0n || big >= count) throw new AddressError(`subnet #${big} is outside ${formatCidr(networkOf(c))}`);
  return { ip: make(c.ip.family, networkOf(c).ip.value + big * step), prefix: subnetLen };
}

/** flannel's store key form of a subnet: 10.244.3.0/24 → "10.244.3.0-24". */
export function subnetKey(c: Cidr): string {
  return `${formatIP(c.ip)}-${c.prefix}`;
}

/**
 * A subnet key back to its subnet. Dual-stack leases are keyed by both subnets, flanneld's way:
 * "10.244.3.0-24&fd00:10:244:3::-64" is its IPv4 subnet's (the lease's identity; see
 * parseLeaseKey for both halves).
 */
export function parseSubnetKey(key: string): Cidr | undefined {
  return parseLeaseKey(key)?.subnet;
}

/** The subnets a lease holds: its identity `subnet`, and its IPv6 subnet if it has one. */
export interface LeaseSubnets {
  /** The IPv4 subnet, or the IPv6 one on an IPv6-only network: what the lease is known by. */
  readonly subnet: Cidr;
  /** The lease's IPv6 subnet (on an IPv6-only network, `subnet` itself). */
  readonly ipv6Subnet?: Cidr | undefined;
}

function parseOneSubnetKey(key: string): Cidr | undefined {
  const dash = key.lastIndexOf('-');
  if (dash < 0) return undefined;
  const c = tryParseCidr(`${key.slice(0, dash)}/${key.slice(dash + 1)}`);
  return c && isNetworkAddress(c) ? c : undefined;
}

/**
 * A lease key in flanneld's form: "10.244.3.0-24", dual-stack "10.244.3.0-24&fd00:10:244:3::-64".
 * An IPv6-only lease is keyed by its IPv6 subnet alone ("fd00:10:244:3::-64"; flanneld has no
 * IPv6-only etcd leases, and its key pattern does not match this one, so it never misreads it).
 */
export function leaseKey(subnet: Cidr, ipv6Subnet?: Cidr): string {
  if (ipv6Subnet === undefined || subnet.ip.family === 6) return subnetKey(subnet);
  return `${subnetKey(subnet)}&${subnetKey(ipv6Subnet)}`;
}

export function parseLeaseKey(key: string): LeaseSubnets | undefined {
  const amp = key.indexOf('&');
  if (amp >= 0) {
    const v4 = parseOneSubnetKey(key.slice(0, amp));
    const v6 = parseOneSubnetKey(key.slice(amp + 1));
    return v4?.ip.family === 4 && v6?.ip.family === 6 ? { subnet: v4, ipv6Subnet: v6 } : undefined;
  }
  const c = parseOneSubnetKey(key);
  if (!c) return undefined;
  return c.ip.family === 6 ? { subnet: c, ipv6Subnet: c } : { subnet: c };
}

/**
 * The fewest CIDRs covering exactly first..last (inclusive), in order — e.g. a host's slice of
 * an address pool as routes: 198.18.0.100–149 → .100/30, .104/29, .112/28, .128/28, .144/30, .148/31.
 */
export function rangeToCidrs(first: IP, last: IP): Cidr[] {
  if (first.family !== last.family) throw new AddressError('range ends are of different families');
  if (first.value > last.value) throw new AddressError(`range ${formatIP(first)}–${formatIP(last)} is empty`);
  const bits = BITS[first.family];
  const out: Cidr[] = [];
  let v = first.value;
  while (v <= last.value) {
    // The largest block aligned at v that does not run past last.
    let size = 0;
    while (size < bits && (v & ((1n << BigInt(size + 1)) - 1n)) === 0n && v + (1n << BigInt(size + 1)) - 1n <= last.value) size++;
    out.push({ ip: make(first.family, v), prefix: bits - size });
    v += 1n << BigInt(size);
  }
  return out;
}
