// The bgp backend (Calico's model): no overlay and no bridge. Every host runs a BGP speaker on
// its public address (port 179), announces its own pod subnet with itself as next hop, peers with
// the other hosts (full-mesh iBGP, or route reflectors) and with configured routers, and turns
// the prefixes it learns into kernel routes (proto 88). Containers are plugged in by weft-routed
// (/32 host routes), which the `weft` meta plugin picks when subnet.env says WEFT_BACKEND=bgp.
//
// Restarts: weftd stopping with the dataplane kept aborts the sessions without a NOTIFICATION,
// so peers that negotiated graceful restart (RFC 4724) keep our routes; our kernel routes stay
// too. The next start finds proto-88 routes in the kernel, says "restarting" in its OPEN, and
// leaves unknown kernel routes alone until every peer has sent End-of-RIB (or the restart time
// runs out) — only then does a full sync remove what nobody announces any more.
//
// IPv6 (dual-stack and IPv6-only networks): the lease's IPv6 subnet is announced as IPv6 unicast
// (MP-BGP, RFC 4760) with the host's PublicIPv6 as next hop, over the same sessions — IPv4 ones
// on a dual-stack underlay, IPv6 ones (peers at their IPv6 addresses, a router id derived from
// the host's) on an IPv6-only one — and learnt IPv6 prefixes become proto-88 routes like IPv4 ones.
//
// What a peer may put in the kernel: only prefixes inside the cluster Network or an
// `ImportPrefixes` range, never one overlapping a subnet this host is connected to, containing
// its own next hop or a peer's address (src/bgp/policy.ts), and never over a route of another
// protocol (kernel.ts). A refused prefix is not passed on to other peers either.
import { z } from 'zod';
import { type AddressFamily, type DownReason, type ImportPolicy, type ImportRejectionReason, Speaker, type SessionStatus, type SpeakerEvent, routerIdFromIPv6 } from '../../bgp/index.js';
import { CniCode, WeftError } from '../../errors.js';
import { type Cidr, type IP, formatCidr, formatIP, networkOf, parseCidr, parseIP } from '../../net/ip.js';
import type { NetlinkOp } from '../../netlink/index.js';
import { asn, ipv4, ipv4Cidr, noLeaseData } from '../schema.js';
import type { Lease } from '../../store/lease.js';
import type { Backend, BackendModule, BackendPreparation, HostContext, ReconcileReport } from '../types.js';
import {
  KernelView, type LearnedRoute, type RouteWrite, deleteOp, describeProtocol, removeBgpRoutes, syncBgpRoutes, writeRoutes,
} from './kernel.js';
import { registerBgpMetrics } from './metrics.js';
import { type PlannedPeer, planPeers } from './plan.js';
import { skippedLeases } from './skipped.js';

import { WEFT_BGP_ROUTE_PROTOCOL } from '../../dataplane/protocols.js';

// Every node speaks iBGP (AS `ASN`) to every other node (full mesh) and to `Peers` (eBGP
// when their ASN differs). `NodeMesh: false` drops the node-to-node sessions (nodes talk only to
// `Peers`, e.g. top-of-rack routers over eBGP). `RouteReflector: true` replaces the mesh: nodes peer only with the
// reflectors — the iBGP `Peers` (routers outside the cluster) and the cluster nodes whose PublicIP
// is in `RouteReflectorNodes`; those nodes reflect (RFC 4456) for every other node, with
// `RouteReflectorClusterID` (default: their own address) as the cluster id.
// `ImportPrefixes` opens the import policy beyond the cluster `Network`: a learned prefix is
// used (installed, passed on) only inside one of those ranges — and, whatever they say, never
// when it overlaps a subnet the host is connected to, contains its own next hop or a peer's
// address. `["0.0.0.0/0"]` lets any prefix in that passes those checks.
export const bgpConfig = z.object({
  ASN: asn.default(64512),
  Peers: z.array(z.object({ Address: ipv4, ASN: asn }).strict()).default([]),
  RouteReflector: z.boolean().default(false),
  RouteReflectorClusterID: ipv4.optional(),
  RouteReflectorNodes: z.array(ipv4).default([]),
  NodeMesh: z.boolean().default(true),
  /** Proposed BGP hold time, seconds (0 or 3..65535). */
  HoldTime: z.number().int().refine((h) => h === 0 || (h >= 3 && h <= 65535), 'expected 0 or 3..65535 seconds').default(90),
  /** How long peers keep our routes while weftd restarts (RFC 4724), and we keep theirs. */
  GracefulRestartTime: z.number().int().min(1).max(4095).default(120),
  /** IPv4 ranges, besides the cluster Network, whose learned prefixes may be installed. */
  ImportPrefixes: z.array(ipv4Cidr).default([]),
}).strict();
export type BgpConfig = z.infer<typeof bgpConfig>;

export interface BgpBackendOptions {
  /** TCP port to listen on and to connect to (tests and benches; weftd always uses 179). */
  readonly port?: number;
  /** How long route events are gathered before one kernel batch (default 5 ms). */
  readonly flushDelayMs?: number;
}

/** What /bgp/status and `weftctl bgp status` show. */
export interface BgpStatus {
  readonly asn: number;
  readonly routerId: string;
  readonly subnet: string | null;
  /** The IPv6 subnet announced beside `subnet` on a dual-stack network. */
  readonly ipv6Subnet: string | null;
  readonly reflector: boolean;
  readonly clusterId: string | null;
  /** Learned prefixes must lie inside one of these: the cluster Network, then ImportPrefixes. */
  readonly importRanges: readonly string[];
  /** Set while the kernel's routes from before a restart wait for the peers' End-of-RIB. */
  readonly restartingUntil: string | null;
  readonly learnedRoutes: number;
  readonly kernelRoutes: number;
  readonly sessions: readonly (SessionStatus & { origin: 'node' | 'configured' })[];
}

interface Running {
  readonly host: HostContext;
  readonly speaker: Speaker;
  /** The session address (the PublicIP: IPv4, or IPv6 on an IPv6-only underlay). */
  readonly self: IP;
  /** The next hop of the IPv6 subnet (PublicIPv6), when the network has IPv6. */
  readonly self6: IP | undefined;
  readonly routerId: string;
}

export class BgpBackend implements Backend {
  readonly type = 'bgp';
  private run: Running | undefined;
  private ownSubnet: Cidr | undefined;
  private ownIPv6Subnet: Cidr | undefined;
  private reflector = false;
  private clusterId: string | undefined;
  private readonly peers = new Map<string, PlannedPeer>();
  /** Prefix → route to write (or null to delete) at the next flush. */
  private readonly pending = new Map<string, LearnedRoute | null>();
  /** Prefixes this process has in the kernel (for metrics; the kernel stays the truth). */
  private readonly installed = new Set<string>();
  private flushTimer: NodeJS.Timeout | undefined;
  /** The kernel as last looked at; dropped by every reconcile pass, taken again on demand. */
  private view: KernelView | undefined;
  /** Learned prefixes whose destination another protocol's route holds → that protocol. */
  private held = new Map<string, number>();
  private allow: readonly Cidr[] = [];
  /** Import-policy refusals since start, by reason (a metric). */
  private readonly rejections = new Map<ImportRejectionReason, number>();
  private restartUntil: number | undefined;
  private readonly endOfRib = new Set<string>();
  private writes = 0;
  private closed = false;

  constructor(private readonly cfg: BgpConfig, private readonly opts: BgpBackendOptions = {}) {}

  async prepare(host: HostContext): Promise<BackendPreparation> {
    if (this.run) return { backendData: null, mtu: host.publicIface.mtu };
    const me = formatIP(host.publicIP);
    // The BGP identifier is 32 bits: a host with only an IPv6 underlay derives one (RFC 6286).
    const routerId = host.publicIP.family === 4 ? me : routerIdFromIPv6(me);
    const families: AddressFamily[] = [...(host.network.ipv4 ? ['ipv4' as const] : []), ...(host.network.ipv6 ? ['ipv6' as const] : [])];
    const self6 = host.network.ipv6 ? host.publicIPv6 ?? (host.publicIP.family === 6 ? host.publicIP : undefined) : undefined;
    if (host.network.ipv6 && !self6) throw new WeftError(CniCode.InvalidEnvironment, 'bgp: the IPv6 network needs an IPv6 public address (the next hop of this host\'s IPv6 subnet)');
    const plan = planPeers(this.cfg, host.publicIP, []);
    this.reflector = plan.reflector;
    this.clusterId = plan.clusterId;
    const leftover = [...host.nl.listRoutes({ family: 4, protocol: WEFT_BGP_ROUTE_PROTOCOL }), ...host.nl.listRoutes({ family: 6, protocol: WEFT_BGP_ROUTE_PROTOCOL })];
    const networks = [host.network.ipv4?.network, host.network.ipv6?.network].filter((n): n is Cidr => n !== undefined);
    this.allow = [...networks, ...this.cfg.ImportPrefixes.map((p) => networkOf(parseCidr(p)))];
    this.view = new KernelView(host.nl);
    const restarting = leftover.length > 0;
    for (const r of leftover) this.installed.add(formatCidr(r.dst));
    if (restarting) this.restartUntil = Date.now() + this.cfg.GracefulRestartTime * 1000;
    const port = this.opts.port ?? 179;
    const speaker = new Speaker({
      asn: this.cfg.ASN, routerId, listen: { address: me, port }, peers: [], holdTime: this.cfg.HoldTime, families,
      ...(self6 && { nextHopV6: formatIP(self6) }),
      connectRetrySeconds: 2, gracefulRestart: { restartTime: this.cfg.GracefulRestartTime, restarting },
      ...(this.clusterId !== undefined && { clusterId: this.clusterId }),
    }, { logger: host.log.child({ component: 'bgp' }), importPolicy: this.importPolicy(this.view) });
    speaker.on((e) => this.onEvent(e));
    try {
      await speaker.start();
    } catch (err) {
      throw WeftError.wrap(err, CniCode.Internal, `bgp backend: cannot listen on ${me}:${port}`);
    }
    this.run = { host, speaker, self: host.publicIP, self6, routerId };
    if (host.registry) {
      registerBgpMetrics(host.registry, {
        sessions: () => this.run?.speaker.status(),
        kernelRoutes: () => this.installed.size,
        kernelWrites: () => this.writes,
        importRejections: () => this.rejections,
      });
    }
    host.log.info('bgp speaker listening', {
      address: `${me}:${port}`, asn: this.cfg.ASN, reflector: this.reflector, restarting, keptRoutes: leftover.length, importRanges: this.allow.map(formatCidr),
    });
    return { backendData: null, mtu: host.publicIface.mtu };
  }

  async activate(ownSubnet: Cidr, ownIPv6Subnet?: Cidr): Promise<void> {
    const run = this.need();
    this.ownSubnet = ownSubnet;
    if (ownSubnet.ip.family === 4) run.speaker.announce(ownSubnet, run.self);
    if (ownIPv6Subnet && run.self6) {
      this.ownIPv6Subnet = ownIPv6Subnet;
      run.speaker.announce(ownIPv6Subnet, run.self6);
    }
    // Configured routers need no lease to be known: connect to them now.
    this.applyPlan([]);
  }

  /** The policy for the kernel as `view` shows it: its connected subnets are protected. */
  private importPolicy(view: KernelView): ImportPolicy {
    return { allow: this.allow, protect: view.connectedSubnets() };
  }

  private need(): Running {
    if (!this.run) throw new WeftError(CniCode.Internal, 'bgp backend: used before prepare');
    return this.run;
  }

  private applyPlan(others: readonly Lease[]): readonly string[] {
    const run = this.need();
    const plan = planPeers(this.cfg, run.self, others);
    const want = new Map(plan.peers.map((p) => [p.address, p]));
    for (const [addr, have] of this.peers) {
      const w = want.get(addr);
      if (w && w.asn === have.asn && w.rrClient === have.rrClient) continue;
      run.speaker.removePeer(addr);
      this.peers.delete(addr);
      this.endOfRib.delete(addr);
      run.host.log.info('bgp peer removed', { peer: addr });
    }
    for (const [addr, w] of want) {
      if (this.peers.has(addr)) continue;
      run.speaker.addPeer({ address: addr, asn: w.asn, rrClient: w.rrClient, localAddress: formatIP(run.self), ...(this.opts.port !== undefined && { port: this.opts.port }) });
      this.peers.set(addr, w);
      run.host.log.info('bgp peer added', { peer: addr, asn: w.asn, ibgp: w.asn === this.cfg.ASN, rrClient: w.rrClient, origin: w.origin });
    }
    return plan.skipped;
  }

  private onEvent(e: SpeakerEvent): void {
    const log = this.run?.host.log;
    switch (e.type) {
      case 'route-installed': this.queue(formatCidr(e.prefix), { prefix: e.prefix, nextHop: e.nextHop }); break;
      case 'route-removed': this.queue(formatCidr(e.prefix), null); break;
      // The speaker logs each refusal once; here it is only counted.
      case 'route-rejected': this.rejections.set(e.rejection.reason, (this.rejections.get(e.rejection.reason) ?? 0) + 1); break;
      case 'session-established': log?.info('bgp session established', { peer: e.peer, asn: e.asn, holdTime: e.holdTime, gracefulRestart: e.gracefulRestart }); break;
      case 'session-down':
        this.endOfRib.delete(e.peer);
        log?.warn('bgp session down', { peer: e.peer, reason: e.reason, keptAsStale: e.graceful });
        break;
      case 'end-of-rib':
        // Per family; the peer is through once it has sent every family's.
        if (!e.complete) break;
        this.endOfRib.add(e.peer);
        this.maybeEndRestart();
        break;
      case 'stale-swept': log?.info('bgp stale routes swept', { peer: e.peer, removed: e.removed }); break;
      case 'session-state': break;
    }
  }

  private queue(key: string, r: LearnedRoute | null): void {
    this.pending.set(key, r);
    if (this.flushTimer || this.closed) return;
    this.flushTimer = setTimeout(() => { this.flushTimer = undefined; this.flush(); }, this.opts.flushDelayMs ?? 5);
  }

  /** Writes the queued route changes: deletes in one netlink batch, then the routes to install. */
  private flush(): void {
    const run = this.run;
    if (!run || this.closed || this.pending.size === 0) return;
    const view = (this.view ??= new KernelView(run.host.nl));
    const deletes: NetlinkOp[] = [];
    const deleted: string[] = [];
    const writes: RouteWrite[] = [];
    for (const [k, r] of this.pending) {
      if (r === null) {
        // Before End-of-RIB after a restart, a withdrawal still means what it says. The delete
        // names protocol 88, so a destination held by another route is left as it is.
        this.held.delete(k);
        deletes.push(deleteOp(parseCidr(k)));
        deleted.push(k);
        continue;
      }
      const res = view.resolve(r.nextHop);
      if (!res) {
        run.host.log.warn('bgp route not installed: no route to its next hop', { prefix: k, nextHop: formatIP(r.nextHop) });
        continue;
      }
      writes.push({ prefix: r.prefix, via: res });
    }
    this.pending.clear();
    if (deletes.length > 0) {
      this.writes += deletes.length;
      run.host.nl.applyBatch(deletes).forEach((err, i) => {
        const k = deleted[i];
        if (k === undefined) return;
        if (err) run.host.log.warn('bgp route delete refused', { prefix: k, error: err.message });
        else this.installed.delete(k);
      });
    }
    if (writes.length === 0) return;
    const out = writeRoutes(run.host.nl, view, writes, this.installed);
    this.writes += out.writes;
    for (const k of out.installed) { this.installed.add(k); this.held.delete(k); }
    for (const e of out.problems) run.host.log.warn('bgp route write refused', { error: e });
    this.noteHeld(out.held, false);
  }

  /** Remembers destinations left to other protocols' routes, logging each one once. */
  private noteHeld(held: ReadonlyMap<string, number>, complete: boolean): void {
    for (const [k, p] of held) {
      if (this.held.get(k) === p) continue;
      this.held.set(k, p);
      this.run?.host.log.warn('bgp route not installed: another route holds the destination, and weft never replaces a route it does not own', { prefix: k, holder: describeProtocol(p) });
    }
    if (complete) for (const k of [...this.held.keys()]) if (!held.has(k)) this.held.delete(k);
  }

  private inRestartWindow(): boolean {
    return this.restartUntil !== undefined && Date.now() < this.restartUntil;
  }

  private maybeEndRestart(): void {
    if (this.restartUntil === undefined || !this.run) return;
    const established = this.run.speaker.status().filter((s) => s.state === 'Established');
    if (this.peers.size > 0 && established.length < this.peers.size) return;
    if (!established.every((s) => this.endOfRib.has(s.peer))) return;
    this.run.host.log.info('bgp restart complete: every peer resent its routes');
    this.restartUntil = undefined;
    this.syncKernel();
  }

  /** Writes the learnt routes; `learnt` is what the speaker holds, prefix → next hop. */
  private syncKernel(): { written: number; removed: number; problems: readonly string[]; learnt: ReadonlyMap<string, string> } {
    const run = this.need();
    this.flush();
    const learnt = new Map<string, string>();
    const want: LearnedRoute[] = run.speaker.learnedRoutes().map((r) => {
      learnt.set(r.prefix, r.nextHop);
      return { prefix: parseCidr(r.prefix), nextHop: parseIP(r.nextHop) };
    });
    const r = syncBgpRoutes(run.host.nl, want, { keepUnknown: this.inRestartWindow(), ...(this.view && { view: this.view }) });
    this.writes += r.written + r.removed;
    this.noteHeld(r.held, true);
    this.installed.clear();
    for (const f of [4, 6] as const) for (const k of run.host.nl.listRoutes({ family: f, protocol: WEFT_BGP_ROUTE_PROTOCOL })) this.installed.add(formatCidr(k.dst));
    return { ...r, learnt };
  }

  async reconcile(peers: readonly Lease[]): Promise<ReconcileReport> {
    const run = this.need();
    if (this.restartUntil !== undefined && !this.inRestartWindow()) {
      run.host.log.warn('bgp restart time ran out before every peer sent End-of-RIB; removing routes nobody announced');
      this.restartUntil = undefined;
    }
    const skipped = this.applyPlan(peers);
    // The underlay may have changed since the last pass: resolve next hops afresh, and protect
    // the connected subnets as they are now (a changed set re-runs the policy on every route).
    this.view = new KernelView(run.host.nl);
    run.speaker.setImportPolicy(this.importPolicy(this.view));
    const r = this.syncKernel();
    const notUp = run.speaker.status().filter((s) => s.state !== 'Established')
      .map((s) => `bgp session with ${s.peer} (AS ${s.asn}) is ${s.state}, not Established${s.lastDown ? ` (last down: ${describeDown(s.lastDown)})` : ''}`);
    // A peer counts as programmed when the kernel has a learnt route for its subnet now; one
    // learnt after this pass is installed by the next flush, and shows here from the next pass.
    const unrouted = skippedLeases(peers, { installed: this.installed, learnt: r.learnt, held: this.held });
    return { repairs: r.written, removals: r.removed, problems: [...skipped, ...notUp, ...r.problems], skipped: unrouted };
  }

  status(): BgpStatus {
    const run = this.need();
    const sessions = run.speaker.status().map((s) => ({ ...s, origin: this.peers.get(s.peer)?.origin ?? 'configured' as const }));
    return {
      asn: this.cfg.ASN, routerId: run.routerId, subnet: this.ownSubnet ? formatCidr(this.ownSubnet) : null,
      ipv6Subnet: this.ownIPv6Subnet && this.ownIPv6Subnet !== this.ownSubnet ? formatCidr(this.ownIPv6Subnet) : null,
      reflector: this.reflector, clusterId: this.clusterId ?? null, importRanges: this.allow.map(formatCidr),
      restartingUntil: this.inRestartWindow() && this.restartUntil !== undefined ? new Date(this.restartUntil).toISOString() : null,
      learnedRoutes: run.speaker.learnedRoutes().length, kernelRoutes: this.installed.size, sessions,
    };
  }

  async close(opts: { keepDataplane: boolean }): Promise<void> {
    this.closed = true;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    const run = this.run;
    if (!run) return;
    if (opts.keepDataplane) {
      // No NOTIFICATION: to the peers this looks like a restart, and they keep our routes.
      await run.speaker.abort();
    } else {
      await run.speaker.stop();
      removeBgpRoutes(run.host.nl);
      this.installed.clear();
    }
  }
}

function describeDown(d: DownReason): string {
  switch (d.kind) {
    case 'notification-sent': return `sent NOTIFICATION ${d.code}/${d.subcode}: ${d.message}`;
    case 'notification-received': return `received NOTIFICATION ${d.code}/${d.subcode}`;
    default: return d.kind;
  }
}

export const bgp: BackendModule<'bgp', BgpConfig> = {
  type: 'bgp',
  config: bgpConfig,
  leaseData: noLeaseData,
  create: (cfg) => new BgpBackend(cfg),
  ipv6: true,
};
