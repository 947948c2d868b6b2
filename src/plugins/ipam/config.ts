// The ipam section, host-local compatible: `ranges` (a list of range sets, each a list of ranges),
// the legacy top-level `subnet/rangeStart/rangeEnd/gateway` (prepended as the first set),
// `routes`, `dataDir`, `resolvConf`. Parsing also canonicalises each range (defaults, bounds),
// so the allocator only ever sees ranges that make sense.
import { z } from 'zod';
import { CniCode, WeftError } from '../../errors.js';
import {
  cidrContains,
  formatCidr,
  formatIP,
  ipAdd,
  ipCompare,
  isNetworkAddress,
  lastAddress,
  networkOf,
  tryParseCidr,
  tryParseIP,
  type Cidr,
  type IP,
} from '../../net/ip.js';
import type { CniRoute } from '../../cni/result.js';

export interface IpRange {
  /** Network address form (host bits zero). */
  subnet: Cidr;
  /** Inclusive bounds, both inside subnet. */
  rangeStart: IP;
  rangeEnd: IP;
  gateway?: IP;
}

/** One IP is allocated per range set; the ranges of a set are tried in order. */
export type RangeSet = IpRange[];

export interface IpamConfig {
  type: string;
  rangeSets: RangeSet[];
  routes: CniRoute[];
  dataDir: string;
  resolvConf?: string;
}

export const DEFAULT_DATA_DIR = '/var/lib/cni/networks';

const str = z.string();

const rangeSchema = z.object({
  subnet: str,
  rangeStart: str.optional(),
  rangeEnd: str.optional(),
  gateway: str.optional(),
});

const routeSchema = z.object({
  dst: str,
  gw: str.optional(),
  mtu: z.number().int().optional(),
  advmss: z.number().int().optional(),
  priority: z.number().int().optional(),
  table: z.number().int().optional(),
  scope: z.number().int().optional(),
});

/** The raw ipam section; extra keys are allowed as in host-local. */
export const ipamSectionSchema = z
  .object({
    type: str,
    ranges: z.array(z.array(rangeSchema)).optional(),
    subnet: str.optional(),
    rangeStart: str.optional(),
    rangeEnd: str.optional(),
    gateway: str.optional(),
    routes: z.array(routeSchema).optional(),
    dataDir: str.optional(),
    resolvConf: str.optional(),
  })
  .passthrough();

export type IpamSectionInput = z.infer<typeof ipamSectionSchema>;

function bad(key: string, msg: string): never {
  throw new WeftError(CniCode.InvalidNetworkConfig, `ipam.${key}: ${msg}`);
}

function parseIPKey(key: string, s: string): IP {
  const ip = tryParseIP(s);
  if (!ip) bad(key, `invalid IP address ${JSON.stringify(s)}`);
  return ip;
}

/** host-local's Range.Canonicalize: strict subnet, defaults for start/end/gateway, bounds. */
export function canonicalizeRange(key: string, r: z.infer<typeof rangeSchema>): IpRange {
  const subnet = tryParseCidr(r.subnet);
  if (!subnet) bad(`${key}.subnet`, `invalid CIDR ${JSON.stringify(r.subnet)}`);
  const bits = subnet.ip.family === 4 ? 32 : 128;
  if (!isNetworkAddress(subnet)) {
    bad(`${key}.subnet`, `${r.subnet} has host bits set (the network address is ${formatCidr(networkOf(subnet))})`);
  }
  // A /31 or /32 (/127, /128) leaves nothing after network, gateway and broadcast.
  if (subnet.prefix > bits - 2) bad(`${key}.subnet`, `network ${r.subnet} too small to allocate from`);
  const inSubnet = (k: string, ip: IP): IP => {
    if (ip.family !== subnet.ip.family || !cidrContains(subnet, ip)) bad(`${key}.${k}`, `${formatIP(ip)} not in network ${r.subnet}`);
    return ip;
  };
  const first = ipAdd(subnet.ip, 1);
  const last = lastAddress(subnet);
  // IPv4 loses the broadcast address; IPv6 has none (host-local's lastIP()).
  const defaultEnd = subnet.ip.family === 4 ? ipAdd(last, -1) : last;
  const rangeStart = r.rangeStart !== undefined ? inSubnet('rangeStart', parseIPKey(`${key}.rangeStart`, r.rangeStart)) : first;
  const rangeEnd = r.rangeEnd !== undefined ? inSubnet('rangeEnd', parseIPKey(`${key}.rangeEnd`, r.rangeEnd)) : defaultEnd;
  if (ipCompare(rangeStart, rangeEnd) > 0) bad(`${key}.rangeStart`, `${formatIP(rangeStart)} is after rangeEnd ${formatIP(rangeEnd)}`);
  const gateway = r.gateway !== undefined ? inSubnet('gateway', parseIPKey(`${key}.gateway`, r.gateway)) : first;
  return { subnet, rangeStart, rangeEnd, gateway };
}

function rangesOverlap(a: IpRange, b: IpRange): boolean {
  return (
    a.subnet.ip.family === b.subnet.ip.family &&
    ipCompare(a.rangeStart, b.rangeEnd) <= 0 &&
    ipCompare(b.rangeStart, a.rangeEnd) <= 0
  );
}

export function describeRangeSet(rs: RangeSet): string {
  return rs.map((r) => `${formatIP(r.rangeStart)}-${formatIP(r.rangeEnd)}`).join(',');
}

export function parseIpamConfig(section: unknown): IpamConfig {
  if (section === undefined) throw new WeftError(CniCode.InvalidNetworkConfig, 'ipam: missing ipam section');
  const p = ipamSectionSchema.safeParse(section);
  if (!p.success) {
    const issue = p.error.issues[0];
    const path = ['ipam', ...(issue?.path.map(String) ?? [])].join('.');
    throw new WeftError(CniCode.InvalidNetworkConfig, `${path}: ${issue?.message ?? 'invalid value'}`);
  }
  const s = p.data;
  const rangeSets: RangeSet[] = [];
  if (s.subnet !== undefined) {
    const legacy: z.infer<typeof rangeSchema> = { subnet: s.subnet };
    if (s.rangeStart !== undefined) legacy.rangeStart = s.rangeStart;
    if (s.rangeEnd !== undefined) legacy.rangeEnd = s.rangeEnd;
    if (s.gateway !== undefined) legacy.gateway = s.gateway;
    rangeSets.push([canonicalizeRange('', legacy)]);
  }
  (s.ranges ?? []).forEach((set, i) => {
    if (set.length === 0) bad(`ranges.${i}`, 'empty range set');
    rangeSets.push(set.map((r, j) => canonicalizeRange(`ranges.${i}.${j}`, r)));
  });
  if (rangeSets.length === 0) bad('ranges', 'no IP ranges specified');
  rangeSets.forEach((set, i) => {
    const fam = set[0]?.subnet.ip.family;
    set.forEach((r, j) => {
      if (r.subnet.ip.family !== fam) bad(`ranges.${i}.${j}.subnet`, 'mixed address families in one range set');
      for (let k = 0; k < j; k++) {
        const other = set[k];
        if (other && rangesOverlap(r, other)) bad(`ranges.${i}.${j}`, `overlaps with range ${k} of the same set`);
      }
    });
    for (let k = 0; k < i; k++) {
      const other = rangeSets[k] ?? [];
      if (set.some((a) => other.some((b) => rangesOverlap(a, b)))) bad(`ranges.${i}`, `range set ${i} overlaps with range set ${k}`);
    }
  });
  const routes = (s.routes ?? []).map((rt, i): CniRoute => {
    const dst = tryParseCidr(rt.dst);
    if (!dst) bad(`routes.${i}.dst`, `invalid CIDR ${JSON.stringify(rt.dst)}`);
    const out: CniRoute = { dst };
    if (rt.gw !== undefined) out.gw = parseIPKey(`routes.${i}.gw`, rt.gw);
    for (const k of ['mtu', 'advmss', 'priority', 'table', 'scope'] as const) {
      const v = rt[k];
      if (v !== undefined) out[k] = v;
    }
    return out;
  });
  const cfg: IpamConfig = { type: s.type, rangeSets, routes, dataDir: s.dataDir ?? DEFAULT_DATA_DIR };
  if (s.resolvConf !== undefined) cfg.resolvConf = s.resolvConf;
  return cfg;
}

export function rangeContains(r: IpRange, ip: IP): boolean {
  return ip.family === r.subnet.ip.family && ipCompare(ip, r.rangeStart) >= 0 && ipCompare(ip, r.rangeEnd) <= 0;
}

export function rangeSetContains(rs: RangeSet, ip: IP): boolean {
  return rs.some((r) => rangeContains(r, ip));
}
