// weftd's network policy service: keeps this host's `inet weft-policy` table equal to what the
// store's policies, namespaces and endpoints say about this host's endpoints.
//
// Inputs: three store watches (policies/, namespaces/, endpoints/) and this host's endpoint
// records (files the weft plugin writes next to subnet.env; see src/policy/endpoint-record.ts).
// The local records are the truth for this host's endpoints: the world the enforcer compiles is
// the store's endpoints of other hosts plus the local records, and the records are published to
// `endpoints/<host>/<ns>/<pod>/<ifname>` for the other hosts (stale keys of this host removed).
// Every change is coalesced into one pass; the enforcer turns it into element updates when only
// memberships moved. In weftd's fast path the plugin's ADD awaits the pass that includes its pod.
import { CoalescingLoop } from '../coalescing-loop.js';
import { mkdirSync, watch as fsWatch, type FSWatcher } from 'node:fs';
import { Counter, Gauge, Histogram } from 'prom-client';
import { CniCode, WeftError } from '../errors.js';
import type { Logger } from '../log.js';
import { type Cidr, type IP, tryParseIP } from '../net/ip.js';
import {
  type EndpointChange, type EndpointChanges, type EndpointRecord, endpointStoreKey, readEndpointRecords, recordToEndpoint,
} from '../policy/endpoint-record.js';
import { type CounterReading, type EnforceResult, localNft, type NftRunner, PolicyEnforcer } from '../policy/enforcer.js';
import { POLICY_COUNTERS_PATH, type PolicyCountersDoc } from '../policy/counters.js';
import { type Endpoint, type PolicyWorld } from '../policy/model.js';
import { ENDPOINTS, NAMESPACES, PODS, POLICIES } from '../policy/store.js';
import { ParsedCache, endpointCache, namespaceCache, policyCache } from '../policy/parsed-cache.js';
import type { KeyValueEvent, KeyValueStore, KeyValueWatch } from '../store/kv.js';
import type { AgentContext, AgentService, ServiceStarter } from './agent.js';

export interface PolicyServiceOptions {
  readonly kv: KeyValueStore;
  /** The node name endpoints carry in `host`. */
  readonly host: string;
  /** This node's endpoint records directory. */
  readonly recordDir: string;
  /** This node's pod subnets, for the guard against not-yet-known local pods. */
  readonly subnets: readonly Cidr[];
  readonly log: Logger;
  /** Where the policy table goes (weftd: localNft(), its own host namespace). */
  readonly nft: NftRunner;
  /**
   * The cluster network(s) whose pod-to-pod traffic skips conntrack while no policy exists
   * (weftd: its cluster network with --conntrack-bypass). Absent: conntrack always runs
   * (and a bypass table an earlier run left is deleted).
   */
  readonly conntrackBypass?: readonly Cidr[];
  /** Period of the table repair check (default 5 s). */
  readonly repairIntervalMs?: number;
  /** How long changes are gathered into one pass (default 10 ms). */
  readonly batchDelayMs?: number;
  readonly metrics?: PolicyMetrics;
  /**
   * The store is the Kubernetes API (kv offers `pods/`): a local endpoint's labels and named
   * ports come from its Pod object (kubelet passes none in CNI_ARGS), and nothing is published —
   * the other nodes read pod addresses from Pod status.
   */
  readonly podsFromStore?: boolean;
  /**
   * Where the plugins weftd runs in-process announce their ADDs and DELs (weftd: the one it also
   * gives its CNI server). Absent: only the record directory is followed.
   */
  readonly endpointChanges?: EndpointChanges;
  /** NFLOG group of packets a policy denied (weftd's --flow-log-group; 0: none; default 7). */
  readonly logGroup?: number;
}

/** A Pod's policy-relevant metadata in the kube view (`pods/<ns>/<name>`). */
interface PodInfo {
  readonly labels: Record<string, string>;
  readonly namedPorts?: Record<string, { port: number; protocol: string }>;
}

function parsePodInfo(_key: string, v: unknown): PodInfo {
  const o = v as Partial<PodInfo> | null;
  if (typeof o !== 'object' || o === null || typeof o.labels !== 'object' || o.labels === null) throw new WeftError(CniCode.InvalidNetworkConfig, 'pod info without labels');
  return o as PodInfo;
}

export interface PolicyMetrics {
  readonly updates: Counter<'result'>;
  readonly seconds: Histogram;
  readonly endpoints: Gauge<'where'>;
  readonly errors: Counter<'kind'>;
}

export function createPolicyMetrics(registers: AgentContext['metrics']['registry'][]): PolicyMetrics {
  return {
    updates: new Counter({ name: 'weft_policy_updates_total', help: 'Policy table passes by result (unchanged, elements, replaced, repaired)', labelNames: ['result'] as const, registers }),
    seconds: new Histogram({ name: 'weft_policy_enforce_seconds', help: 'From a change being noticed to the kernel table holding it', buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2], registers }),
    endpoints: new Gauge({ name: 'weft_policy_endpoints', help: 'Endpoints known to the policy service (local records, all in the store)', labelNames: ['where'] as const, registers }),
    errors: new Counter({ name: 'weft_policy_errors_total', help: 'Policy errors by kind (apply, publish, record, store)', labelNames: ['kind'] as const, registers }),
  };
}

/** The least time between two readings of the table's counters (each is an nft process). */
export const COUNTER_READ_MIN_MS = 1000;

/**
 * weftd's verdict counters on /metrics, read from the kernel when scraped (through the service's
 * cache). They are counters over totals kept monotonic by the enforcer, so each scrape sets them
 * anew; a failed reading leaves the last values.
 */
export function createVerdictMetrics(registers: AgentContext['metrics']['registry'][], read: () => Promise<CounterReading>, log?: Logger): void {
  let reading: Promise<CounterReading | undefined> | undefined;
  const shared = (): Promise<CounterReading | undefined> => {
    // One reading serves the four metrics of a scrape.
    reading ??= read().catch((err: unknown) => {
      log?.warn('policy counters not read', { reason: err instanceof Error ? err.message : String(err) });
      return undefined;
    }).finally(() => { setImmediate(() => { reading = undefined; }); });
    return reading;
  };
  const metric = <L extends string>(name: string, help: string, labelNames: readonly L[], rows: (r: CounterReading) => { labels: Record<L, string>; value: number }[]) => new Counter({
    name, help, labelNames, registers,
    async collect() {
      const r = await shared();
      if (!r) return;
      this.reset();
      for (const row of rows(r)) this.inc(row.labels, row.value);
    },
  });
  const policyRows = (field: 'packets' | 'bytes') => (r: CounterReading) => r.policies.map((c) => ({ labels: { policy: c.policy, direction: c.direction, verdict: c.verdict }, value: c[field] }));
  const endpointRows = (field: 'packets' | 'bytes') => (r: CounterReading) => r.endpoints.map((c) => ({ labels: { namespace: c.namespace, pod: c.pod, direction: c.direction, verdict: c.verdict }, value: c[field] }));
  const judged = 'judged by the policy chains (the first packet of each connection, and every denied one)';
  metric('weft_policy_packets_total', `Packets ${judged}, per policy ("ns/name"): allowed by one of its rules, or denied while it isolated the endpoint`, ['policy', 'direction', 'verdict'] as const, policyRows('packets'));
  metric('weft_policy_bytes_total', `Bytes of the packets ${judged}, per policy`, ['policy', 'direction', 'verdict'] as const, policyRows('bytes'));
  metric('weft_policy_endpoint_packets_total', `Packets ${judged}, per local endpoint isolated in that direction`, ['namespace', 'pod', 'direction', 'verdict'] as const, endpointRows('packets'));
  metric('weft_policy_endpoint_bytes_total', `Bytes of the packets ${judged}, per local endpoint`, ['namespace', 'pod', 'direction', 'verdict'] as const, endpointRows('bytes'));
}

export type PolicyState =
  | { readonly type: 'starting' }
  | {
    readonly type: 'enforcing'; readonly last: EnforceResult['type'] | 'removed'; readonly at: string; readonly skipped: number;
    /** The world the last pass enforced (weftctl status shows them). */
    readonly policies: number; readonly endpoints: number;
  }
  | { readonly type: 'failed'; readonly reason: string; readonly at: string };


export class PolicyService implements AgentService {
  private readonly enforcer: PolicyEnforcer;
  private readonly policies = policyCache();
  private readonly namespaces = namespaceCache();
  private readonly endpoints = endpointCache();
  private readonly pods = new ParsedCache<PodInfo>(parsePodInfo);
  private records = new Map<string, EndpointRecord>();
  /** Local records as endpoints, parsed once per record content (a pass must not re-parse hundreds). */
  private readonly localParsed = new Map<string, { json: string; ep: Endpoint | undefined }>();
  /**
   * What this service has written to (value) or deleted from (null) its own endpoint keys and the
   * store has not echoed back yet: without it, passes that run before the watch delivers our
   * own puts would put the same keys again (hundreds of times over during a burst of new pods).
   */
  private readonly published = new Map<string, string | null>();
  /** A rescan of the records directory in progress, and whether another is owed. */
  private rescanning: Promise<void> | undefined;
  private rescanOwed = false;
  /**
   * In-process announcements made while a rescan reads the directory. The listing may predate
   * them (a fast-path ADD's file renamed into place just after readdir): they are laid over it,
   * or the rescan would briefly drop a pod the kernel and the store already have.
   */
  private announcedDuringRescan: Map<string, EndpointRecord | null> | undefined;
  private readonly watches: KeyValueWatch[] = [];
  private dirWatch: FSWatcher | undefined;
  private unlisten: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private repairTimer: NodeJS.Timeout | undefined;
  /**
   * Passes and repairs, one at a time (never interleaving their nft calls); a repair owed covers
   * a pass owed, as it begins with one.
   */
  private readonly loop = new CoalescingLoop<'pass' | 'repair'>(async (kind) => {
    if (this.dirty) await this.passOnce();
    if (kind === 'repair') await this.repairOnce();
  }, (owed, next) => (owed === 'repair' ? owed : next));
  /** The world changed since the last pass. */
  private dirty = false;
  private dirtySince = 0;
  private synced = { policies: false, namespaces: false, endpoints: false, pods: false };
  private closed = false;
  private stateNow: PolicyState = { type: 'starting' };
  private publishing: Promise<void> = Promise.resolve();

  /** The last counter reading (or the one under way) and when it began. */
  private counterCache: { at: number; reading: Promise<CounterReading> } | undefined;

  constructor(private readonly opts: PolicyServiceOptions) {
    this.enforcer = new PolicyEnforcer({
      host: opts.host, nft: opts.nft, log: opts.log, ...(opts.conntrackBypass && { conntrackBypass: opts.conntrackBypass }),
      ...(opts.logGroup !== undefined && { logGroup: opts.logGroup }),
    });
  }

  get state(): PolicyState {
    return this.stateNow;
  }

  /**
   * The verdict counters, read from the kernel at most once per COUNTER_READ_MIN_MS: every
   * reading starts nft, and each start forks weftd's whole heap, so scrapes and CLI calls in
   * between share the last one.
   */
  counters(maxAgeMs = COUNTER_READ_MIN_MS): Promise<CounterReading> {
    const now = performance.now();
    const cached = this.counterCache;
    if (cached && now - cached.at < maxAgeMs) return cached.reading;
    const reading = this.enforcer.readCounters();
    const entry = { at: now, reading };
    this.counterCache = entry;
    reading.catch(() => { if (this.counterCache === entry) this.counterCache = undefined; });
    return reading;
  }

  /** GET /policy/counters. */
  async countersDoc(): Promise<PolicyCountersDoc> {
    const r = await this.counters();
    return { node: this.opts.host, at: r.at.toISOString(), policies: r.policies, endpoints: r.endpoints };
  }

  /** Lists everything, applies the first table, then follows changes. */
  async start(): Promise<void> {
    mkdirSync(this.opts.recordDir, { recursive: true });
    // br_netfilter has one switch per family: with the IPv6 one off, bridged pods' IPv6 traffic
    // never meets the rules, while IPv4 is enforced and everything looks fine.
    for (const family of [...new Set(this.opts.subnets.map((c) => c.ip.family))].sort()) {
      // Undefined (no br_netfilter at all) is a routed node's normal state and says nothing.
      if (this.opts.nft.bridgeNetfilter(family) === false) {
        this.opts.log.warn('policies do not see pod-to-pod traffic across a bridge for this family', {
          family, sysctl: `net.bridge.bridge-nf-call-${family === 4 ? 'iptables' : 'ip6tables'}=0`,
        });
      }
    }
    await this.rescanRecords();
    if (!this.opts.podsFromStore) this.synced.pods = true;
    const first = new Promise<void>((resolve) => {
      const follow = (prefix: string, cache: ParsedCache<unknown>, which: keyof PolicyService['synced']) => {
        this.watches.push(this.opts.kv.watch(prefix, (ev) => {
          this.onStoreEvent(ev, cache, which);
          if (Object.values(this.synced).every(Boolean)) resolve();
        }));
      };
      follow(POLICIES, this.policies as ParsedCache<unknown>, 'policies');
      follow(NAMESPACES, this.namespaces as ParsedCache<unknown>, 'namespaces');
      follow(ENDPOINTS, this.endpoints as ParsedCache<unknown>, 'endpoints');
      if (this.opts.podsFromStore) follow(PODS, this.pods as ParsedCache<unknown>, 'pods');
    });
    await first;
    try {
      this.dirWatch = fsWatch(this.opts.recordDir, () => { void this.requestRescan(); });
      this.dirWatch.on('error', () => { this.dirWatch?.close(); this.dirWatch = undefined; });
    } catch { /* the repair pass rescans too */ }
    this.unlisten = this.opts.endpointChanges?.listen((c) => this.endpointChanged(c));
    this.dirty = true;
    this.dirtySince = performance.now();
    await this.loop.request('pass');
    const period = this.opts.repairIntervalMs ?? 5000;
    this.repairTimer = setInterval(() => { void this.repairPass(); }, period);
    this.repairTimer.unref?.();
  }

  private onStoreEvent(ev: KeyValueEvent, cache: ParsedCache<unknown>, which: keyof PolicyService['synced']): void {
    switch (ev.type) {
      case 'snapshot': cache.replaceAll(ev.entries); this.synced[which] = true; if (which === 'endpoints') this.published.clear(); break;
      // From here on the cache shows what the store holds for the key.
      case 'put': cache.set(ev.key, ev.value); this.published.delete(ev.key); break;
      case 'delete': cache.delete(ev.key); this.published.delete(ev.key); break;
      case 'error':
        this.opts.metrics?.errors.inc({ kind: 'store' });
        this.opts.log.warn('policy store watch', { reason: ev.reason });
        return;
    }
    this.schedule();
  }

  /** In-process ADD/DEL (weftd's fast path): resolves once the kernel holds the change. */
  async endpointChanged(c: EndpointChange): Promise<void> {
    if (c.dir !== this.opts.recordDir) return;
    if (c.type === 'added') {
      await this.learnPod(c.record);
      const id = `${c.record.containerID}/${c.record.ifname}`;
      this.records.set(id, c.record);
      this.announcedDuringRescan?.set(id, c.record);
    } else {
      const id = `${c.containerID}/${c.ifname}`;
      this.records.delete(id);
      this.announcedDuringRescan?.set(id, null);
    }
    await this.flush();
    if (this.stateNow.type === 'failed') throw new WeftError(CniCode.Internal, `network policy not enforced: ${this.stateNow.reason}`);
  }

  /**
   * Rescans the records directory and schedules a pass. A burst of files (many ADDs at once) fires
   * the directory watch once per file: they share one rescan in flight and at most one after it,
   * instead of one full read of the directory each.
   */
  private requestRescan(): Promise<void> {
    if (this.rescanning) { this.rescanOwed = true; return this.rescanning; }
    this.rescanning = (async () => {
      do {
        this.rescanOwed = false;
        try {
          await this.rescanRecords();
          await Promise.all([...this.records.values()].map((r) => this.learnPod(r)));
        } catch (err) {
          this.opts.metrics?.errors.inc({ kind: 'record' });
          this.opts.log.warn('endpoint records not rescanned', { reason: err instanceof Error ? err.message : String(err) });
        }
        this.schedule();
      } while (this.rescanOwed && !this.closed);
    })().finally(() => { this.rescanning = undefined; });
    return this.rescanning;
  }

  private async rescanRecords(): Promise<void> {
    const announced = new Map<string, EndpointRecord | null>();
    this.announcedDuringRescan = announced;
    let listing: Awaited<ReturnType<typeof readEndpointRecords>>;
    try {
      listing = await readEndpointRecords(this.opts.recordDir);
    } finally {
      if (this.announcedDuringRescan === announced) this.announcedDuringRescan = undefined;
    }
    const { records, bad } = listing;
    for (const b of bad) this.opts.log.warn('unreadable endpoint record skipped', b);
    if (bad.length > 0) this.opts.metrics?.errors.inc({ kind: 'record' }, bad.length);
    const next = new Map(records.map((r) => [`${r.containerID}/${r.ifname}`, r]));
    for (const [id, rec] of announced) if (rec) next.set(id, rec); else next.delete(id);
    this.records = next;
  }

  private schedule(): void {
    if (this.closed) return;
    if (!this.dirty) this.dirtySince = performance.now();
    this.dirty = true;
    if (this.timer) return;
    this.timer = setTimeout(() => { this.timer = undefined; void this.loop.request('pass'); }, this.opts.batchDelayMs ?? 10);
  }

  /** Runs passes until nothing is owed. */
  private async flush(): Promise<void> {
    if (!this.dirty) this.dirtySince = performance.now();
    this.dirty = true;
    while (this.dirty && !this.closed) await this.loop.request('pass');
  }

  private async passOnce(): Promise<void> {
    const since = this.dirtySince;
    const began = performance.now();
    this.dirty = false;
    const { world, extraKnown } = this.world();
    this.opts.log.debug('policy pass', { waitedMs: Math.round(began - since), worldMs: Math.round(performance.now() - began), policies: world.policies.length, endpoints: world.endpoints.length });
    try {
      // No policy anywhere: no table at all, so hosts without policies pay nothing per packet
      // (and pod-to-pod traffic skips conntrack when the bypass is configured). The first pass
      // clears too: a table left by an earlier run must not outlive the policies it came from.
      let r: EnforceResult | { type: 'removed' };
      if (world.policies.length === 0) {
        if (!this.enforcer.idle) { await this.enforcer.remove(); r = { type: 'removed' }; } else r = { type: 'unchanged' };
      } else {
        r = await this.enforcer.update(world, { subnets: this.opts.subnets, extraKnown });
      }
      this.opts.metrics?.updates.inc({ result: r.type });
      this.opts.metrics?.seconds.observe((performance.now() - since) / 1000);
      this.stateNow = {
        type: 'enforcing', last: r.type, at: new Date().toISOString(), skipped: this.policies.bad() + this.namespaces.bad() + this.endpoints.bad(),
        policies: world.policies.length, endpoints: world.endpoints.length,
      };
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      this.opts.metrics?.errors.inc({ kind: 'apply' });
      this.opts.log.error('policy table not applied', { reason });
      this.stateNow = { type: 'failed', reason, at: new Date().toISOString() };
    }
    this.publishing = this.publishing.then(() => this.publish()).catch((err: unknown) => {
      this.opts.metrics?.errors.inc({ kind: 'publish' });
      this.opts.log.warn('endpoint records not published', { reason: err instanceof Error ? err.message : String(err) });
    });
  }

  /** The store's world with this host's endpoints taken from the local records. */
  private world(): { world: PolicyWorld; extraKnown: IP[] } {
    const local: Endpoint[] = [];
    const extraKnown: IP[] = [];
    for (const [id, own] of this.records) {
      const rec = this.withPodInfo(own);
      const json = JSON.stringify(rec);
      let cached = this.localParsed.get(id);
      if (cached?.json !== json) {
        let ep: Endpoint | undefined;
        try {
          ep = recordToEndpoint(this.opts.host, rec);
        } catch (err) {
          this.opts.log.warn('endpoint record does not make an endpoint', { containerID: rec.containerID, reason: (err as Error).message });
        }
        cached = { json, ep };
        this.localParsed.set(id, cached);
      }
      const ep = cached.ep;
      if (ep) local.push(ep);
      else for (const s of rec.ips) { const ip = tryParseIP(s); if (ip) extraKnown.push(ip); }
    }
    for (const id of [...this.localParsed.keys()]) if (!this.records.has(id)) this.localParsed.delete(id);
    const remote = this.endpoints.values().filter((e) => e.host !== this.opts.host);
    this.opts.metrics?.endpoints.set({ where: 'local' }, local.length);
    this.opts.metrics?.endpoints.set({ where: 'store' }, remote.length + local.length);
    return { world: { policies: this.policies.values(), namespaces: this.namespaces.values(), endpoints: [...remote, ...local] }, extraKnown };
  }

  /**
   * Kube mode: the pod's labels must be known before its first packet, but the ADD may beat the
   * pod watch's event (the kubelet runs CNI right after the pod is bound) — then ask for the pod.
   */
  private async learnPod(rec: EndpointRecord): Promise<void> {
    if (!this.opts.podsFromStore || rec.namespace === undefined || rec.pod === undefined) return;
    const key = `${PODS}${rec.namespace}/${rec.pod}`;
    if (this.pods.get(key)) return;
    try {
      const value = await this.opts.kv.get(key);
      if (value !== undefined && !this.pods.get(key)) this.pods.set(key, value);
    } catch (err) {
      this.opts.log.warn('cannot read the pod of a new endpoint; its labels follow with the pod watch', { pod: `${rec.namespace}/${rec.pod}`, reason: err instanceof Error ? err.message : String(err) });
    }
  }

  /** In kube mode a record takes its pod's labels and named ports from the Pod object. */
  private withPodInfo(rec: EndpointRecord): EndpointRecord {
    if (!this.opts.podsFromStore || rec.namespace === undefined || rec.pod === undefined) return rec;
    const info = this.pods.get(`${PODS}${rec.namespace}/${rec.pod}`);
    if (!info) return rec;
    const { namedPorts: _n, ...rest } = rec;
    return { ...rest, labels: info.labels, ...(info.namedPorts && { namedPorts: info.namedPorts }) };
  }

  /** Makes endpoints/<host>/… in the store equal to the local records. */
  private async publish(): Promise<void> {
    if (this.opts.podsFromStore) return;
    const want = new Map<string, string>();
    for (const rec of this.records.values()) {
      const key = endpointStoreKey(this.opts.host, rec);
      if (!key || rec.ips.length === 0) continue;
      want.set(key, JSON.stringify({
        namespace: rec.namespace, pod: rec.pod, labels: rec.labels, ips: rec.ips, host: this.opts.host, ifname: rec.ifname,
        ...(rec.namedPorts && { namedPorts: rec.namedPorts }),
      }));
    }
    const mine = `${ENDPOINTS}${this.opts.host}/`;
    // What the store holds as far as we know: its echo, or our own write not echoed yet.
    const held = (key: string): string | undefined => {
      const p = this.published.get(key);
      return p === undefined ? this.endpoints.raw(key) : p ?? undefined;
    };
    for (const key of [...this.endpoints.keys()]) {
      if (!key.startsWith(mine) || want.has(key) || held(key) === undefined) continue;
      this.published.set(key, null);
      try { await this.opts.kv.delete(key); } catch (err) { this.published.delete(key); throw err; }
    }
    for (const [key, value] of want) {
      if (held(key) === value) continue;
      this.published.set(key, value);
      try { await this.opts.kv.put(key, value); } catch (err) { this.published.delete(key); throw err; }
    }
  }

  private async repairPass(): Promise<void> {
    if (this.closed || this.loop.busy) return;
    try {
      await this.requestRescan();
    } catch (err) {
      this.repairFailed(err);
      return;
    }
    await this.loop.request('repair');
  }

  private async repairOnce(): Promise<void> {
    try {
      const r = await this.enforcer.repair();
      if (r.type === 'repaired') this.opts.metrics?.updates.inc({ result: 'repaired' });
    } catch (err) {
      this.repairFailed(err);
    }
  }

  private repairFailed(err: unknown): void {
    this.opts.metrics?.errors.inc({ kind: 'apply' });
    this.opts.log.warn('policy repair failed', { reason: err instanceof Error ? err.message : String(err) });
  }

  /** /readyz detail. */
  readiness(): { ready: boolean; details: unknown } {
    return { ready: this.stateNow.type === 'enforcing', details: this.stateNow };
  }

  /** Waits for the passes and publications owed so far (tests, shutdown). */
  async settle(): Promise<void> {
    await this.flush();
    await this.publishing;
  }

  /** Stops following; the table stays (a restarted weftd finds it in place). */
  async close(): Promise<void> {
    this.unlisten?.();
    this.unlisten = undefined;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.repairTimer) clearInterval(this.repairTimer);
    this.dirWatch?.close();
    await Promise.all(this.watches.map((w) => w.close()));
    await this.rescanning;
    this.loop.close();
    await this.loop.idle();
    await this.publishing;
  }
}

/** weftd's hook: the service on the agent's store, subnet and repair period. */
export function policyServiceStarter(
  open: () => Promise<KeyValueStore>, host: string, recordDir: string, endpointChanges: EndpointChanges,
  repairIntervalMs?: number, conntrackBypass = false, podsFromStore = false, logGroup?: number,
): ServiceStarter {
  return async (ctx) => {
    const kv = await open();
    const log = ctx.log.child({ service: 'policy' });
    const svc = new PolicyService({
      kv, host, recordDir, subnets: ctx.subnets, nft: localNft(), log, podsFromStore, endpointChanges,
      ...(conntrackBypass && { conntrackBypass: ctx.clusterNetworks }),
      metrics: createPolicyMetrics([ctx.metrics.registry]),
      ...(repairIntervalMs !== undefined && { repairIntervalMs }),
      ...(logGroup !== undefined && { logGroup }),
    });
    await svc.start();
    createVerdictMetrics([ctx.metrics.registry], () => svc.counters(), log);
    return {
      readiness: () => svc.readiness(),
      document: (path) => (path === POLICY_COUNTERS_PATH ? svc.countersDoc() : undefined),
      close: async () => { await svc.close(); await kv.close(); },
    } satisfies AgentService;
  };
}
