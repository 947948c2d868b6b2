// Compiles the policies that concern one host's endpoints into one nftables table,
// `inet weft-policy`, owned by weft alone.
//
// Shape of the table:
//   chain forward   (hook forward) conntrack first — replies and established flows of allowed
//                   connections pass, invalid packets drop —, with IPv6 neighbour discovery
//                   passed and link-local traffic between pods dropped (ND_ACCEPT,
//                   LINK_LOCAL_DROP), then the sender's egress chain and the receiver's ingress
//                   chain, each reached through a verdict map keyed by the endpoint's address
//                   (one map per family: a dual-stack pod has an element in both). An address in
//                   no map belongs to no selected local pod and is not isolated in that direction.
//   chain ing-… / egr-…   one per distinct rule body: endpoints with the same policies share a
//                   chain, so a new pod selected by existing policies is one element in the map
//                   and one in the deny set of each direction it is isolated in.
//                   Ingress accepts on a match, egress returns (so ingress is still checked when
//                   both ends are local); both end in the default deny: a rate-limited `log …
//                   group N` (NFLOG, prefix from deny-log.ts), then a drop that looks the endpoint
//                   up in the deny set.
//   map ingress-F / egress-F, set ingress-deny-F / egress-deny-F   keyed by local endpoint
//                   address, each element with its own counter: the map's counts the packets
//                   an endpoint's chain judged, the deny set's those it dropped. Every rule that
//                   allows or drops carries a counter too; `layout` says which policy each
//                   counts for (see counters.ts). Only packets the chains see are counted: the
//                   first of each connection (later ones pass by conntrack at the head of
//                   forward) and every denied one.
//   set pods-…      the addresses of the pods one peer selector covers, cluster-wide. Pods coming
//                   and going, or changing labels, are element updates, never rule rebuilds.
//   set np-NAME-…   address . protocol . port of every pod declaring named port NAME (egress
//                   named ports resolve at the destination, which is remote).
//
// Why the inet forward hook covers every backend: routed traffic (host-gw, vxlan, udp, bgp,
// weft-routed) is forwarded at L3 by the host; pods on one weft bridge talk at L2, which the inet
// hooks see only through br_netfilter (bridge-nf-call-iptables=1, and bridge-nf-call-ip6tables=1
// for IPv6, per namespace, on by default here). A `bridge`-family table cannot do the same job on
// kernels without nf_conntrack_bridge (it cannot tell replies from new connections), so the
// enforcer checks the sysctls instead.
// Ingress is enforced on the receiver's host and egress on the sender's: each host only has
// chains for its own endpoints.
import { createHash } from 'node:crypto';
import { type Cidr, type IP, type IPFamily, formatCidr, formatIP, networkOf } from '../net/ip.js';
import { type DenyDirection, formatDenyPrefix } from './deny-log.js';
import { namespaceLabels, selectorMatches } from './evaluate.js';
import type { Endpoint, LabelSelector, NetworkPolicy, Peer, PolicyPort, PolicyWorld } from './model.js';

export const POLICY_TABLE = 'weft-policy';
export const POLICY_FAMILY = 'inet';

export interface CompiledSet {
  readonly name: string;
  /** nft type, e.g. `ipv4_addr` or `ipv4_addr : verdict` for a map. */
  readonly type: string;
  readonly kind: 'set' | 'map';
  readonly comment: string;
  /** Elements as nft writes them (`10.0.0.2`, `10.0.0.2 . tcp . 80`, `10.0.0.2 : jump ing-…`). */
  readonly elements: readonly string[];
  /** Every element carries a counter (nft `counter` in the set's declaration). */
  readonly counter?: boolean;
}

/** What one rule's counter counts: packets allowed or denied in a direction, for these policies. */
export interface RuleCounter {
  readonly direction: Direction;
  readonly verdict: 'allowed' | 'denied';
  /** "ns/name": the policy whose rule allowed, or every policy isolating the chain's endpoints (denied). */
  readonly policies: readonly string[];
  /** The rule's comment as the kernel lists it: a listing whose rule says otherwise is not this rule. */
  readonly comment: string;
}

/** Where the table's counters are and what they mean, for reading them back (counters.ts). */
export interface CounterLayout {
  /** Per chain, one entry per rule: its counter's meaning, undefined for rules without one. */
  readonly rules: ReadonlyMap<string, readonly (RuleCounter | undefined)[]>;
  /** Sets and maps with element counters: `seen` counts what an endpoint's chain judged, `denied` what it dropped. */
  readonly elementSets: ReadonlyMap<string, { readonly direction: Direction; readonly counts: 'seen' | 'denied' }>;
  /** Address (as nft lists it) → "ns/pod", for this host's endpoints. */
  readonly addresses: ReadonlyMap<string, string>;
  /** "ns/name" of every policy isolating some local endpoint, per direction (series exported even at zero). */
  readonly isolating: ReadonlyMap<Direction, ReadonlySet<string>>;
  /** "ns/pod" of every local endpoint isolated, per direction. */
  readonly isolated: ReadonlyMap<Direction, ReadonlySet<string>>;
  /** "ns/name" of every policy in the world: counts kept for others are dropped. */
  readonly policies: ReadonlySet<string>;
  /** "ns/pod" of every local endpoint: counts kept for others are dropped. */
  readonly pods: ReadonlySet<string>;
}

export interface CompiledChain {
  readonly name: string;
  /** The base chain's header line(s) (hook), empty for regular chains. */
  readonly header: string;
  readonly rules: readonly string[];
  /** Parallel to rules: what each rule's counter counts (absent: none counts). */
  readonly counters?: readonly (RuleCounter | undefined)[];
}

export interface CompiledPolicy {
  readonly sets: ReadonlyMap<string, CompiledSet>;
  readonly chains: ReadonlyMap<string, CompiledChain>;
  /** The NFLOG group denied packets are logged to (0: not logged). */
  readonly logGroup: number;
  readonly layout: CounterLayout;
  /** The table without set/map elements: equal structures differ only by element updates. */
  readonly structure: string;
}

type Direction = DenyDirection;

/** weftd's default --flow-log-group: the NFLOG group of denied packets. */
export const DEFAULT_DENY_LOG_GROUP = 7;
/**
 * One named limit for every chain's log rule: a flood of denied packets logs at most this many a
 * second per host, however many chains it hits (excess packets are still counted and dropped).
 */
export const DENY_LOG_LIMIT = 'deny-log';
export const DENY_LOG_RATE = 'rate 100/second burst 20 packets';

export interface CompileOptions {
  /** NFLOG group for denied packets; 0 turns the log rules off (default DEFAULT_DENY_LOG_GROUP). */
  readonly logGroup?: number;
}

const hash = (s: string, n = 12): string => createHash('sha256').update(s).digest('hex').slice(0, n);

const addrType = (f: IPFamily): string => (f === 4 ? 'ipv4_addr' : 'ipv6_addr');
const addrKw = (f: IPFamily): string => (f === 4 ? 'ip' : 'ip6');

function canonicalSelector(s: LabelSelector | undefined): unknown {
  if (!s) return null;
  return {
    l: Object.entries(s.matchLabels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    e: s.matchExpressions.map((r) => [r.key, r.operator, [...r.values].sort()]).sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1)),
  };
}

/** Identity of a pod peer: equal peers (even in different policies) share one set. */
function podPeerKey(peer: Extract<Peer, { type: 'pods' }>, policyNs: string): string {
  return JSON.stringify({
    ns: peer.namespaceSelector ? null : policyNs,
    nsSel: canonicalSelector(peer.namespaceSelector),
    podSel: canonicalSelector(peer.podSelector),
  });
}

/** A comment's text as nft keeps and lists it: printable ASCII, no quotes, at most 120 characters. */
function nftText(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '').replace(/["\\]/g, '').slice(0, 120);
}

function nftString(s: string): string {
  return `"${nftText(s)}"`;
}

function describeSelector(s: LabelSelector | undefined): string {
  if (!s) return '';
  const parts = [
    ...Object.entries(s.matchLabels).map(([k, v]) => `${k}=${v}`),
    ...s.matchExpressions.map((r) => (r.values.length > 0 ? `${r.key} ${r.operator} (${r.values.join(',')})` : `${r.key} ${r.operator}`)),
  ];
  return parts.length > 0 ? parts.join(' ') : 'all';
}

/** What a pod peer set holds, for people reading `nft list`. */
function describePodPeer(peer: Extract<Peer, { type: 'pods' }>, policyNs: string): string {
  const ns = peer.namespaceSelector ? `namespaces ${describeSelector(peer.namespaceSelector)}` : `namespace ${policyNs}`;
  return `pods ${describeSelector(peer.podSelector) || 'all'} in ${ns}`;
}

const protoKw = (p: PolicyPort['protocol']): string => p.toLowerCase();

class Builder {
  readonly sets = new Map<string, CompiledSet>();
  readonly chains = new Map<string, CompiledChain>();
  private readonly podSets = new Map<string, { peer: Extract<Peer, { type: 'pods' }>; ns: string; base: string }>();
  private readonly namedPortSets = new Set<string>();
  /** Peer objects are shared by every chain their policy reaches: their keys are worked out once. */
  private readonly peerKeys = new Map<Extract<Peer, { type: 'pods' }>, Map<string, string>>();
  /** Endpoints by namespace and namespaces' labels: a peer set looks only at namespaces it selects. */
  private readonly endpointsByNs = new Map<string, Endpoint[]>();
  private readonly nsLabels = new Map<string, Readonly<Record<string, string>>>();
  private readonly addresses = new Map<Endpoint, Map<IPFamily, string[]>>();
  /** Policies by namespace, each list sorted by name: chains list their rules in this order. */
  readonly policiesByNs = new Map<string, NetworkPolicy[]>();

  constructor(readonly world: PolicyWorld, readonly families: readonly IPFamily[]) {
    for (const e of world.endpoints) {
      const list = this.endpointsByNs.get(e.namespace);
      if (list) list.push(e); else this.endpointsByNs.set(e.namespace, [e]);
    }
    for (const p of [...world.policies].sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0))) {
      const list = this.policiesByNs.get(p.namespace);
      if (list) list.push(p); else this.policiesByNs.set(p.namespace, [p]);
    }
  }

  /** The endpoint's addresses of one family, as nft writes them. */
  addressesOf(e: Endpoint, f: IPFamily): readonly string[] {
    let byFamily = this.addresses.get(e);
    if (!byFamily) {
      byFamily = new Map();
      for (const ip of e.ips) {
        const list = byFamily.get(ip.family);
        if (list) list.push(formatIP(ip)); else byFamily.set(ip.family, [formatIP(ip)]);
      }
      this.addresses.set(e, byFamily);
    }
    return byFamily.get(f) ?? [];
  }

  /** The endpoints a pod peer covers (the same answer as evaluate's podPeerMatches). */
  podPeerMembers(peer: Extract<Peer, { type: 'pods' }>, policyNs: string): Endpoint[] {
    const nsSel = peer.namespaceSelector;
    const namespaces = nsSel
      ? [...this.endpointsByNs.keys()].filter((n) => {
        let labels = this.nsLabels.get(n);
        if (!labels) { labels = namespaceLabels(n, this.world.namespaces); this.nsLabels.set(n, labels); }
        return selectorMatches(nsSel, labels);
      })
      : [policyNs];
    const podSel = peer.podSelector;
    return namespaces.flatMap((n) => (this.endpointsByNs.get(n) ?? []).filter((e) => !podSel || selectorMatches(podSel, e.labels)));
  }

  podSetName(peer: Extract<Peer, { type: 'pods' }>, policyNs: string, family: IPFamily): string {
    let keys = this.peerKeys.get(peer);
    if (!keys) { keys = new Map(); this.peerKeys.set(peer, keys); }
    let key = keys.get(policyNs);
    if (key === undefined) { key = podPeerKey(peer, policyNs); keys.set(policyNs, key); }
    let s = this.podSets.get(key);
    if (!s) {
      s = { peer, ns: policyNs, base: `pods-${hash(key, 10)}` };
      this.podSets.set(key, s);
    }
    return `${s.base}-${family}`;
  }

  namedPortSetName(name: string, family: IPFamily): string {
    this.namedPortSets.add(name);
    return `np-${name}-${family}`;
  }

  /** Creates the peer and named-port sets referenced by the chains, with their members. */
  finishSets(): void {
    for (const { peer, ns, base } of this.podSets.values()) {
      const members = this.podPeerMembers(peer, ns);
      for (const f of this.families) {
        this.addSet({
          name: `${base}-${f}`, kind: 'set', type: addrType(f), comment: describePodPeer(peer, ns),
          elements: members.flatMap((e) => this.addressesOf(e, f)),
        });
      }
    }
    for (const name of this.namedPortSets) {
      for (const f of this.families) {
        const elements: string[] = [];
        for (const e of this.world.endpoints) {
          const np = e.namedPorts?.[name];
          if (!np) continue;
          for (const ip of e.ips) if (ip.family === f) elements.push(`${formatIP(ip)} . ${protoKw(np.protocol)} . ${np.port}`);
        }
        this.addSet({ name: `np-${name}-${f}`, kind: 'set', type: `${addrType(f)} . inet_proto . inet_service`, comment: `named port ${name}`, elements });
      }
    }
  }

  addSet(s: CompiledSet): void {
    this.sets.set(s.name, { ...s, elements: [...new Set(s.elements)].sort() });
  }
}

/** Match expressions for the rule's ports as seen at the destination, per family; undefined = matches nothing. */
function portExprs(b: Builder, ports: readonly PolicyPort[], dir: Direction, ep: Endpoint, family: IPFamily): string[] | undefined {
  if (ports.length === 0) return [''];
  const out: string[] = [];
  const byProto = new Map<string, { any: boolean; ranges: string[] }>();
  const group = (p: string) => {
    let g = byProto.get(p);
    if (!g) { g = { any: false, ranges: [] }; byProto.set(p, g); }
    return g;
  };
  for (const p of ports) {
    const proto = protoKw(p.protocol);
    switch (p.port.type) {
      case 'any': group(proto).any = true; break;
      case 'number': group(proto).ranges.push(p.port.port === p.port.endPort ? `${p.port.port}` : `${p.port.port}-${p.port.endPort}`); break;
      case 'named': {
        if (dir === 'ingress') {
          // The destination is this endpoint: resolve now. A name it does not declare (or declares
          // for another protocol) matches nothing, as in Kubernetes.
          const np = ep.namedPorts?.[p.port.name];
          if (np && np.protocol === p.protocol) group(proto).ranges.push(`${np.port}`);
        } else {
          out.push(`meta l4proto ${proto} ${addrKw(family)} daddr . meta l4proto . th dport @${b.namedPortSetName(p.port.name, family)}`);
        }
        break;
      }
    }
  }
  for (const [proto, g] of [...byProto].sort(([a], [b2]) => (a < b2 ? -1 : 1))) {
    if (g.any) out.push(`meta l4proto ${proto}`);
    else if (g.ranges.length > 0) {
      const uniq = [...new Set(g.ranges)];
      out.push(`meta l4proto ${proto} th dport ${uniq.length === 1 ? uniq[0] : `{ ${uniq.join(', ')} }`}`);
    }
  }
  return out.length > 0 ? out : undefined;
}

function peerExprs(b: Builder, peers: 'all' | readonly Peer[], dir: Direction, policyNs: string, family: IPFamily): string[] {
  if (peers === 'all') return [''];
  const side = dir === 'ingress' ? 'saddr' : 'daddr';
  const kw = addrKw(family);
  const out: string[] = [];
  for (const peer of peers) {
    if (peer.type === 'pods') {
      out.push(`${kw} ${side} @${b.podSetName(peer, policyNs, family)}`);
    } else if (peer.cidr.ip.family === family) {
      const except = peer.except.length > 0 ? ` ${kw} ${side} != { ${peer.except.map(formatCidr).join(', ')} }` : '';
      out.push(`${kw} ${side} ${formatCidr(peer.cidr)}${except}`);
    }
  }
  return out;
}

/** The policies isolating an endpoint in one direction, in namespace/name order. */
function isolatingPolicies(b: Builder, ep: Endpoint, dir: Direction): NetworkPolicy[] {
  // A policy selects only pods of its own namespace.
  return (b.policiesByNs.get(ep.namespace) ?? [])
    .filter((p) => (dir === 'ingress' ? p.types.ingress : p.types.egress) && selectorMatches(p.podSelector, ep.labels));
}

const policyName = (p: NetworkPolicy): string => `${p.namespace}/${p.name}`;

/**
 * The rules of one endpoint's chain in one direction, given the policies isolating it (not none),
 * with what each rule's counter counts.
 */
function chainRules(b: Builder, ep: Endpoint, dir: Direction, isolating: readonly NetworkPolicy[], logGroup: number): { rules: string[]; counters: (RuleCounter | undefined)[] } {
  const verdict = dir === 'ingress' ? 'accept' : 'return';
  // Keyed by the rule's text: a rule written twice (equal peers or ports) is one rule.
  const lines = new Map<string, RuleCounter | undefined>();
  for (const p of isolating) {
    (dir === 'ingress' ? p.ingress : p.egress).forEach((rule, i) => {
      const comment = nftText(`${policyName(p)} ${dir}[${i}]`);
      const counter: RuleCounter = { direction: dir, verdict: 'allowed', policies: [policyName(p)], comment };
      for (const f of b.families) {
        const ports = portExprs(b, rule.ports, dir, ep, f);
        if (!ports) continue;
        for (const peer of peerExprs(b, rule.peers, dir, p.namespace, f)) {
          for (const port of ports) {
            const line = [peer, port, 'counter', verdict, `comment "${comment}"`].filter((s) => s !== '').join(' ');
            if (!lines.has(line)) lines.set(line, counter);
          }
        }
      }
    });
  }
  // The default deny. The log rule has no verdict (a packet over the rate limit skips only the
  // log); the drops that follow count per policy (the rule) and per endpoint (the deny set's
  // element the lookup hits). Every packet here came through this family's map, whose keys the
  // deny set shares, so the last drop is there only for a table someone else edited.
  const names = isolating.map(policyName);
  if (logGroup > 0) lines.set(`limit name "${DENY_LOG_LIMIT}" log prefix "${formatDenyPrefix(dir, names)}" group ${logGroup}`, undefined);
  const comment = nftText(`${dir} not allowed by ${names.join(', ')}`);
  const denied: RuleCounter = { direction: dir, verdict: 'denied', policies: names, comment };
  for (const f of b.families) lines.set(`${addrKw(f)} ${dir === 'ingress' ? 'daddr' : 'saddr'} @${dir}-deny-${f} counter drop comment "${comment}"`, denied);
  lines.set(`counter drop comment "${comment}"`, denied);
  return { rules: [...lines.keys()], counters: [...lines.values()] };
}

/** IPv4 always; IPv6 once some endpoint has an IPv6 address or the guard an IPv6 subnet. */
function familiesOf(world: PolicyWorld, guard: LocalGuard | undefined): IPFamily[] {
  const fams = new Set<IPFamily>([4]);
  for (const e of world.endpoints) for (const ip of e.ips) fams.add(ip.family);
  // A node whose first IPv6 pod is not known yet must guard its IPv6 subnet too.
  for (const c of guard?.subnets ?? []) fams.add(c.ip.family);
  return [...fams].sort();
}

/**
 * Neighbour discovery is IPv6's ARP, but it travels in IP packets, so the forward hook sees what
 * the bridge passes between pods (through br_netfilter). Conntrack leaves it untracked; a
 * solicitation carries the asking pod's own address as its source and an advertisement the
 * answering pod's, so without this rule the vmaps would send them into the policy chains and an
 * isolated pod could not resolve its neighbours on the bridge at all. Hop limit 255 (RFC 4861
 * §7.1) holds only for packets nobody routed (a router lowers it before the forward hook), so
 * the rule opens nothing beyond the link. Router solicitations, advertisements and redirects
 * are exchanged with the host (input and output, not forward): pods have none to forward.
 */
export const ND_ACCEPT = 'icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept comment "neighbour discovery"';

/**
 * Pods on one bridge share a link, so each can reach the others at their link-local addresses,
 * which no policy can name and the maps do not hold: left alone, an isolated pod would be
 * reachable (and an egress-isolated one able to send) through fe80::/10. The kernel never routes
 * link-local traffic, so only bridged pod-to-pod packets match. Multicast from a link-local
 * source (MLD) is left to pass, as multicast is for IPv4 too.
 */
export const LINK_LOCAL_DROP = [
  'ip6 saddr fe80::/10 ip6 daddr != ff00::/8 drop comment "link-local between pods: no policy can name it"',
  'ip6 daddr fe80::/10 drop comment "link-local between pods: no policy can name it"',
] as const;

/**
 * The guard for pods weftd does not know yet (a standalone ADD whose record weftd has not
 * published): while any policy exists, forwarded traffic from or to an address of this node's
 * pod subnets that is not a known local workload address is dropped. A new pod therefore starts
 * denied and gets its verdicts in the same element update that makes it known.
 */
export interface LocalGuard {
  /** This node's pod subnets. */
  readonly subnets: readonly Cidr[];
  /** Local workload addresses beyond the policy endpoints (attachments without a pod name). */
  readonly extraKnown: readonly IP[];
}

export function compilePolicies(world: PolicyWorld, host: string, guard?: LocalGuard, opts: CompileOptions = {}): CompiledPolicy {
  const logGroup = opts.logGroup ?? DEFAULT_DENY_LOG_GROUP;
  const families = familiesOf(world, guard);
  const b = new Builder(world, families);
  const maps: Record<Direction, Map<IPFamily, string[]>> = { ingress: new Map(), egress: new Map() };
  const denySets: Record<Direction, Map<IPFamily, string[]>> = { ingress: new Map(), egress: new Map() };
  const local = world.endpoints.filter((e) => e.host === host);
  const podName = (e: Endpoint) => `${e.namespace}/${e.pod}`;
  const isolatingNames = new Map<Direction, Set<string>>();
  const isolated = new Map<Direction, Set<string>>();
  const elementSets = new Map<string, { direction: Direction; counts: 'seen' | 'denied' }>();
  // Endpoints isolated by the same policies (and, for ingress, declaring the same named ports,
  // which ingress rules resolve per endpoint) get the same chain: its rules are built once.
  const policyIds = new Map(world.policies.map((p, i) => [p, i]));
  for (const dir of ['ingress', 'egress'] as const) {
    for (const f of families) { maps[dir].set(f, []); denySets[dir].set(f, []); }
    const chainFor = new Map<string, string>();
    const names = new Set<string>();
    const pods = new Set<string>();
    for (const ep of local) {
      const isolating = isolatingPolicies(b, ep, dir);
      if (isolating.length === 0) continue;
      const key = `${isolating.map((p) => policyIds.get(p)).join(',')}|${dir === 'ingress' ? JSON.stringify(ep.namedPorts ?? null) : ''}`;
      let name = chainFor.get(key);
      if (name === undefined) {
        const { rules, counters } = chainRules(b, ep, dir, isolating, logGroup);
        name = `${dir === 'ingress' ? 'ing' : 'egr'}-${hash(rules.join('\n'))}`;
        b.chains.set(name, { name, header: '', rules, counters });
        chainFor.set(key, name);
        for (const p of isolating) names.add(policyName(p));
      }
      pods.add(podName(ep));
      for (const f of families) {
        for (const a of b.addressesOf(ep, f)) {
          maps[dir].get(f)?.push(`${a} : jump ${name}`);
          denySets[dir].get(f)?.push(a);
        }
      }
    }
    isolatingNames.set(dir, names);
    isolated.set(dir, pods);
    for (const f of families) {
      b.addSet({ name: `${dir}-${f}`, kind: 'map', type: `${addrType(f)} : verdict`, comment: `${dir} chain by local endpoint address`, elements: maps[dir].get(f) ?? [], counter: true });
      b.addSet({ name: `${dir}-deny-${f}`, kind: 'set', type: addrType(f), comment: `local endpoints isolated for ${dir}: packets denied`, elements: denySets[dir].get(f) ?? [], counter: true });
      elementSets.set(`${dir}-${f}`, { direction: dir, counts: 'seen' });
      elementSets.set(`${dir}-deny-${f}`, { direction: dir, counts: 'denied' });
    }
  }
  b.finishSets();
  const forward: string[] = ['ct state established,related accept', 'ct state invalid drop'];
  if (families.includes(6)) {
    forward.push(ND_ACCEPT);
    // Only where some local pod is isolated: elsewhere there is nothing to get around.
    if ((isolated.get('ingress')?.size ?? 0) + (isolated.get('egress')?.size ?? 0) > 0) forward.push(...LINK_LOCAL_DROP);
  }
  if (guard && guard.subnets.length > 0 && world.policies.length > 0) {
    for (const f of families) {
      const known = [...local.flatMap((e) => e.ips), ...guard.extraKnown].filter((ip) => ip.family === f).map(formatIP);
      b.addSet({ name: `local-${f}`, kind: 'set', type: addrType(f), comment: 'known local workload addresses', elements: known });
      for (const net of guard.subnets.filter((c) => c.ip.family === f)) {
        const cidr = formatCidr(networkOf(net));
        forward.push(`${addrKw(f)} saddr ${cidr} ${addrKw(f)} saddr != @local-${f} drop comment "unknown local pod"`);
        forward.push(`${addrKw(f)} daddr ${cidr} ${addrKw(f)} daddr != @local-${f} drop comment "unknown local pod"`);
      }
    }
  }
  for (const f of families) forward.push(`${addrKw(f)} saddr vmap @egress-${f}`);
  for (const f of families) forward.push(`${addrKw(f)} daddr vmap @ingress-${f}`);
  b.chains.set('forward', { name: 'forward', header: 'type filter hook forward priority filter; policy accept;', rules: forward });
  const sets = new Map([...b.sets].sort(([x], [y]) => (x < y ? -1 : 1)));
  const chains = new Map([...b.chains].sort(([x], [y]) => (x === 'forward' ? -1 : y === 'forward' ? 1 : x < y ? -1 : 1)));
  const addresses = new Map<string, string>();
  for (const e of local) for (const ip of e.ips) addresses.set(formatIP(ip), podName(e));
  const layout: CounterLayout = {
    rules: new Map([...chains.values()].flatMap((c) => (c.counters ? [[c.name, c.counters] as const] : []))),
    elementSets, addresses, isolating: isolatingNames, isolated,
    policies: new Set(world.policies.map(policyName)),
    pods: new Set(local.map(podName)),
  };
  const compiled = { sets, chains, logGroup, layout, structure: '' };
  return { ...compiled, structure: renderTable(compiled, false) };
}

function renderSet(s: CompiledSet, withElements: boolean): string {
  const lines = [`\t${s.kind} ${s.name} {`, `\t\ttype ${s.type}`];
  if (s.counter) lines.push('\t\tcounter');
  lines.push(`\t\tcomment ${nftString(s.comment)}`);
  if (withElements && s.elements.length > 0) lines.push(`\t\telements = { ${s.elements.join(',\n\t\t\t')} }`);
  lines.push('\t}');
  return lines.join('\n');
}

function renderTable(c: Omit<CompiledPolicy, 'structure'>, withElements: boolean): string {
  const parts = [`table ${POLICY_FAMILY} ${POLICY_TABLE} {`];
  if (c.logGroup > 0 && [...c.chains.values()].some((ch) => ch.counters)) {
    parts.push(`\tlimit ${DENY_LOG_LIMIT} {`, `\t\tcomment "log rate of denied packets, all chains together"`, `\t\t${DENY_LOG_RATE}`, '\t}');
  }
  for (const s of c.sets.values()) parts.push(renderSet(s, withElements));
  for (const ch of c.chains.values()) {
    parts.push(`\tchain ${ch.name} {`);
    if (ch.header) parts.push(`\t\t${ch.header}`);
    for (const r of ch.rules) parts.push(`\t\t${r}`);
    parts.push('\t}');
  }
  parts.push('}');
  return parts.join('\n') + '\n';
}

/** One transaction that replaces weft's table (creating it first, so the delete cannot fail). */
export function renderReplace(c: CompiledPolicy): string {
  return `add table ${POLICY_FAMILY} ${POLICY_TABLE}\ndelete table ${POLICY_FAMILY} ${POLICY_TABLE}\n${renderTable(c, true)}`;
}

/** One transaction removing weft's table (idempotent). */
export function renderRemove(): string {
  return `add table ${POLICY_FAMILY} ${POLICY_TABLE}\ndelete table ${POLICY_FAMILY} ${POLICY_TABLE}\n`;
}

export interface ElementDiff {
  readonly added: number;
  readonly removed: number;
  /** The nft script, empty when nothing changed. */
  readonly script: string;
}

/** Element updates turning `prev` into `next`; only valid when their structures are equal. */
export function diffElements(prev: CompiledPolicy, next: CompiledPolicy): ElementDiff {
  const dels: string[] = [];
  const adds: string[] = [];
  let added = 0;
  let removed = 0;
  for (const s of next.sets.values()) {
    const before = new Set(prev.sets.get(s.name)?.elements ?? []);
    const after = new Set(s.elements);
    const gone = [...before].filter((e) => !after.has(e));
    const fresh = s.elements.filter((e) => !before.has(e));
    // A map element is deleted by its key alone.
    const key = (e: string) => (s.kind === 'map' ? e.slice(0, e.indexOf(' : ')) : e);
    if (gone.length > 0) dels.push(`delete element ${POLICY_FAMILY} ${POLICY_TABLE} ${s.name} { ${gone.map(key).join(', ')} }`);
    if (fresh.length > 0) adds.push(`add element ${POLICY_FAMILY} ${POLICY_TABLE} ${s.name} { ${fresh.join(', ')} }`);
    added += fresh.length;
    removed += gone.length;
  }
  const lines = [...dels, ...adds];
  return { added, removed, script: lines.length > 0 ? lines.join('\n') + '\n' : '' };
}

/** What the kernel should list for the table: per set its element count, per chain its rule count. */
export interface TableShape {
  readonly sets: Record<string, number>;
  readonly chains: Record<string, number>;
}

export function expectedShape(c: CompiledPolicy): TableShape {
  const sets: Record<string, number> = {};
  for (const s of c.sets.values()) sets[s.name] = s.elements.length;
  const chains: Record<string, number> = {};
  for (const ch of c.chains.values()) chains[ch.name] = ch.rules.length;
  return { sets, chains };
}
