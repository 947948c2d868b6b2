// Per-pod traffic from the kernel's interface counters: which host-side veth belongs to which
// endpoint record, and what its counters mean from the pod's side.
//
// Finding a pod's veth. The record (src/policy/endpoint-record.ts) names the container, its
// interface and its addresses, not the host end: weft-bridge names that end at random, and
// weft-routed's name is weft-routed's business. Two ways were open:
//   - the CNI result cache (interfaces[] with the host end's name): but where it lives is the
//     runtime's choice (containerd, CRI-O, podman and `weftctl cni` each have their own
//     cacheDir), it is absent when a runtime does not cache, and weftd would have to be told;
//   - the veth itself: the host end's IFLA_LINK and IFLA_LINK_NETNSID name its peer (an index
//     in the pod's namespace, and that namespace by the id ours gives it). One RTM_GETADDR dump
//     in that namespace (IFA_TARGET_NETNSID, no path or setns needed) gives the peer's
//     addresses, and IPAM makes a pod address unique on a host, so it matches one record.
// The second reads only the kernel weftd already talks to, works for every plugin that makes a
// veth and for pods created before weftd started, and needs nobody's configuration: it is what
// PodLinkFinder does. Each veth is asked about once (its addresses are cached by index, peer and
// namespace id); only veths with no address yet are asked again, and only while some record is
// still unmatched (a pod whose ADD has not configured its address yet).
import type { Link, LinkStats } from '../netlink/link.js';
import type { Netlink } from '../netlink/index.js';
import { formatIP } from '../net/ip.js';
import type { EndpointRecord } from '../policy/endpoint-record.js';

/** The labels of a pod's series. Non-Kubernetes workloads: pod = container id, namespace "". */
export interface PodLabels {
  readonly namespace: string;
  readonly pod: string;
  /** The interface inside the pod (the record's ifname, e.g. eth0). */
  readonly interface: string;
}

export function podLabels(rec: Pick<EndpointRecord, 'namespace' | 'pod' | 'containerID' | 'ifname'>): PodLabels {
  return rec.pod !== undefined
    ? { namespace: rec.namespace ?? '', pod: rec.pod, interface: rec.ifname }
    : { namespace: '', pod: rec.containerID, interface: rec.ifname };
}

/** A host-side veth whose peer lives in another namespace. */
export interface HostVeth {
  readonly index: number;
  readonly name: string;
  /** The peer's index in its own namespace. */
  readonly peerIndex: number;
  /** The peer's namespace, as the host namespace numbers it. */
  readonly netnsId: number;
  readonly stats: LinkStats | undefined;
}

export function hostVeths(links: readonly Link[]): HostVeth[] {
  const out: HostVeth[] = [];
  for (const l of links) {
    if (l.kind !== 'veth' || l.parentIndex === undefined || l.linkNetnsId === undefined) continue;
    out.push({ index: l.index, name: l.name, peerIndex: l.parentIndex, netnsId: l.linkNetnsId, stats: l.stats });
  }
  return out;
}

/** Identifies one veth across dumps: an index could be reused by a later device. */
export function vethKey(v: Pick<HostVeth, 'index' | 'peerIndex' | 'netnsId'>): string {
  return `${v.index}/${v.netnsId}/${v.peerIndex}`;
}

export interface PodLink {
  readonly labels: PodLabels;
  readonly record: EndpointRecord;
  readonly veth: HostVeth;
}

/**
 * Pairs records with veths by address (peerIPs: a veth's key → its peer's addresses). A record
 * matches the veth whose peer holds one of its addresses; were two to (a leaked namespace still
 * holding a reused address), the newer device — the higher index — wins. Two records with the
 * same labels (a sandbox recreated before the old record went) keep the first, so no series is
 * ever the sum of two interfaces.
 */
export function matchPods(records: readonly EndpointRecord[], veths: readonly HostVeth[], peerIPs: ReadonlyMap<string, readonly string[]>): { links: PodLink[]; unmatched: EndpointRecord[] } {
  const byIP = new Map<string, HostVeth>();
  for (const v of veths) {
    for (const ip of peerIPs.get(vethKey(v)) ?? []) {
      const have = byIP.get(ip);
      if (!have || v.index > have.index) byIP.set(ip, v);
    }
  }
  const links: PodLink[] = [];
  const unmatched: EndpointRecord[] = [];
  const seen = new Set<string>();
  for (const record of records) {
    let veth: HostVeth | undefined;
    for (const ip of record.ips) {
      const v = byIP.get(ip);
      if (v && (!veth || v.index > veth.index)) veth = v;
    }
    if (!veth) {
      unmatched.push(record);
      continue;
    }
    const labels = podLabels(record);
    const key = `${labels.namespace}\0${labels.pod}\0${labels.interface}`;
    if (seen.has(key)) continue;
    seen.add(key);
    links.push({ labels, record, veth });
  }
  return { links, unmatched };
}

// ---- the pod's view of its veth's counters

export type Direction = 'rx' | 'tx';

export interface PodCounters {
  readonly rxBytes: number;
  readonly txBytes: number;
  readonly rxPackets: number;
  readonly txPackets: number;
  /** Drops and errors by the pod's direction and the kernel's name for them. */
  readonly drops: readonly { readonly direction: Direction; readonly reason: DropReason; readonly value: number }[];
}

export type DropReason = 'dropped' | 'errors' | 'nohandler' | 'otherhost_dropped';

/**
 * The host end sends what the pod receives and receives what the pod sends, so the counters
 * swap: pod rx = host tx. Drops keep the kernel's names and take the pod's direction:
 *   rx (toward the pod):   dropped ← host tx_dropped (e.g. the pod's end down or its queue full),
 *                          errors  ← host tx_errors
 *   tx (from the pod):     dropped ← host rx_dropped, errors ← host rx_errors,
 *                          nohandler ← rx_nohandler (no protocol took the frame),
 *                          otherhost_dropped ← rx_otherhost_dropped (kernel 5.19+: frames for
 *                          another MAC, which IP drops)
 * The detailed error kinds (crc, fifo, carrier …) are parts of `errors` that only hardware
 * drivers fill; a veth never does, so they are not series of their own.
 */
export function podCounters(s: LinkStats): PodCounters {
  const drops: { direction: Direction; reason: DropReason; value: number }[] = [
    { direction: 'rx', reason: 'dropped', value: s.txDropped },
    { direction: 'rx', reason: 'errors', value: s.txErrors },
    { direction: 'tx', reason: 'dropped', value: s.rxDropped },
    { direction: 'tx', reason: 'errors', value: s.rxErrors },
  ];
  if (s.rxNohandler !== undefined) drops.push({ direction: 'tx', reason: 'nohandler', value: s.rxNohandler });
  if (s.rxOtherhostDropped !== undefined) drops.push({ direction: 'tx', reason: 'otherhost_dropped', value: s.rxOtherhostDropped });
  return { rxBytes: s.txBytes, txBytes: s.rxBytes, rxPackets: s.txPackets, txPackets: s.rxPackets, drops };
}

// ---- the kernel side

/**
 * Remembers each veth's peer addresses. `peerIPs(veths, wantMore)` returns the map matchPods
 * takes, asking the kernel only about veths it has not seen (and, when wantMore, about those
 * that had no address when last asked). Forgotten veths are dropped from the cache.
 */
export class PodLinkFinder {
  private readonly cache = new Map<string, readonly string[]>();

  constructor(private readonly lookup: (v: HostVeth) => readonly string[]) {}

  peerIPs(veths: readonly HostVeth[], wantMore: boolean): ReadonlyMap<string, readonly string[]> {
    const live = new Set<string>();
    for (const v of veths) {
      const key = vethKey(v);
      live.add(key);
      const have = this.cache.get(key);
      if (have && (have.length > 0 || !wantMore)) continue;
      let ips: readonly string[];
      try {
        ips = this.lookup(v);
      } catch {
        // The pod's namespace went between the dump and the lookup: ask again next time.
        ips = [];
      }
      this.cache.set(key, ips);
    }
    for (const key of this.cache.keys()) if (!live.has(key)) this.cache.delete(key);
    return this.cache;
  }

  /** Cached entries (for tests and the bound: one per host veth). */
  get size(): number {
    return this.cache.size;
  }
}

/** The lookup PodLinkFinder uses in weftd: the peer's addresses, read in its namespace by id. */
export function peerAddressLookup(nl: Netlink): (v: HostVeth) => readonly string[] {
  return (v) => nl.listAddresses({ link: v.peerIndex, netnsId: v.netnsId }).map((a) => formatIP(a.cidr.ip));
}
