// weftd's core: lease this host's subnet, write subnet.env, program the backend and the traffic
// rules, watch the other hosts' leases and keep the kernel equal to what they say — after every
// batch of lease events and on a periodic repair pass. Restarting the agent disturbs nothing:
// devices, routes and rules are found in place and only differences are written.
import { CoalescingLoop } from '../coalescing-loop.js';
import { CniCode, WeftError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { Netlink } from '../netlink/index.js';
import { type Cidr, formatCidr, formatIP } from '../net/ip.js';
import { readSysctl } from '../netns/index.js';
import { parseNetworkConfig, type NetworkConfig } from '../store/config.js';
import { LeaseManager, type ManagerStatus, type SubnetLeaser } from '../store/lease-manager.js';
import type { LeaseWatcher, WatcherState } from '../store/watch.js';
import type { SubnetStore } from '../store/types.js';
import { type AgentRulesSpec, agentRulesInPlace, applyAgentRules } from './traffic-rules.js';
import { type BackendConfig, createBackend } from '../backends/registry.js';
import type { Backend, HostContext, ReconcileReport } from '../backends/types.js';
import { type HealthServer, type Readiness, healthHandler, startApiSocket, startHealthServer } from './http.js';
import { type PeerSplit, type PeersDocument, splitPeers } from './peers.js';
import { type AgentMetrics, createAgentMetrics } from './metrics.js';
import { pickPublicInterface, type PublicInterface } from './public-iface.js';
import { writeSubnetFile } from './subnet-file.js';
import { readLeasedSubnets } from '../cni/subnet-env.js';
import { withTimeout } from '../timeout.js';
import type { Clock, TimerHandle } from '../clock.js';
import { type Lease, formatLeaseSubnets, ipv4SubnetOf } from '../store/lease.js';
import { hostname } from 'node:os';

/** The shortest time between two traffic-rules checks by repair passes (see repairPass). */
const RULES_CHECK_MIN_MS = 1000;

/**
 * What the agent asks of the machine and of time. weftd uses systemHost; unit tests pass a
 * recording backend, no kernel and a FakeClock, so batching and stop-during-start run in
 * milliseconds.
 */
export interface AgentHost {
  openNetlink(): Netlink;
  publicInterface(nl: Netlink, want: { iface?: string; publicIP?: string; publicIPv6?: string }): PublicInterface;
  createBackend(config: BackendConfig): Backend;
  readonly trafficRules: { inPlace(spec: AgentRulesSpec): Promise<boolean>; apply(spec: AgentRulesSpec): Promise<void> };
  /** The batch and repair timers; only differences of now() matter. */
  readonly clock: Clock;
}

export const systemHost: AgentHost = {
  openNetlink: () => Netlink.open(),
  publicInterface: pickPublicInterface,
  createBackend,
  trafficRules: { inPlace: agentRulesInPlace, apply: applyAgentRules },
  // Not unref'd, unlike the BGP timers: the repair pass is what keeps weftd's loop alive.
  clock: {
    now: () => performance.now(),
    schedule(ms, fn) {
      const t = setTimeout(fn, ms);
      return { cancel: () => clearTimeout(t) };
    },
  },
};

export interface AgentOptions {
  readonly store: SubnetStore;
  readonly subnetFile: string;
  readonly ipMasq: boolean;
  /** Make sure the kernel tracks forwarded connections (flow records read conntrack's events). */
  readonly trackConnections?: boolean;
  readonly iface?: string;
  readonly publicIP?: string;
  readonly publicIPv6?: string;
  /** host:port for /healthz, /readyz, /metrics, /peers; none when undefined. */
  readonly healthAddr?: string;
  /** A unix socket (mode 0600) serving the same endpoints; none when undefined. */
  readonly apiSocket?: string;
  readonly nodeName?: string;
  /** Period of the repair pass (default 5 s; the contract is ≤ 10 s). */
  readonly repairIntervalMs?: number;
  /**
   * Least gap between the end of one lease-event pass and the start of the next (default 5 ms):
   * events arriving during a pass are gathered anyway, so the gap only needs to let a store
   * message or two in (with 20 ms, a 1000-lease etcd burst spent ~40 ms of its ~190 waiting).
   */
  readonly batchDelayMs?: number;
  readonly leaseTtlSeconds?: number;
  /** Deadline for the first store answer before giving up (default 10 s). */
  readonly storeTimeoutMs?: number;
  readonly log?: Logger;
  /** The machine and clock; systemHost unless a test stands in for them. */
  readonly host?: AgentHost;
}

/** What an agent service (e.g. the CNI fast-path server) gets once the agent is ready. */
export interface AgentContext {
  readonly nl: Netlink;
  readonly network: NetworkConfig;
  /** The cluster network of the lease's identity family (IPv4, or IPv6 on an IPv6-only network). */
  readonly clusterNetwork: Cidr;
  /** The lease's subnet (IPv4, or IPv6 on an IPv6-only network). */
  readonly subnet: Cidr;
  /** Every cluster network: IPv4 and/or IPv6. */
  readonly clusterNetworks: readonly Cidr[];
  /** Every subnet this node holds: IPv4 and/or IPv6. */
  readonly subnets: readonly Cidr[];
  readonly mtu: number;
  readonly ipMasq: boolean;
  readonly publicIP: PublicInterface;
  readonly backendType: string;
  readonly subnetFile: string;
  readonly nodeName: string | undefined;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  /** Adds or changes a KEY=VALUE line in subnet.env (rewritten atomically). */
  setSubnetEnv(key: string, value: string): void;
  /**
   * Calls fn with the peers (other hosts' leases) now, and after every successful reconcile
   * pass with the peers it was given. Returns the undo.
   */
  watchPeers(fn: (peers: readonly Lease[]) => void): () => void;
}

export interface AgentService {
  close(): Promise<void>;
  /** Optional part of /readyz: the agent is ready only while every service says so. */
  readiness?(): { ready: boolean; details: unknown };
  /**
   * A JSON document (or a promise of one) the service serves on weftd's HTTP endpoints, e.g.
   * /flows?after=N or /policy/counters; undefined: not its path.
   */
  document?(path: string, query: URLSearchParams): unknown;
}

/** A service started once the agent is ready, and closed on shutdown. */
export type ServiceStarter = (ctx: AgentContext) => Promise<AgentService>;


export class Agent {
  readonly log: Logger;
  readonly metrics = createAgentMetrics();
  private readonly services: { name: string; start: ServiceStarter }[] = [];
  private readonly running: { name: string; svc: AgentService }[] = [];
  private readonly extraEnv = new Map<string, string>();
  private nl: Netlink | undefined;
  private backend: Backend | undefined;
  private manager: SubnetLeaser | undefined;
  private watcher: LeaseWatcher | undefined;
  private health: HealthServer | undefined;
  private api: HealthServer | undefined;
  private network: NetworkConfig | undefined;
  private rules: AgentRulesSpec | undefined;
  private ctx: AgentContext | undefined;
  private readonly host: AgentHost;
  private repairTimer: TimerHandle | undefined;
  private batchTimer: TimerHandle | undefined;
  /** host.clock.now() when a repair pass last checked the traffic rules. */
  private rulesCheckedAt = -Infinity;
  /** host.clock.now() when the last pass for lease events ended (-Infinity: none yet). */
  private lastEventPassEnd = -Infinity;
  private stopped = false;
  private fatalHandler: ((err: WeftError) => void) | undefined;
  // Readiness pieces.
  private phase = 'starting';
  private leaseStatus: ManagerStatus = { type: 'idle' };
  private watchState: WatcherState = { type: 'not-ready', reason: 'not started' };
  private storeError: string | undefined;
  private rulesOk = false;
  private subnetFileOk = false;
  private lastReport: (ReconcileReport & { at: string }) | undefined;
  /** The peers given to the pass behind lastReport. */
  private lastPeers: readonly Lease[] = [];
  /** lastPeers split by lastReport.skipped, worked out on the first /peers after a pass. */
  private split: { report: ReconcileReport; value: PeerSplit } | undefined;
  private lastReconcileError: string | undefined;
  private readonly peerWatchers = new Set<(peers: readonly Lease[]) => void>();

  constructor(private readonly opts: AgentOptions) {
    this.log = opts.log ?? createLogger({ component: 'weftd' });
    this.host = opts.host ?? systemHost;
  }

  /** Registers a service to start once ready (call before start). */
  addService(name: string, start: ServiceStarter): void {
    this.services.push({ name, start });
  }

  /** Called when the agent cannot go on (own lease lost); the CLI exits non-zero. */
  onFatal(fn: (err: WeftError) => void): void {
    this.fatalHandler = fn;
  }

  get context(): AgentContext | undefined {
    return this.ctx;
  }

  readiness(): Readiness {
    const problems = this.lastReport?.problems ?? [];
    const leaseOk = this.leaseStatus.type === 'ready';
    const watchOk = this.watchState.type === 'ready';
    const storeOk = this.storeError === undefined;
    const services = this.running.flatMap(({ name, svc }) => (svc.readiness ? [{ name, ...svc.readiness() }] : []));
    const ready = this.phase === 'running' && leaseOk && watchOk && storeOk && this.rulesOk && this.subnetFileOk
      && this.lastReconcileError === undefined && services.every((s) => s.ready);
    return {
      ready,
      details: {
        phase: this.phase,
        lease: this.leaseStatus.type === 'ready' || this.leaseStatus.type === 'not-ready'
          ? {
            status: this.leaseStatus.type, subnet: formatCidr(this.leaseStatus.lease.subnet),
            ...(this.leaseStatus.lease.ipv6Subnet && this.leaseStatus.lease.ipv6Subnet !== this.leaseStatus.lease.subnet && { ipv6Subnet: formatCidr(this.leaseStatus.lease.ipv6Subnet) }),
            ...(this.leaseStatus.type === 'not-ready' && { reason: this.leaseStatus.reason }),
          }
          : {
            status: this.leaseStatus.type,
            ...(this.leaseStatus.type === 'fatal' && { reason: this.leaseStatus.error.message }),
            ...(this.leaseStatus.type === 'waiting' && { reason: this.leaseStatus.reason }),
          },
        store: storeOk ? { status: 'reachable' } : { status: 'unreachable', reason: this.storeError },
        watch: this.watchState,
        subnetFile: this.subnetFileOk ? this.opts.subnetFile : null,
        rules: this.rulesOk,
        backend: this.backend?.type ?? null,
        ...(this.ctx && {
          publicIP: formatIP(this.ctx.publicIP.ip), ...(this.network?.ipv6 && this.ctx.publicIP.ip6 && { publicIPv6: formatIP(this.ctx.publicIP.ip6) }),
          publicIface: this.ctx.publicIP.link.name, mtu: this.ctx.mtu,
        }),
        peers: this.watcher?.leases().length ?? 0,
        problems,
        ...(services.length > 0 && { services: Object.fromEntries(services.map((s) => [s.name, { ready: s.ready, details: s.details }])) }),
        ...(this.lastReconcileError !== undefined && { reconcileError: this.lastReconcileError }),
        ...(this.lastReport && { lastReconcile: { at: this.lastReport.at, repairs: this.lastReport.repairs, removals: this.lastReport.removals } }),
      },
    };
  }

  /**
   * GET /peers: the peers the last successful pass programmed (given to it, not skipped by the
   * backend). Split once per pass, on the first request after it, so asking costs a serialise.
   */
  peers(): PeersDocument {
    const report = this.lastReport;
    let split: PeerSplit = { programmed: [], skipped: [] };
    if (report) {
      if (this.split?.report !== report) this.split = { report, value: splitPeers(this.lastPeers, report.skipped) };
      split = this.split.value;
    }
    const l = this.leaseStatus;
    const subnet = l.type === 'ready' || l.type === 'not-ready' ? l.lease.subnet : this.ctx?.subnet;
    const ready = this.readiness().ready;
    return {
      node: this.opts.nodeName ?? hostname(),
      subnet: subnet ? formatCidr(subnet) : null,
      backend: this.backend?.type ?? null,
      ready,
      ...(!ready && { why: this.notReadyReason() }),
      problems: report?.problems ?? [],
      programmed: split.programmed,
      skipped: split.skipped,
      lastReconcile: report?.at ?? null,
      ...(this.lastReconcileError !== undefined && { reconcileError: this.lastReconcileError }),
    };
  }

  /** The first reason /readyz is not 200, in a line (for /peers; /readyz has them all). */
  private notReadyReason(): string {
    const l = this.leaseStatus;
    if (this.phase !== 'running') return `phase ${this.phase}`;
    if (l.type === 'fatal') return `lease: ${l.error.message}`;
    if (l.type === 'waiting' || l.type === 'not-ready') return `lease ${l.type}: ${l.reason}`;
    if (l.type !== 'ready') return `lease ${l.type}`;
    if (this.watchState.type !== 'ready') return `lease watch ${this.watchState.type}${'reason' in this.watchState ? `: ${String(this.watchState.reason)}` : ''}`;
    if (this.storeError !== undefined) return `store unreachable: ${this.storeError}`;
    if (!this.rulesOk) return 'traffic rules not in place';
    if (!this.subnetFileOk) return 'subnet.env not written';
    if (this.lastReconcileError !== undefined) return `last pass failed: ${this.lastReconcileError}`;
    const svc = this.running.find(({ svc: x }) => x.readiness && !x.readiness().ready);
    return svc ? `${svc.name} not ready` : 'not ready';
  }

  /** The JSON documents besides /healthz, /readyz and /metrics. */
  private document(path: string, query: URLSearchParams): unknown {
    if (path === '/peers') return this.peers();
    for (const { svc } of this.running) {
      const doc = svc.document?.(path, query);
      if (doc !== undefined) return doc;
    }
    return this.backendStatus(path);
  }

  /** /<backend type>/status: the backend's own view (e.g. BGP sessions), once it runs. */
  private backendStatus(path: string): unknown {
    const b = this.backend;
    if (!b?.status || this.phase === 'starting' || path !== `/${b.type}/status`) return undefined;
    return b.status();
  }

  private async timed<T>(op: string, p: Promise<T>): Promise<T> {
    const end = this.metrics.storeSeconds.startTimer({ op });
    try {
      return await p;
    } finally {
      end();
    }
  }

  async start(): Promise<AgentContext> {
    const o = this.opts;
    const handler = healthHandler(() => this.readiness(), this.metrics.registry, (path, query) => this.document(path, query));
    if (o.healthAddr !== undefined) {
      this.health = await startHealthServer(o.healthAddr, handler);
      this.log.info('health endpoint listening', { address: this.health.address });
    }
    if (o.apiSocket !== undefined) {
      this.api = await startApiSocket(o.apiSocket, handler);
      this.log.info('api socket listening', { socket: o.apiSocket });
    }
    const storeTimeout = o.storeTimeoutMs ?? 10_000;

    // 1. The network config: the store must answer now, or we stop with a clear error.
    this.phase = 'reading network config';
    let text: string | undefined;
    try {
      text = await withTimeout(this.timed('get-config', o.store.getConfig()), storeTimeout, `store ${o.store.kind} at ${o.store.where} unreachable`, CniCode.Store);
    } catch (err) {
      throw WeftError.wrap(err, CniCode.Store, `cannot read the network config from the ${o.store.kind} store at ${o.store.where}`);
    }
    if (text === undefined) {
      throw new WeftError(CniCode.InvalidNetworkConfig, `no network config in the ${o.store.kind} store at ${o.store.where}; set one with \`weftctl config set FILE\``);
    }
    const network = parseNetworkConfig(text);
    this.network = network;
    const backend = this.host.createBackend(network.backend);
    this.backend = backend;

    // 2. Where this host stands on the underlay.
    const nl = this.host.openNetlink();
    this.nl = nl;
    const pub = this.host.publicInterface(nl, {
      ...(o.iface !== undefined && { iface: o.iface }), ...(o.publicIP !== undefined && { publicIP: o.publicIP }),
      ...(o.publicIPv6 !== undefined && { publicIPv6: o.publicIPv6 }),
    });
    this.log.info('public interface', { iface: pub.link.name, publicIP: formatIP(pub.ip), ...(pub.ip6 && { publicIPv6: formatIP(pub.ip6) }), mtu: pub.link.mtu, backend: backend.type });
    if (network.ipv4 && pub.ip.family !== 4) {
      throw new WeftError(CniCode.InvalidEnvironment, `network config has an IPv4 Network but ${pub.link.name} has no IPv4 address; pass --public-ip, or use an IPv6-only config (EnableIPv4: false)`);
    }
    if (network.ipv6 && !pub.ip6) {
      throw new WeftError(CniCode.InvalidEnvironment, `network config: EnableIPv6, but ${pub.link.name} has no global IPv6 address; pass --public-ipv6`);
    }
    try {
      if (network.ipv4 && readSysctl('net.ipv4.ip_forward') !== '1') this.log.warn('net.ipv4.ip_forward is 0: this host will not forward pod traffic until it is enabled');
      if (network.ipv6 && readSysctl('net.ipv6.conf.all.forwarding') !== '1') this.log.warn('net.ipv6.conf.all.forwarding is 0: this host will not forward IPv6 pod traffic until it is enabled (the CNI plugins turn it on with the first IPv6 pod; with it on, an interface takes router advertisements only with accept_ra=2)');
    } catch { /* sysctl unreadable: not ours to fix */ }

    // 3. Backend devices first: the lease publishes what they are (e.g. the VtepMAC).
    this.phase = 'preparing backend';
    const host: HostContext = {
      nl, network, publicIP: pub.ip, publicIPv6: network.ipv6 ? pub.ip6 : undefined, publicIface: pub.link,
      log: this.log.child({ backend: backend.type }), registry: this.metrics.registry,
    };
    const prep = await backend.prepare(host);
    this.abortIfStopped();

    // 4. The lease.
    this.phase = 'acquiring lease';
    const previous = readLeasedSubnets(o.subnetFile);
    const leaseOpts = {
      store: o.store, config: network, publicIP: pub.ip, backendType: backend.type, backendData: prep.backendData,
      ...(network.ipv6 && { publicIPv6: pub.ip6, backendV6Data: prep.backendV6Data }),
      ...(o.leaseTtlSeconds !== undefined && { ttlSeconds: o.leaseTtlSeconds }),
      previousSubnet: network.ipv4 ? previous.subnet : previous.ipv6Subnet,
      previousIPv6Subnet: previous.ipv6Subnet,
      log: this.log.child({ component: 'lease-manager' }),
      onStatus: (s: ManagerStatus) => this.onLeaseStatus(s),
    };
    const manager: SubnetLeaser = o.store.createLeaser?.(leaseOpts) ?? new LeaseManager(leaseOpts);
    this.manager = manager;
    // A leaser that waits for an assignment (kube: the podCIDR) has no deadline: /readyz says why.
    const acquiring = this.timed('acquire', manager.start());
    const lease = await (manager.waitsForAssignment ? acquiring : withTimeout(acquiring, storeTimeout, `acquiring a lease from ${o.store.where}`, CniCode.Store));
    this.abortIfStopped();
    this.leaseStatus = manager.status;
    if (network.ipv6 && !lease.ipv6Subnet) {
      throw new WeftError(CniCode.InvalidNetworkConfig, `the lease ${formatCidr(lease.subnet)} has no IPv6 subnet, but the network config enables IPv6`);
    }
    await backend.activate(lease.subnet, lease.ipv6Subnet);

    // 5. subnet.env and the traffic rules.
    this.phase = 'writing subnet file';
    const clusterNetwork = (network.ipv4 ?? network.ipv6)!.network;
    const ipv6Network = network.ipv6?.network;
    const writeEnv = () => {
      writeSubnetFile(o.subnetFile, {
        network: network.ipv4?.network, subnet: ipv4SubnetOf(lease), ipv6Network, ipv6Subnet: lease.ipv6Subnet,
        mtu: prep.mtu, ipv6Mtu: network.ipv6 ? prep.ipv6Mtu ?? prep.mtu : undefined, ipMasq: o.ipMasq, backend: backend.type, extra: this.extraEnv,
      });
      this.subnetFileOk = true;
    };
    writeEnv();
    this.phase = 'applying traffic rules';
    this.rules = {
      network: clusterNetwork, ipMasq: o.ipMasq, subnet: lease.subnet, ...(o.trackConnections && { track: true }),
      ...(network.ipv4 && ipv6Network && { ipv6Network }),
    };
    await this.ensureRules();

    // 6. Watch the others; the first listing arrives as one batch of `added`.
    this.phase = 'watching leases';
    const watcher = manager.watchOthers(() => { if (!this.batchTimer && !this.passes.busy) this.log.debug('lease event after a quiet spell', { at: Math.round(performance.timeOrigin + performance.now()) }); this.scheduleReconcile(); }, (s) => { this.watchState = s; });
    this.watcher = watcher;
    await withTimeout(this.timed('list', watcher.start()), storeTimeout, `listing leases in ${o.store.where}`, CniCode.Store);
    this.abortIfStopped();
    this.watchState = watcher.state;
    // The listing's `added` events armed the batch timer; the full pass below reads the same
    // leases, so a pass for them after it would only repeat it.
    this.batchTimer?.cancel();
    this.batchTimer = undefined;
    await this.reconcileNow('initial');

    const clusterNetworks = [network.ipv4?.network, network.ipv6?.network].filter((c): c is Cidr => c !== undefined);
    const subnets = [ipv4SubnetOf(lease), lease.ipv6Subnet].filter((c): c is Cidr => c !== undefined);
    this.ctx = {
      nl, network, clusterNetwork, subnet: lease.subnet, clusterNetworks, subnets, mtu: prep.mtu, ipMasq: o.ipMasq, publicIP: pub,
      backendType: backend.type, subnetFile: o.subnetFile, nodeName: o.nodeName, log: this.log, metrics: this.metrics,
      setSubnetEnv: (key, value) => { this.extraEnv.set(key, value); writeEnv(); },
      watchPeers: (fn) => {
        this.peerWatchers.add(fn);
        fn(this.lastPeers);
        return () => { this.peerWatchers.delete(fn); };
      },
    };
    for (const s of this.services) {
      const svc = await s.start(this.ctx);
      this.running.push({ name: s.name, svc });
      // A stop() during the service's start has already closed the others: close this one too.
      if (this.stopped) await svc.close().catch(() => {});
      this.abortIfStopped();
      this.log.info('service started', { service: s.name });
    }
    const period = o.repairIntervalMs ?? 5000;
    const armRepair = (): void => {
      if (this.stopped) return;
      // A fixed period, as setInterval: passes do not overlap anyway (reconcileNow queues).
      this.repairTimer = this.host.clock.schedule(period, () => { armRepair(); void this.repairPass(); });
    };
    armRepair();
    this.phase = 'running';
    this.metrics.ready.set(this.readiness().ready ? 1 : 0);
    this.log.info('weftd ready', { subnet: formatLeaseSubnets(lease), mtu: prep.mtu, peers: watcher.leases().length, subnetFile: o.subnetFile });
    return this.ctx;
  }

  private onLeaseStatus(s: ManagerStatus): void {
    this.leaseStatus = s;
    if (s.type === 'fatal') {
      this.metrics.errors.inc({ kind: 'lease' });
      this.fatalHandler?.(s.error);
    }
  }

  private async ensureRules(): Promise<void> {
    const spec = this.rules;
    if (!spec) return;
    try {
      if (!(await this.host.trafficRules.inPlace(spec))) {
        await this.host.trafficRules.apply(spec);
        if (this.rulesOk) this.log.warn('traffic rules were changed by someone else; restored', { table: 'inet weft' });
      }
      this.rulesOk = true;
    } catch (err) {
      this.rulesOk = false;
      this.metrics.errors.inc({ kind: 'rules' });
      throw err;
    }
  }

  /**
   * Events after a quiet spell are applied on the next turn of the event loop (a store delivers a
   * burst's first part as one read, so that turn already has it all); while events keep coming,
   * passes start at least batchDelayMs after the previous one ended, so a long burst costs a
   * handful of passes rather than one per store message.
   */
  private scheduleReconcile(): void {
    if (this.stopped || this.batchTimer) return;
    const delay = Math.max(0, this.lastEventPassEnd + (this.opts.batchDelayMs ?? 5) - this.host.clock.now());
    this.batchTimer = this.host.clock.schedule(delay, () => {
      this.batchTimer = undefined;
      void this.reconcileNow('lease events').catch(() => {});
    });
  }

  /**
   * One reconcile at a time; a request during a pass makes one more pass afterwards. A full pass
   * (repair, start-up) requested meanwhile is never folded into an incremental one: under steady
   * lease churn the kernel would otherwise never be re-checked.
   */
  private readonly passes = new CoalescingLoop<string>(async (why) => {
    await this.reconcileOnce(why);
    if (why === 'lease events') this.lastEventPassEnd = this.host.clock.now();
  }, (owed, next) => (next === 'lease events' ? owed : next));

  private reconcileNow(why: string): Promise<void> {
    return this.passes.request(why);
  }

  private async reconcileOnce(why: string): Promise<void> {
    const backend = this.backend;
    const watcher = this.watcher;
    if (!backend || !watcher || this.stopped) return;
    const peers = watcher.leases();
    const end = this.metrics.reconcileSeconds.startTimer();
    const t0 = performance.now();
    try {
      const report = await backend.reconcile(peers, { full: why !== 'lease events' });
      this.log.debug('reconcile pass', { why, peers: peers.length, written: report.repairs, removed: report.removals, startedAt: Math.round(performance.timeOrigin + t0), ms: Math.round(performance.now() - t0) });
      this.metrics.reconcileRuns.inc();
      this.metrics.reconcileRepairs.inc(report.repairs);
      this.metrics.reconcileRemovals.inc(report.removals);
      this.metrics.leases.set(peers.length + 1);
      this.metrics.peers.set(peers.length);
      const before = this.lastReport?.problems.join('\n');
      this.lastReport = { ...report, at: new Date().toISOString() };
      this.lastPeers = peers;
      this.lastReconcileError = undefined;
      for (const fn of this.peerWatchers) {
        try {
          fn(peers);
        } catch (err) {
          this.log.warn('peer watcher failed', { error: err instanceof Error ? err.message : String(err) });
        }
      }
      if (report.repairs + report.removals > 0) this.log.info('dataplane reconciled', { why, peers: peers.length, written: report.repairs, removed: report.removals });
      if (report.problems.length > 0 && report.problems.join('\n') !== before) this.log.warn('dataplane problems', { problems: report.problems });
    } catch (err) {
      this.metrics.errors.inc({ kind: 'reconcile' });
      this.lastReconcileError = err instanceof Error ? err.message : String(err);
      this.log.error('reconcile failed', { why, error: this.lastReconcileError });
    } finally {
      end();
      this.metrics.ready.set(this.readiness().ready ? 1 : 0);
    }
  }

  /** The periodic pass: store still there? rules and dataplane still right? */
  private async repairPass(): Promise<void> {
    if (this.stopped) return;
    try {
      const store = this.opts.store;
      await withTimeout(this.timed('probe', store.probe ? store.probe() : store.getConfig().then(() => {})), 3000, 'store probe', CniCode.Store);
      if (this.storeError !== undefined) this.log.info('store reachable again', { store: this.opts.store.where });
      this.storeError = undefined;
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      if (this.storeError === undefined) this.log.warn('store unreachable; keeping the dataplane as it is', { store: this.opts.store.where, reason });
      this.storeError = reason;
      this.metrics.errors.inc({ kind: 'store' });
    }
    // Checking the rules starts an nft process, and each start forks weftd's whole heap on its
    // event loop (~8 ms at 5000 peers): with a short --repair-interval they are checked at most
    // once a second, the dataplane on every pass.
    const now = this.host.clock.now();
    if (now - this.rulesCheckedAt >= RULES_CHECK_MIN_MS) {
      this.rulesCheckedAt = now;
      try {
        await this.ensureRules();
      } catch (err) {
        this.log.error('cannot restore traffic rules', { error: err instanceof Error ? err.message : String(err) });
      }
    }
    await this.reconcileNow('repair');
  }

  /**
   * start() awaits the store and the kernel; a stop() meanwhile has torn down what existed, so
   * start must not go on to arm timers or create watchers nobody would close.
   */
  private abortIfStopped(): void {
    if (this.stopped) throw new WeftError(CniCode.Internal, 'weftd was stopped while starting');
  }

  /**
   * Stops the agent. The dataplane stays (so traffic flows across a restart) unless
   * keepDataplane is false; the lease stays (a restart takes it back) unless release is set.
   */
  async stop(opts: { keepDataplane?: boolean; release?: boolean } = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.repairTimer?.cancel();
    this.batchTimer?.cancel();
    this.passes.close();
    await this.passes.idle();
    for (const { name, svc } of this.running.splice(0).reverse()) {
      await svc.close().catch((err: unknown) => this.log.warn('service did not close cleanly', { service: name, error: String(err) }));
    }
    await this.watcher?.close().catch(() => {});
    await this.manager?.stop({ release: opts.release ?? false });
    await this.backend?.close({ keepDataplane: opts.keepDataplane ?? true }).catch(() => {});
    await this.health?.close();
    await this.api?.close();
    this.nl?.close();
    this.phase = 'stopped';
  }
}
