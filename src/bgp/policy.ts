// Import policy: which routes learned from peers may enter the Loc-RIB — and so the kernel and
// every other peer's Adj-RIB-Out. A route refused here stays in its peer's Adj-RIB-In (so a
// later policy change can take it in) but is treated as withdrawn everywhere else.
//
// Three rules hold whatever the configuration, because breaking them takes a host off its own
// network: a learned prefix must not equal, cover or lie inside a subnet the host is connected
// to (it would replace or shadow the connected route, or — covering it — stand in for it the
// moment the link flaps); it must not contain its own next hop (the route would resolve through
// itself); and it must not contain the address of any BGP peer (the session's own packets
// would follow it). On top, `allow` lists the ranges a prefix must lie inside.
import { type Cidr, type IP, type IPFamily, bitsOf, cidrContains, cidrContainsCidr, formatCidr, formatIP, ipFromValue } from '../net/ip.js';
import type { PathAttributes } from './codec.js';

export interface ImportPolicy {
  /** Accept only prefixes equal to or inside one of these; undefined accepts any prefix. */
  readonly allow?: readonly Cidr[] | undefined;
  /** The host's connected subnets: a learned prefix overlapping one in any way is refused. */
  readonly protect?: readonly Cidr[] | undefined;
}

export type ImportRejection =
  | { readonly reason: 'outside-import-ranges' }
  | { readonly reason: 'overlaps-connected-subnet'; readonly subnet: Cidr }
  | { readonly reason: 'contains-next-hop'; readonly nextHop: IP }
  | { readonly reason: 'contains-peer-address'; readonly peer: IP };

export type ImportRejectionReason = ImportRejection['reason'];

export function describeRejection(r: ImportRejection): string {
  switch (r.reason) {
    case 'outside-import-ranges': return 'not inside the cluster network or any allowed import prefix';
    case 'overlaps-connected-subnet': return `overlaps the connected subnet ${formatCidr(r.subnet)}`;
    case 'contains-next-hop': return `contains its own next hop ${formatIP(r.nextHop)}`;
    case 'contains-peer-address': return `contains the BGP peer address ${formatIP(r.peer)}`;
  }
}

export function sameRejection(a: ImportRejection | undefined, b: ImportRejection | undefined): boolean {
  if (!a || !b) return a === b;
  return describeRejection(a) === describeRejection(b);
}

/** Either contains the other (for prefixes, overlapping is exactly that). */
function overlaps(a: Cidr, b: Cidr): boolean {
  return cidrContainsCidr(a, b) || cidrContainsCidr(b, a);
}

/**
 * A sorted set of addresses (the peers') that answers "is any of them inside this prefix" with
 * one binary search, so a full mesh of thousands of peers costs little per learned prefix. Each
 * family has its own sorted list: an IPv4 address is never inside an IPv6 prefix.
 */
export class AddressSet {
  private readonly sorted: Record<IPFamily, bigint[]> = { 4: [], 6: [] };

  constructor(addresses: Iterable<IP> = []) {
    for (const a of addresses) this.add(a);
  }

  add(a: IP): void {
    const list = this.sorted[a.family];
    const i = lowerBound(list, a.value);
    if (list[i] !== a.value) list.splice(i, 0, a.value);
  }

  delete(a: IP): void {
    const list = this.sorted[a.family];
    const i = lowerBound(list, a.value);
    if (list[i] === a.value) list.splice(i, 1);
  }

  /** The first member inside the prefix `c` (a network address), if any. */
  firstInside(c: Cidr): IP | undefined {
    const family = c.ip.family;
    const size = 1n << BigInt(bitsOf(family) - c.prefix);
    const list = this.sorted[family];
    const v = list[lowerBound(list, c.ip.value)];
    return v !== undefined && v < c.ip.value + size ? ipFromValue(family, v) : undefined;
  }
}

function lowerBound(sorted: readonly bigint[], v: bigint): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((sorted[mid] as bigint) < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The verdict for one learned route: undefined to accept, else why not. `prefix` must be a
 * network address (the codec masks host bits off).
 */
export function checkImport(policy: ImportPolicy, peers: AddressSet, prefix: Cidr, attributes: PathAttributes): ImportRejection | undefined {
  for (const subnet of policy.protect ?? []) if (overlaps(prefix, subnet)) return { reason: 'overlaps-connected-subnet', subnet };
  const nh = attributes.nextHop;
  if (nh && cidrContains(prefix, nh)) return { reason: 'contains-next-hop', nextHop: nh };
  const peer = peers.firstInside(prefix);
  if (peer) return { reason: 'contains-peer-address', peer };
  if (policy.allow && !policy.allow.some((range) => cidrContainsCidr(range, prefix))) return { reason: 'outside-import-ranges' };
  return undefined;
}
