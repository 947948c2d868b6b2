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
import { type AgentTarget, askAgents } from './agents.js';
import type { UiModel } from './model.js';

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
  private agents = new Map<string, AgentAnswer>();
  private names = new Map<string, string>();
  private network: UiModel['network'];
  private config: { readonly type: string; readonly settings: Readonly<Record<string, unknown>> } | undefined;
  private readonly storeProblems = new Map<string, string>();
  private model: UiModel;
  /** The last model's content without seq and at: an unchanged round sends nothing. */
  private lastContent = '';
  private seq = 0;
  private debounce: NodeJS.Timeout | undefined;
  private lastEmitAt = 0;
  private ticker: NodeJS.Timeout | undefined;
  private ticking = false;
  private closed = false;

  constructor(private readonly opts: ModelFeedOptions) {
    this.watcher = new LeaseWatcher({
      store: opts.store,
      onEvent: () => this.changed(),
      onState: (s) => { this.problem('leases', s.type === 'ready' ? undefined : `lease watch: ${s.reason}`); },
      log: createLogger({ component: 'ui' }, { level: 'error' }),
    });
    this.model = this.build();
  }

  async start(): Promise<void> {
    await this.readConfig();
    await this.watcher.start();
    const follow = (prefix: string, cache: ParsedCache<unknown>): Promise<void> => new Promise((resolve) => {
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
    await this.tick();
    this.emit();
    const every = this.opts.intervalMs ?? 1000;
    this.ticker = setInterval(() => { void this.tick(); }, every);
  }

  current(): UiModel {
    return this.model;
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

  /** One round: the network config and every agent. Rounds never overlap. */
  private async tick(): Promise<void> {
    if (this.ticking || this.closed) return;
    this.ticking = true;
    try {
      await this.readConfig();
      const asked = await askAgents(this.opts.agents(this.watcher.leases()));
      const agents = new Map<string, AgentAnswer>();
      const names = new Map<string, string>();
      for (const a of asked) {
        if (a.subnet === undefined) continue;
        agents.set(a.subnet, a.answer);
        if (a.target.name !== undefined) names.set(a.subnet, a.target.name);
      }
      this.agents = agents;
      this.names = names;
      this.changed();
    } finally {
      this.ticking = false;
    }
  }

  private changed(): void {
    if (this.closed || this.debounce) return;
    // A timer even when no wait is owed: changes delivered in the same turn still make one model.
    const wait = Math.max(0, this.lastEmitAt + (this.opts.debounceMs ?? 50) - Date.now());
    this.debounce = setTimeout(() => { this.debounce = undefined; this.lastEmitAt = Date.now(); this.emit(); }, wait);
  }

  private build(): UiModel {
    return buildModel({
      seq: this.seq, at: Date.now(), source: this.opts.source, network: this.network,
      leases: this.watcher.leases(), agents: this.agents, names: this.names, world: this.world(),
      problems: [...this.storeProblems.values(), ...this.skippedObjects()],
    });
  }

  private skippedObjects(): string[] {
    const bad = this.caches.policies.bad() + this.caches.namespaces.bad() + this.caches.endpoints.bad();
    return bad > 0 ? [`${bad} policy objects in the store do not parse and are left out`] : [];
  }

  private emit(): void {
    if (this.closed) return;
    const next = this.build();
    const { seq: _s, at: _a, ...content } = next;
    const text = JSON.stringify(content);
    if (text === this.lastContent) return;
    this.lastContent = text;
    this.seq += 1;
    this.model = { ...next, seq: this.seq };
    for (const l of this.listeners) l(this.model);
  }
}
