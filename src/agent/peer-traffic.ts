// Per-peer-host traffic: what this host forwards to and receives from each peer's pod subnet.
//
// Why nftables. The kernel keeps no per-destination counters on a vxlan device (nor on the udp
// backend's tun, nor on the underlay interface host-gw and bgp route through); route realms
// (`ip route … realm N`, /proc/net/rt_acct) are 256 classes in one array shared by every
// namespace, counted only on input routes, so they cannot tell a peer on one host from the
// same peer on another (a lab has many hosts on one kernel). Netfilter can: weftd's own table
// `inet weft` gets two maps, peer subnet → named counter, and one base chain on the forward hook
// with two rules (src/agent/traffic-rules.ts):
//
//   ip daddr != LOCAL ip daddr NETWORK counter name ip daddr map @peer_tx
//   ip saddr != LOCAL ip saddr NETWORK counter name ip saddr map @peer_rx
//
// Per packet that is two compares on each rule and at most one map lookup: a packet to a peer
// fails the second rule's first compare (its source is local), a packet from a peer the first
// rule's; pod-to-pod on this host and traffic to or from outside the cluster network look up
// nothing. A lookup that misses (a subnet with no lease) ends the rule and counts nothing. The
// chain's priority is filter + 10, after weft-policy's forward chain (priority filter), so what
// a policy drops is not counted as sent.
//
// What is counted: the IP packets (header and payload) of pod traffic this host forwards, at
// the size the kernel handles them — a GSO/GRO batch is one packet of up to 64 KiB, so packets
// are batches, not wire packets, and bytes leave out the overlay's own headers (VXLAN's 50
// bytes, the udp backend's 28), which are added after the hook. The host's own traffic to
// remote pods (not forwarded) is not counted. The same works on every backend weftd runs
// (vxlan, udp, host-gw, bgp): all of them forward pod traffic through this host at L3.
//
// This module is the pure part: counter names, the rules, and the nft batch that makes the
// kernel's counters equal to the peers (elements and counters only — the maps and rules are the
// agent table's, rewritten whole with it; `flush table` keeps map elements and counters).
import { type Cidr, type IP, formatCidr, formatIP, tryParseCidr } from '../net/ip.js';
import type { NftCounter } from '../netlink/nft-objects.js';

export const PEER_TX_MAP = 'peer_tx';
export const PEER_RX_MAP = 'peer_rx';
export const PEER_CHAIN = 'peers';
export const PEER_TX_COMMENT = 'weft: bytes to peers';
export const PEER_RX_COMMENT = 'weft: bytes from peers';

export type PeerDirection = 'tx' | 'rx';

/** `peer-tx-10.244.3.0-24`: the direction and the subnet, as nft names allow (no slash). */
export function peerCounterName(dir: PeerDirection, subnet: Cidr): string {
  return `peer-${dir}-${formatCidr(subnet).replace('/', '-')}`;
}

export function parsePeerCounterName(name: string): { dir: PeerDirection; subnet: Cidr } | undefined {
  const m = /^peer-(tx|rx)-([0-9a-f.:]+)-(\d{1,3})$/.exec(name);
  if (!m) return undefined;
  const subnet = tryParseCidr(`${m[2]!}/${m[3]!}`);
  return subnet ? { dir: m[1] as PeerDirection, subnet } : undefined;
}

/**
 * The maps, chain and rules weftd's table carries for the peer counters (after `add table` and
 * `flush table`). `add map` leaves an existing map and its elements as they are.
 */
export function peerAccountingScript(table: string, network: Cidr, local: Cidr): string[] {
  const t = `inet ${table}`;
  const net = formatCidr(network);
  const own = formatCidr(local);
  return [
    `add map ${t} ${PEER_TX_MAP} { type ipv4_addr : counter; flags interval; }`,
    `add map ${t} ${PEER_RX_MAP} { type ipv4_addr : counter; flags interval; }`,
    `add chain ${t} ${PEER_CHAIN} { type filter hook forward priority filter + 10; policy accept; }`,
    `add rule ${t} ${PEER_CHAIN} ip daddr != ${own} ip daddr ${net} counter name ip daddr map @${PEER_TX_MAP} comment "${PEER_TX_COMMENT}"`,
    `add rule ${t} ${PEER_CHAIN} ip saddr != ${own} ip saddr ${net} counter name ip saddr map @${PEER_RX_MAP} comment "${PEER_RX_COMMENT}"`,
  ];
}

/** How many rules peerAccountingScript adds. */
export const PEER_RULES = 2;

/** A peer as the counters need it: its subnet and underlay address (from its lease). */
export interface PeerHost {
  readonly subnet: Cidr;
  readonly publicIP: IP;
}

/**
 * The nft batch that makes the table's peer counters equal to `peers`, given what the kernel
 * has (its `peer-…` counters with their use counts); undefined when nothing is to change.
 *   - a peer without a counter: the counter, then its map element;
 *   - a counter nobody uses (its element is gone — someone deleted it, or the table was
 *     rewritten by hand): the element again;
 *   - a counter of no current peer: its element (while it has one), then the counter.
 * Deletions come first, so a subnet handed from one peer to another in one go never has two
 * overlapping elements. IPv4 only: leases carry one IPv4 subnet.
 */
export function peerCountersPlan(table: string, peers: readonly PeerHost[], present: readonly NftCounter[]): string | undefined {
  const t = `inet ${table}`;
  const want = new Map<string, { dir: PeerDirection; subnet: Cidr }>();
  for (const p of peers) {
    if (p.subnet.ip.family !== 4) continue;
    for (const dir of ['tx', 'rx'] as const) want.set(peerCounterName(dir, p.subnet), { dir, subnet: p.subnet });
  }
  const mapOf = (dir: PeerDirection) => (dir === 'tx' ? PEER_TX_MAP : PEER_RX_MAP);
  const drop: string[] = [];
  const add: string[] = [];
  const have = new Set<string>();
  for (const c of present) {
    const parsed = parsePeerCounterName(c.name);
    if (!parsed) continue;
    have.add(c.name);
    if (!want.has(c.name)) {
      if (c.use > 0) drop.push(`delete element ${t} ${mapOf(parsed.dir)} { ${formatCidr(parsed.subnet)} }`);
      drop.push(`delete counter ${t} ${c.name}`);
    } else if (c.use === 0) {
      add.push(`add element ${t} ${mapOf(parsed.dir)} { ${formatCidr(parsed.subnet)} : "${c.name}" }`);
    }
  }
  for (const [name, { dir, subnet }] of want) {
    if (have.has(name)) continue;
    add.push(`add counter ${t} ${name}`, `add element ${t} ${mapOf(dir)} { ${formatCidr(subnet)} : "${name}" }`);
  }
  const lines = [...drop, ...add];
  return lines.length > 0 ? lines.join('\n') + '\n' : undefined;
}

export interface PeerSeries {
  readonly labels: { readonly peer_subnet: string; readonly peer_ip: string };
  readonly tx: { readonly bytes: number; readonly packets: number };
  readonly rx: { readonly bytes: number; readonly packets: number };
}

/**
 * One series set per current peer whose two counters exist, labelled with its lease's subnet and
 * public IP. Counters of peers that are gone (their removal pending) are left out, so a peer's
 * series go with its lease.
 */
export function peerSeries(peers: readonly PeerHost[], counters: readonly NftCounter[]): PeerSeries[] {
  const byName = new Map(counters.map((c) => [c.name, c]));
  const out: PeerSeries[] = [];
  for (const p of peers) {
    const tx = byName.get(peerCounterName('tx', p.subnet));
    const rx = byName.get(peerCounterName('rx', p.subnet));
    if (!tx || !rx) continue;
    out.push({
      labels: { peer_subnet: formatCidr(p.subnet), peer_ip: formatIP(p.publicIP) },
      tx: { bytes: tx.bytes, packets: tx.packets },
      rx: { bytes: rx.bytes, packets: rx.packets },
    });
  }
  return out;
}
