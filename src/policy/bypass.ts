// The conntrack bypass (table `inet weft-notrack`, weftd --conntrack-bypass, off by default) the
// policy enforcer keeps while no policy table exists on a host: pod-to-pod packets are marked
// `notrack` in raw prerouting, so forwarding between pods skips conntrack. Measured on a VM with
// br_netfilter (bench/results/dataplane.md), the per-packet cost of these rules (the fib lookup,
// the tuple lookup, the learning hooks) exceeds that of the conntrack lookup they save; it is kept
// for hosts where conntrack is the expensive part.
//
// What must stay tracked. A pod-to-pod packet needs conntrack when NAT has to be undone on it:
//   - packets to the host's own addresses (portmap's hairpin masquerades a pod's connection to its
//     own hostPort behind the bridge address; the pod's replies go to that address): the
//     `fib daddr type != local` in the gate;
//   - replies of connections that were DNATed on this host towards a pod. The request is tracked
//     (its destination is a ClusterIP or a host address, not a pod), gets DNATed to pod B, and is
//     forwarded; B's reply B → A is cluster → cluster and would be marked notrack, so conntrack
//     would never restore the ClusterIP (or host:hostPort) as its source and A would drop it
//     (TCP answers with a reset that kills B's side too). Cases: kube-proxy's ClusterIPs (iptables
//     and nftables modes DNAT in prerouting) towards a pod on this host or another one — the reply
//     comes back over the overlay or the routed path to the host that DNATed —, a pod reaching
//     another pod through its own host's hostPort (portmap without its hairpin masquerade, or from
//     a pod outside the container's subnet), and the same towards a pod on this host's bridge,
//     whose replies are bridged and reach the IP hooks only through br_netfilter (then they
//     traverse inet prerouting, the exemption applies as well);
//   - a direct pod-to-pod connection that happens to use the same addresses and ports as the
//     pod-side leg of a DNATed one (A reuses its ephemeral port towards B:port directly while its
//     ClusterIP connection to B:port is open): untracked, its replies would match the DNATed
//     connection's reply tuple and be un-DNATed into the wrong socket. Tracked, conntrack sees the
//     clash and remaps the direct connection's source port — an SNAT whose replies need undoing
//     in turn, so they are the same case as the DNAT's.
//
// How: every connection NATed on this host between pods (after NAT both ends are pods) has its
// reply tuple (B . proto . B's port . A . A's port) and that tuple's mirror (the request as it
// leaves after NAT, A:port → B:port) in a dynamic set; raw prerouting looks every pod-to-pod
// packet up in it before notrack, and a hit stays tracked, so conntrack un-NATs it. The set is
// filled from both directions of the connection: requests in postrouting after NAT (the request
// leaves before any reply exists, and after srcnat a clash remap shows its new port), replies in
// prerouting between conntrack and their un-NAT; each adds or refreshes both elements, so the
// notrack chain needs one lookup. The elements' lifetime follows the conntrack entry's (`ct expiration`, read after
// conntrack refreshed it): it is always at least the entry's remaining lifetime, so an element
// never expires before its entry, and at most a small multiple of it, so the set holds about two
// elements per NATed pod-to-pod entry in conntrack (a day-long fixed timeout would let ClusterIP
// DNS, one UDP "connection" per query, fill any set within hours; a full set learns nothing and
// the replies of new DNATed connections would then break). A learning attempt that fails because
// the set is full is counted (the last rule of each learn chain).
//
// The learning half (the set, the learn-* chains) stays while a policy table exists too:
// only the prerouting chain comes and goes with the policy table. So when the last policy goes,
// every live NATed connection is already in the set, and restarts rewrite the table in place (the
// sets and their elements are kept). Where the sets are new (first start, upgrade, a layout this
// version does not know), the enforcer installs the learning half first and then seeds the sets
// from the connections conntrack already holds (parseConntrackNat), so a connection made before
// the table existed is not broken by the first notrack.
//
// Not covered: ICMP errors about a DNATed connection sent by the pod it was DNATed to (port
// unreachable for UDP to a closed port, say) are marked notrack and reach the client
// untranslated, so the client sees a timeout instead of the error. Matching them needs the quoted
// header's addresses and ports as set keys, and nft 1.0.6 cannot look raw payload up in a typed
// set (a raw `typeof` set loads but makes `nft list` abort). Errors the hosts themselves generate
// (PMTU on the overlay, unreachable on this host) come from the local output path and are
// translated as usual. IPVS-mode kube-proxy does not DNAT through conntrack's NAT (no `ct status
// dnat`), so nothing is learnt for it.
import { type Cidr, type IP, type IPFamily, cidrContains, formatCidr, formatIP, ipEquals, tryParseIP } from '../net/ip.js';
import { POLICY_FAMILY, type TableShape } from './compile.js';

/** The table that holds the conntrack bypass (its learning half also while a policy table exists). */
export const BYPASS_TABLE = 'weft-notrack';

/**
 * Capacity of each family's set. Elements live about as long as their conntrack entries, so the set
 * holds two elements per NATed pod-to-pod connection of the host (and those of connections that
 * ended a little while ago, with the lifetime steps below): room for about 500 000 connections,
 * more than conntrack's own limit on most nodes (kube-proxy sets 32768 per core, at least
 * 131072). The kernel grows the hash as elements come: an empty set costs nothing.
 */
export const BYPASS_SET_SIZE = 1_048_576;

/**
 * Element lifetimes by the conntrack entry's remaining lifetime: below 1 minute (a new entry,
 * UDP's 30 s, closing TCP) → 1 minute; below 10 minutes (UDP streams, TCP's 2-minute handshake and
 * TIME_WAIT states) → 10 minutes; longer (established TCP: 5 days by default, 1 day under
 * kube-proxy) → 6 days. A connection's first packet reads 0 (conntrack confirms the entry only
 * at the very end of postrouting): it learns 1-minute elements, refreshed by the reply or, for a
 * request still unanswered, by its retransmissions.
 */
const LIFETIMES: readonly { readonly below?: string; readonly belowSeconds?: number; readonly timeout: string }[] = [
  { below: '1m', belowSeconds: 60, timeout: '1m' },
  { below: '10m', belowSeconds: 600, timeout: '10m' },
  { timeout: '6d' },
];

/** Transport protocols whose connections are learnt: the ones with ports where `th sport/dport` reads them. */
const LEARNT = ['tcp', 'udp', 'sctp'] as const;

interface BypassFamily {
  readonly family: IPFamily;
  /** nft's match keyword and the suffix of this family's set and chain names. */
  readonly match: 'ip' | 'ip6';
  readonly addr: 'ipv4_addr' | 'ipv6_addr';
}

const FAMILIES: readonly BypassFamily[] = [
  { family: 4, match: 'ip', addr: 'ipv4_addr' },
  { family: 6, match: 'ip6', addr: 'ipv6_addr' },
];

const tupleSet = (f: BypassFamily) => `nat-tuples-${f.match}`;
const notrackChain = (f: BypassFamily) => `notrack-${f.match}`;
const learnChain = (f: BypassFamily) => `learn-${f.match}`;

/** The families present in `networks`, each with its networks as an nft set literal. */
function families(networks: readonly Cidr[]): { f: BypassFamily; nets: string }[] {
  return FAMILIES.flatMap((f) => {
    const nets = networks.filter((n) => n.ip.family === f.family).map(formatCidr);
    return nets.length === 0 ? [] : [{ f, nets: `{ ${nets.join(', ')} }` }];
  });
}

export interface BypassRender {
  /**
   * true: pod-to-pod packets skip conntrack (no policy table on this host). false: only the
   * learning half, no notrack (a policy table exists).
   */
  readonly notrack: boolean;
  /** Delete whatever table is there first (a layout this version does not know): the sets start empty. */
  readonly recreate?: boolean;
  /** Elements for connections NATed before the sets existed (from parseConntrackNat). */
  readonly seed?: readonly NatSeed[];
}

/**
 * The bypass table for `networks` as one script, rewritten in place: the table and the sets are
 * added (kept with their elements when they exist), every chain is flushed and refilled, and the
 * prerouting chain exists only with `notrack`. Goes into the same transaction as the policy
 * table's creation (notrack false) or removal (notrack true).
 */
export function renderBypass(networks: readonly Cidr[], opts: BypassRender): string {
  const t = `${POLICY_FAMILY} ${BYPASS_TABLE}`;
  const fams = families(networks);
  const lines = opts.recreate ? [`add table ${t}`, `delete table ${t}`, `add table ${t}`] : [`add table ${t}`];
  for (const { f } of fams) {
    lines.push(`add set ${t} ${tupleSet(f)} { type ${f.addr} . inet_proto . inet_service . ${f.addr} . inet_service; size ${BYPASS_SET_SIZE}; flags dynamic,timeout; timeout 6d; }`);
  }
  // Chains are added (no-op when they exist) and flushed before their rules go in: nothing of an
  // earlier rule set survives, the sets' elements do. Base chains before the chains they jump to.
  const chain = (name: string, header = '') => lines.push(`add chain ${t} ${name}${header ? ` { ${header} }` : ''}`, `flush chain ${t} ${name}`);
  chain('learn-requests', 'type filter hook postrouting priority srcnat + 10; policy accept;');
  // -150 (mangle): after conntrack (-200), before dstnat (-100).
  chain('learn-replies', 'type filter hook prerouting priority mangle; policy accept;');
  chain('prerouting', 'type filter hook prerouting priority raw; policy accept;');
  if (!opts.notrack) lines.push(`delete chain ${t} prerouting`);
  for (const { f } of fams) {
    chain(learnChain(f));
    chain(notrackChain(f));
  }
  const quote = (s: string) => `comment "${s}"`;
  for (const { f, nets } of fams) {
    const m = f.match;
    // A connection NATed between pods: its requests after all NAT (postrouting after srcnat),
    // its replies before any un-NAT (prerouting after conntrack, before dstnat), so that both see
    // the tuples as they are between the pods. Untracked packets stop at the first ct expression.
    const natted = `ct status snat,dnat ${m} saddr ${nets} ${m} daddr ${nets} meta l4proto { ${LEARNT.join(', ')} } jump ${learnChain(f)}`;
    lines.push(
      `add rule ${t} learn-requests ct direction original ${natted} ${quote('weft: learn a NATed pod-to-pod connection from its request')}`,
      `add rule ${t} learn-replies ct direction reply ${natted} ${quote('weft: learn a NATed pod-to-pod connection from its reply')}`,
    );
    // The packet's own tuple and its mirror: from either direction, the reply tuple and the
    // request's tuple after NAT.
    const own = `${m} saddr . meta l4proto . th sport . ${m} daddr . th dport`;
    const mirror = `${m} daddr . meta l4proto . th dport . ${m} saddr . th sport`;
    for (const l of LIFETIMES) {
      const update = (key: string) => `update @${tupleSet(f)} { ${key} timeout ${l.timeout} }`;
      lines.push(`add rule ${t} ${learnChain(f)} ${l.below ? `ct expiration < ${l.below} ` : ''}${update(own)} ${update(mirror)} return`);
    }
    // Reached only when every update above failed: the set is full.
    lines.push(`add rule ${t} ${learnChain(f)} counter ${quote('weft: a NATed connection could not be learnt (set full), its replies lose their un-NAT')}`);
    if (opts.notrack) {
      lines.push(`add rule ${t} prerouting ${m} saddr ${nets} ${m} daddr ${nets} fib daddr type != local jump ${notrackChain(f)} ${quote('weft: pod to pod, no network policy on this host')}`);
    }
    lines.push(
      `add rule ${t} ${notrackChain(f)} ${own} @${tupleSet(f)} return ${quote('weft: a NATed connection stays tracked, conntrack un-NATs its replies')}`,
      `add rule ${t} ${notrackChain(f)} notrack`,
    );
  }
  lines.push(...renderSeed(networks, opts.seed ?? []));
  return lines.join('\n') + '\n';
}

/** Deletes the bypass table whether or not it exists. */
export function renderBypassRemove(): string {
  return `add table ${POLICY_FAMILY} ${BYPASS_TABLE}\ndelete table ${POLICY_FAMILY} ${BYPASS_TABLE}\n`;
}

/** What renderBypass leaves: rules per chain, and the sets (their elements are the kernel's). */
export interface BypassShape {
  readonly chains: Readonly<Record<string, number>>;
  readonly sets: readonly string[];
}

export function bypassShape(networks: readonly Cidr[], notrack: boolean): BypassShape {
  const fams = families(networks);
  const chains: Record<string, number> = { 'learn-requests': fams.length, 'learn-replies': fams.length };
  if (notrack) chains.prerouting = fams.length;
  for (const { f } of fams) {
    chains[learnChain(f)] = LIFETIMES.length + 1;
    chains[notrackChain(f)] = 2;
  }
  return { chains, sets: fams.map(({ f }) => tupleSet(f)) };
}

/** Why the kernel's bypass table (shapeOfListing of it, undefined when absent) is not what renderBypass makes. */
export function bypassDifference(got: TableShape | undefined, networks: readonly Cidr[], notrack: boolean): string | undefined {
  if (got === undefined) return `${BYPASS_TABLE} is missing`;
  const want = bypassShape(networks, notrack);
  for (const [name, n] of Object.entries(want.chains)) {
    if (!(name in got.chains)) return `${BYPASS_TABLE} chain ${name} is missing`;
    if (got.chains[name] !== n) return `${BYPASS_TABLE} chain ${name} has ${got.chains[name]} rules, expected ${n}`;
  }
  for (const name of Object.keys(got.chains)) {
    if (!(name in want.chains)) {
      return name === 'prerouting' && !notrack ? `${BYPASS_TABLE} notrack (chain prerouting) exists next to the policy table` : `${BYPASS_TABLE} has an unexpected chain ${name}`;
    }
  }
  for (const name of want.sets) if (!(name in got.sets)) return `${BYPASS_TABLE} set ${name} is missing`;
  for (const name of Object.keys(got.sets)) if (!want.sets.includes(name)) return `${BYPASS_TABLE} has an unexpected set ${name}`;
  return undefined;
}

/**
 * How to bring the kernel's table (undefined: absent) to this version's layout. `recreate`: it
 * holds chains or sets this version does not make (an in-place rewrite would keep them), so it is
 * deleted first. `fresh`: some set is new, so connections NATed earlier are not in it: seed it
 * from conntrack once the learning half is in place.
 */
export function planBypass(got: TableShape | undefined, networks: readonly Cidr[]): { recreate: boolean; fresh: boolean } {
  if (got === undefined) return { recreate: false, fresh: true };
  const want = bypassShape(networks, true);
  const unknown = Object.keys(got.chains).some((c) => !(c in want.chains)) || Object.keys(got.sets).some((s) => !want.sets.includes(s));
  if (unknown) return { recreate: true, fresh: true };
  return { recreate: false, fresh: want.sets.some((s) => !(s in got.sets)) };
}

/** A live NATed pod-to-pod connection as conntrack lists it: its reply tuple and remaining lifetime. */
export interface NatSeed {
  readonly proto: (typeof LEARNT)[number];
  /** The reply's source (for a DNAT, the pod the connection was DNATed to) and port. */
  readonly src: IP;
  readonly sport: number;
  /** The reply's destination (the client pod, or its address after SNAT) and port. */
  readonly dst: IP;
  readonly dport: number;
  /** Seconds conntrack keeps the entry without traffic. */
  readonly expiresSeconds: number;
}

/**
 * The NATed connections between addresses of `networks` in a /proc/net/nf_conntrack listing:
 * entries whose reply tuple is not the request's reversed (the destination or the source was
 * rewritten), with both ends of the reply in the cluster network. Lines it cannot read are
 * skipped.
 */
export function parseConntrackNat(text: string, networks: readonly Cidr[]): NatSeed[] {
  const out: NatSeed[] = [];
  const inCluster = (ip: IP) => networks.some((n) => n.ip.family === ip.family && cidrContains(n, ip));
  for (const line of text.split('\n')) {
    // ipv4  2 tcp  6 431999 ESTABLISHED src=A dst=VIP sport=P dport=80 src=B dst=A sport=8080 dport=P [ASSURED] mark=0 use=2
    const fields = line.trim().split(/\s+/);
    const proto = fields[2];
    if ((fields[0] !== 'ipv4' && fields[0] !== 'ipv6') || !LEARNT.some((p) => p === proto)) continue;
    const expiresSeconds = Number(fields[4]);
    if (!Number.isFinite(expiresSeconds)) continue;
    const tuples: Record<string, string>[] = [];
    for (const f of fields.slice(5)) {
      const eq = f.indexOf('=');
      if (eq < 0) continue;
      const k = f.slice(0, eq);
      if (k === 'src') tuples.push({});
      const cur = tuples[tuples.length - 1];
      if (cur && !(k in cur) && ['src', 'dst', 'sport', 'dport'].includes(k)) cur[k] = f.slice(eq + 1);
    }
    const [orig, reply] = tuples;
    if (!orig || !reply) continue;
    const origSrc = tryParseIP(orig.src ?? '');
    const origDst = tryParseIP(orig.dst ?? '');
    const src = tryParseIP(reply.src ?? '');
    const dst = tryParseIP(reply.dst ?? '');
    const sport = Number(reply.sport);
    const dport = Number(reply.dport);
    if (!origSrc || !origDst || !src || !dst || !Number.isInteger(sport) || !Number.isInteger(dport)) continue;
    const dnat = !ipEquals(origDst, src) || Number(orig.dport) !== sport;
    const snat = !ipEquals(origSrc, dst) || Number(orig.sport) !== dport;
    if ((!dnat && !snat) || !inCluster(src) || !inCluster(dst)) continue;
    out.push({ proto: proto as NatSeed['proto'], src, sport, dst, dport, expiresSeconds });
  }
  return out;
}

/** `add element` commands for `seed`, with the lifetime the learn rules would give each entry. */
function renderSeed(networks: readonly Cidr[], seed: readonly NatSeed[]): string[] {
  const lines: string[] = [];
  for (const { f } of families(networks)) {
    const elems = seed.filter((s) => s.src.family === f.family).slice(0, BYPASS_SET_SIZE / 4).map((s) => {
      const timeout = LIFETIMES.find((l) => l.belowSeconds === undefined || s.expiresSeconds < l.belowSeconds)!.timeout;
      return [
        `${formatIP(s.src)} . ${s.proto} . ${s.sport} . ${formatIP(s.dst)} . ${s.dport} timeout ${timeout}`,
        `${formatIP(s.dst)} . ${s.proto} . ${s.dport} . ${formatIP(s.src)} . ${s.sport} timeout ${timeout}`,
      ];
    }).flat();
    for (let i = 0; i < elems.length; i += 500) {
      lines.push(`add element ${POLICY_FAMILY} ${BYPASS_TABLE} ${tupleSet(f)} { ${elems.slice(i, i + 500).join(', ')} }`);
    }
  }
  return lines;
}
