// The web view's live model: follows the store (every lease, the network config, policies,
// namespaces and endpoints) and asks the agents every interval, and hands out a new model each
// time something the page shows changed. Lease and policy changes arrive through the store's
// watches: the first change after a quiet spell goes out at once, a burst after it as one model
// at most every debounceMs.
import { formatCidr } from '../net/ip.js';
import { createLogger } from '../log.js';
import { parseNetworkConfig } from '../store/config.js';
import type { KeyValueStore, KeyValueWatch } from '../store/kv.js';
import type { SubnetStore } from '../store/types.js';
import { LeaseWatcher } from '../store/watch.js';
import { ENDPOINTS, NAMESPACES, POLICIES } from '../policy/store.js';
import { endpointCache, namespaceCache, policyCache, type ParsedCache } from '../policy/parsed-cache.js';
import type { PolicyWorld } from '../policy/model.js';
import type { StoreView } from '../doctor/doctor.js';
import { type AgentAnswer, buildModel } from './build.js';
import { AgentPoller, type AgentTarget } from './agents.js';
import { CoalescingLoop } from '../coalescing-loop.js';
import type { UiModel } from './model.js';
import type { FlowRecord } from '../flows/record.js';

export interface ModelFeedOptions {
  readonly store: SubnetStore;
  readonly kv: KeyValueStore;
  readonly source: UiModel['source'];
  /** The weftds to ask, worked out again before each round (they may follow the leases). */
  readonly agents: (leases: StoreView['leases']) => AgentTarget[];
  /** How often the agents are asked and the network config read; default 1000 ms. */
  readonly intervalMs?: number;
  /** At most one model this often (a burst of changes is folded into it); default 50 ms. */
  readonly debounceMs?: number;
}

type Listener = (m: UiModel) => void;

export class ModelFeed {
  private readonly watcher: LeaseWatcher;
  private readonly caches = { policies: policyCache(), namespaces: namespaceCache(), endpoints: endpointCache() };
  private readonly watches: KeyValueWatch[] = [];
  private readonly listeners = new Set<Listener>();
  private readonly poller: AgentPoller;
  /** Config reads and target updates, one at a time; close() waits for the one running. */
  private readonly rounds = new CoalescingLoop<'round'>(() => this.round());
  private network: UiModel['network'];
  private config: { readonly type: string; readonly settings: Readonly<Record<string, unknown>> } | undefined;
  private readonly storeProblems = new Map<string, string>();
  private model: UiModel;
  /** The model as JSON, made once per model for every page. */
  private modelJson: string;
  /** The last model's content without seq and at: an unchanged round sends nothing. */
  private lastContent = '';
  private seq = 0;
  private debounce: NodeJS.Timeout | undefined;
  private lastEmitAt = 0;
  private ticker: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly opts: ModelFeedOptions) {
    this.watcher = new LeaseWatcher({
      store: opts.store,
      onEvent: () => this.changed(),
      onState: (s) => { this.problem('leases', s.type === 'ready' ? undefined : `lease watch: ${s.reason}`); },
      log: createLogger({ component: 'ui' }, { level: 'error' }),
    });
    this.poller = new AgentPoller({ intervalMs: opts.intervalMs ?? 1000, onChange: () => this.changed() });
    this.model = this.build();
    this.modelJson = JSON.stringify(this.model);
  }

  async start(): Promise<void> {
    await this.readConfig();
    if (this.closed) return;
    await this.watcher.start();
    const follow = (prefix: string, cache: ParsedCache<unknown>): Promise<void> => new Promise((resolve) => {
      if (this.closed) { resolve(); return; }
      this.watches.push(this.opts.kv.watch(prefix, (ev) => {
        switch (ev.type) {
          case 'snapshot': cache.replaceAll(ev.entries); this.problem(prefix, undefined); resolve(); break;
          case 'put': cache.set(ev.key, ev.value); break;
          case 'delete': cache.delete(ev.key); break;
          case 'error': this.problem(prefix, `${prefix} watch: ${ev.reason}`); resolve(); return;
        }
        this.changed();
      }));
    });
    await Promise.all([
      follow(POLICIES, this.caches.policies as ParsedCache<unknown>),
      follow(NAMESPACES, this.caches.namespaces as ParsedCache<unknown>),
      follow(ENDPOINTS, this.caches.endpoints as ParsedCache<unknown>),
    ]);
    if (this.closed) return;
    await this.rounds.request('round');
    this.emit();
    this.ticker = setInterval(() => { void this.rounds.request('round'); }, this.opts.intervalMs ?? 1000);
  }

  current(): UiModel {
    return this.model;
  }

  /** current() as JSON. */
  currentJson(): string {
    return this.modelJson;
  }

  /** Calls back with every new model (not with the current one). */
  subscribe(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** What doctor needs from the store, as the feed holds it now (no extra reads). */
  storeView(): StoreView {
    return {
      leases: this.watcher.leases(), backend: this.config, world: this.world(),
      problems: [...this.storeProblems.values()],
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.ticker) clearInterval(this.ticker);
    if (this.debounce) clearTimeout(this.debounce);
    this.rounds.close();
    await this.rounds.idle();
    await this.poller.close();
    await Promise.all(this.watches.splice(0).map((w) => w.close().catch(() => {})));
    await this.watcher.close().catch(() => {});
  }

  private world(): PolicyWorld {
    return { policies: this.caches.policies.values(), namespaces: this.caches.namespaces.values(), endpoints: this.caches.endpoints.values() };
  }

  private problem(key: string, text: string | undefined): void {
    const before = this.storeProblems.get(key);
    if (text === undefined) this.storeProblems.delete(key);
    else this.storeProblems.set(key, text);
    if (before !== text) this.changed();
  }

  private async readConfig(): Promise<void> {
    const before = JSON.stringify(this.network);
    await this.readConfigOnce();
    if (JSON.stringify(this.network) !== before) this.changed();
  }

  private async readConfigOnce(): Promise<void> {
    try {
      const text = await this.opts.store.getConfig();
      if (text === undefined) {
        this.network = undefined;
        this.config = undefined;
        this.problem('config', undefined);
        return;
      }
      const cfg = parseNetworkConfig(text);
      const cidrs = [cfg.ipv4, cfg.ipv6].flatMap((plan) => (plan ? [formatCidr(plan.network)] : []));
      this.network = { cidr: cidrs.join(', '), backend: cfg.backend.type };
      this.config = { type: cfg.backend.type, settings: cfg.backend.settings as Readonly<Record<string, unknown>> };
      this.problem('config', undefined);
    } catch (err) {
      this.problem('config', `network config: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /** One round: the network config, and which weftds to ask (they may follow the leases). */
  private async round(): Promise<void> {
    if (this.closed) return;
    await this.readConfig();
    if (this.closed) return;
    this.poller.update(this.opts.agents(this.watcher.leases()));
  }

  private changed(): void {
    if (this.closed || this.debounce) return;
    // A timer even when no wait is owed: changes delivered in the same turn still make one model.
    const wait = Math.max(0, this.lastEmitAt + (this.opts.debounceMs ?? 50) - Date.now());
    this.debounce = setTimeout(() => { this.debounce = undefined; this.lastEmitAt = Date.now(); this.emit(); }, wait);
  }

  private build(): UiModel {
    const agents = new Map<string, AgentAnswer>();
    const names = new Map<string, string>();
    const traffic = new Map<string, Readonly<Record<string, { readonly tx: number; readonly rx: number }>>>();
    const drops: (readonly FlowRecord[])[] = [];
    for (const a of this.poller?.answers() ?? []) {
      if (a.drops) drops.push(a.drops);
      if (a.subnet === undefined) continue;
      agents.set(a.subnet, a.answer);
      if (a.target.name !== undefined) names.set(a.subnet, a.target.name);
      if (a.traffic) traffic.set(a.subnet, a.traffic);
    }
    return buildModel({
      seq: this.seq, at: Date.now(), source: this.opts.source, network: this.network,
      leases: this.watcher.leases(), agents, names, world: this.world(),
      problems: [...this.storeProblems.values(), ...this.skippedObjects()],
      traffic, drops,
    });
  }

  private skippedObjects(): string[] {
    const bad = this.caches.policies.bad() + this.caches.namespaces.bad() + this.caches.endpoints.bad();
    return bad > 0 ? [`${bad} policy objects in the store do not parse and are left out`] : [];
  }

  private emit(): void {
    if (this.closed) return;
    const next = this.build();
    const { seq: _s, at, ...content } = next;
    const text = JSON.stringify(content);
    if (text === this.lastContent) return;
    this.lastContent = text;
    this.seq += 1;
    this.model = { ...next, seq: this.seq };
    // The same document with seq and at in front (key order means nothing in JSON).
    this.modelJson = `{"seq":${this.seq},"at":${at},${text.slice(1)}`;
    for (const l of this.listeners) l(this.model);
  }
}
