// weftd's traffic metrics on /metrics: per pod interface (from its host veth's kernel counters)
// and per peer host (from nftables counters in `inet weft`). Nothing is counted per packet by
// weft itself: the kernel counts, weftd reads on scrape.
//
// A scrape reads one snapshot: the endpoint records (re-read only when their directory
// changed), one RTM_GETLINK dump with IFLA_STATS64 and one NFT_MSG_GETOBJ dump of the table's
// counters. A snapshot is reused for CACHE_MS, so a scrape storm (or several Prometheus
// servers) costs the kernel one dump pair a second at most; at 100 pods the pair is ~150 KiB
// of netlink and 1–4 ms of weftd's loop (test/netns/traffic-metrics.test.ts times it). The
// price is that a pod or peer may appear on /metrics up to CACHE_MS late.
//
// Series come from the snapshot alone: each collect() empties the metric and fills it again,
// so a pod's series go with its record or its veth, a peer's with its lease, and no label set
// outlives what it describes. Bounds: pods on this node × their weft interfaces × (4 traffic +
// ≤ 6 drop series), and peers × 4.
//
// The peer counters themselves (one pair per peer, keyed by subnet in two maps) are kept equal
// to the agent's peers: after every reconcile pass (ctx.watchPeers), on a repair timer, and
// whenever a snapshot finds them off (a counter missing, or its map element gone).
import { stat } from 'node:fs/promises';
import { Counter, type Registry } from 'prom-client';
import { CoalescingLoop } from '../coalescing-loop.js';
import type { Logger } from '../log.js';
import type { Link } from '../netlink/link.js';
import type { Netlink } from '../netlink/index.js';
import { NftCounterReader, type NftCounter } from '../netlink/nft-objects.js';
import { nftApply, type NftOptions } from '../nft/nft.js';
import { type EndpointRecord, readEndpointRecords } from '../policy/endpoint-record.js';
import type { Lease } from '../store/lease.js';
import type { AgentService, ServiceStarter } from './agent.js';
import { type HostVeth, type PodCounters, type PodLabels, PodLinkFinder, hostVeths, matchPods, peerAddressLookup, podCounters } from './pod-traffic.js';
import { type PeerHost, type PeerSeries, peerCountersPlan, peerSeries } from './peer-traffic.js';
import { AGENT_TABLE } from './traffic-rules.js';

/** How long one snapshot answers scrapes. */
export const CACHE_MS = 1000;

/** What the metrics read; the kernel and the records directory in weftd, a namespace in tests. */
export interface TrafficSources {
  /** This namespace's links with their counters. */
  links(): Link[];
  /** The addresses of a host veth's peer, in the pod's namespace. */
  peerAddresses(v: HostVeth): readonly string[];
  /** The named counters of weftd's table. */
  counters(): NftCounter[];
  /** Runs an nft batch against weftd's table. */
  applyNft(script: string): Promise<void>;
  /** This node's endpoint records. */
  records(): Promise<readonly EndpointRecord[]>;
  close(): void;
}

/**
 * Re-reads the records directory only when its mtime moved. A change in the same clock tick
 * as the last read could hide behind an unchanged mtime, so a directory changed within the
 * last second is read again anyway.
 */
export function recordsFromDir(dir: string, log: Logger): () => Promise<readonly EndpointRecord[]> {
  let cached: { mtimeMs: number; readAt: number; records: readonly EndpointRecord[] } | undefined;
  const warned = new Set<string>();
  return async () => {
    let mtimeMs: number;
    try {
      mtimeMs = (await stat(dir)).mtimeMs;
    } catch {
      return [];
    }
    if (cached && cached.mtimeMs === mtimeMs && cached.readAt - mtimeMs > 1000) return cached.records;
    const readAt = Date.now();
    const { records, bad } = await readEndpointRecords(dir);
    for (const b of bad) {
      if (warned.has(b.file)) continue;
      warned.add(b.file);
      log.warn('endpoint record unreadable; its pod has no traffic series', { file: b.file, reason: b.reason });
    }
    cached = { mtimeMs, readAt, records };
    return records;
  };
}

/** weftd's sources: its own namespace, its netlink handle, nft. */
export function systemSources(nl: Netlink, recordDir: string, log: Logger, nft: NftOptions = {}, nsPath?: string): TrafficSources {
  const reader = new NftCounterReader(nsPath);
  const lookup = peerAddressLookup(nl);
  return {
    links: () => nl.listLinks({ stats: true }),
    peerAddresses: lookup,
    counters: () => reader.counters('inet', AGENT_TABLE),
    applyNft: (script) => nftApply(script, nft),
    records: recordsFromDir(recordDir, log),
    close: () => reader.close(),
  };
}

export interface TrafficSnapshot {
  readonly pods: readonly { readonly labels: PodLabels; readonly counters: PodCounters }[];
  readonly peers: readonly PeerSeries[];
}

export interface TrafficMetricsOptions {
  readonly sources: TrafficSources;
  readonly registry: Registry;
  readonly log: Logger;
  /** weftd's error counter (kind "traffic"). */
  readonly errors?: Counter<'kind'>;
  readonly cacheMs?: number;
  /** Period of the peer counters' check (default 5 s). */
  readonly repairIntervalMs?: number;
  readonly now?: () => number;
}

const POD_LABELS = ['namespace', 'pod', 'interface'] as const;
const DROP_LABELS = ['namespace', 'pod', 'interface', 'direction', 'reason'] as const;
const PEER_LABELS = ['peer_subnet', 'peer_ip'] as const;

const POD_BOUND = 'One series per pod interface weft plugged on this node (pods without a Kubernetes name: pod = container id, namespace ""), removed with the pod';
const PEER_HELP = 'nftables counters in inet weft keyed by peer subnet, at the forward hook after policy: IP header and payload of forwarded pod traffic, before any overlay encapsulation, a GSO batch counting as one packet; not the host\'s own traffic. Every weftd backend (vxlan, udp, host-gw, bgp); none without weftd (macvlan). One series per peer lease, removed with it';

export class TrafficMetrics {
  /** The names this registers (prom-client's types do not show a metric's name). */
  private readonly names: string[] = [];
  private peers: PeerHost[] = [];
  private readonly finder: PodLinkFinder;
  private last: { at: number; value: TrafficSnapshot } | undefined;
  private inflight: Promise<TrafficSnapshot> | undefined;
  private readonly sync = new CoalescingLoop<'sync'>(() => this.syncPeers());
  private repairTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly now: () => number;
  private lastError: string | undefined;

  constructor(private readonly opts: TrafficMetricsOptions) {
    this.now = opts.now ?? (() => performance.now());
    this.finder = new PodLinkFinder((v) => opts.sources.peerAddresses(v));
    const registers = [opts.registry];
    const self = this;
    const counter = <L extends string>(name: string, help: string, labelNames: readonly L[], fill: (c: Counter<L>, s: TrafficSnapshot) => void): void => {
      this.names.push(name);
      new Counter<L>({
        name, help, labelNames, registers,
        async collect(this: Counter<L>) {
          const s = await self.snapshot();
          this.reset();
          fill(this, s);
        },
      });
    };
    const pod = (field: 'rxBytes' | 'txBytes' | 'rxPackets' | 'txPackets') => (c: Counter<(typeof POD_LABELS)[number]>, s: TrafficSnapshot) => {
      for (const p of s.pods) c.inc({ ...p.labels }, p.counters[field]);
    };
    counter('weft_pod_rx_bytes_total', `Bytes the pod received on the interface (its host veth's tx, kernel IFLA_STATS64). ${POD_BOUND}`, POD_LABELS, pod('rxBytes'));
    counter('weft_pod_tx_bytes_total', `Bytes the pod sent on the interface (its host veth's rx, kernel IFLA_STATS64). ${POD_BOUND}`, POD_LABELS, pod('txBytes'));
    counter('weft_pod_rx_packets_total', `Packets the pod received on the interface (its host veth's tx; a GSO batch is one). ${POD_BOUND}`, POD_LABELS, pod('rxPackets'));
    counter('weft_pod_tx_packets_total', `Packets the pod sent on the interface (its host veth's rx; a GSO batch is one). ${POD_BOUND}`, POD_LABELS, pod('txPackets'));
    counter('weft_pod_drops_total', `Packets dropped or in error on a pod's host veth, by direction as the pod sees it (rx: toward the pod, tx: from it) and the kernel's counter (dropped, errors; tx also nohandler, otherhost_dropped). ${POD_BOUND}: up to 6 per interface`, DROP_LABELS, (c, s) => {
      for (const p of s.pods) for (const d of p.counters.drops) c.inc({ ...p.labels, direction: d.direction, reason: d.reason }, d.value);
    });
    const peer = (dir: 'tx' | 'rx', field: 'bytes' | 'packets') => (c: Counter<(typeof PEER_LABELS)[number]>, s: TrafficSnapshot) => {
      for (const p of s.peers) c.inc({ ...p.labels }, p[dir][field]);
    };
    counter('weft_peer_tx_bytes_total', `Bytes of pod traffic this host forwarded to the peer host's pod subnet. ${PEER_HELP}`, PEER_LABELS, peer('tx', 'bytes'));
    counter('weft_peer_tx_packets_total', `Packets of pod traffic this host forwarded to the peer host's pod subnet. ${PEER_HELP}`, PEER_LABELS, peer('tx', 'packets'));
    counter('weft_peer_rx_bytes_total', `Bytes of pod traffic this host forwarded from the peer host's pod subnet to its pods. ${PEER_HELP}`, PEER_LABELS, peer('rx', 'bytes'));
    counter('weft_peer_rx_packets_total', `Packets of pod traffic this host forwarded from the peer host's pod subnet to its pods. ${PEER_HELP}`, PEER_LABELS, peer('rx', 'packets'));
  }

  /** The first peer sync, then a periodic check. */
  async start(): Promise<void> {
    await this.sync.request('sync');
    const period = this.opts.repairIntervalMs ?? 5000;
    this.repairTimer = setInterval(() => { void this.sync.request('sync'); }, period);
    this.repairTimer.unref?.();
  }

  /** The agent's peers changed (or a pass confirmed them): make the counters follow. */
  setPeers(leases: readonly Lease[]): void {
    this.peers = leases.map((l) => ({ subnet: l.subnet, publicIP: l.attrs.publicIP }));
    if (!this.closed) void this.sync.request('sync');
  }

  /** The latest snapshot, read again when older than cacheMs; concurrent callers share a read. */
  snapshot(): Promise<TrafficSnapshot> {
    const started = this.now();
    if (this.last && started - this.last.at < (this.opts.cacheMs ?? CACHE_MS)) return Promise.resolve(this.last.value);
    this.inflight ??= this.read().then((value) => {
      this.last = { at: started, value };
      return value;
    }).finally(() => { this.inflight = undefined; });
    return this.inflight;
  }

  private async read(): Promise<TrafficSnapshot> {
    const src = this.opts.sources;
    try {
      const records = await src.records();
      const veths = hostVeths(src.links());
      let matched = matchPods(records, veths, this.finder.peerIPs(veths, false));
      // A record with no veth yet: a veth seen before its address was set may be it now.
      if (matched.unmatched.length > 0) matched = matchPods(records, veths, this.finder.peerIPs(veths, true));
      const pods = matched.links.flatMap((l) => (l.veth.stats ? [{ labels: l.labels, counters: podCounters(l.veth.stats) }] : []));
      const counters = src.counters();
      if (!this.closed && peerCountersPlan(AGENT_TABLE, this.peers, counters) !== undefined) void this.sync.request('sync');
      this.cleared();
      return { pods, peers: peerSeries(this.peers, counters) };
    } catch (err) {
      // Keep answering with the last good values: series vanishing for one scrape would read as
      // every pod gone and back.
      this.failed('cannot read traffic counters', err);
      return this.last?.value ?? { pods: [], peers: [] };
    }
  }

  private async syncPeers(): Promise<void> {
    if (this.closed) return;
    try {
      const plan = peerCountersPlan(AGENT_TABLE, this.peers, this.opts.sources.counters());
      if (plan === undefined) return;
      await this.opts.sources.applyNft(plan);
      this.opts.log.debug('peer traffic counters updated', { peers: this.peers.length });
      this.cleared();
    } catch (err) {
      // Typically the agent's table being rewritten at that moment; the next check retries.
      this.failed('cannot update the peer traffic counters', err);
    }
  }

  private failed(msg: string, err: unknown): void {
    const reason = err instanceof Error ? err.message : String(err);
    this.opts.errors?.inc({ kind: 'traffic' });
    if (reason !== this.lastError) this.opts.log.warn(msg, { reason });
    this.lastError = reason;
  }

  private cleared(): void {
    this.lastError = undefined;
  }

  /**
   * Stops following the peers and takes the metrics off the registry. The kernel's counters
   * stay, as the rest of the dataplane does: a restarted weftd goes on counting from them.
   */
  async close(): Promise<void> {
    this.closed = true;
    if (this.repairTimer) clearInterval(this.repairTimer);
    this.sync.close();
    await this.sync.idle();
    await this.inflight?.catch(() => undefined);
    for (const name of this.names) this.opts.registry.removeSingleMetric(name);
    this.opts.sources.close();
  }
}

/** weftd's service: started once the agent is ready (the table and subnet exist by then). */
export function trafficMetricsStarter(recordDir: string): ServiceStarter {
  return async (ctx) => {
    const log = ctx.log.child({ service: 'traffic-metrics' });
    const svc = new TrafficMetrics({ sources: systemSources(ctx.nl, recordDir, log), registry: ctx.metrics.registry, log, errors: ctx.metrics.errors });
    const unwatch = ctx.watchPeers((peers) => svc.setPeers(peers));
    await svc.start();
    return {
      // GET /traffic: the per-peer counters as JSON (the web view draws each link's traffic).
      document: (path: string) => (path === '/traffic' ? svc.snapshot().then((snap) => ({
        peers: snap.peers.map((p) => ({ subnet: p.labels.peer_subnet, publicIP: p.labels.peer_ip, tx: p.tx, rx: p.rx })),
      })) : undefined),
      close: async () => { unwatch(); await svc.close(); },
    } satisfies AgentService;
  };
}
