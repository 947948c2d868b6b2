// A SubnetStore held in this process's memory: for unit tests of whatever sits on a store (the
// agent, the lease manager, the watcher) without etcd or a directory, and for benches that want
// the store out of the picture. Several MemoryStore objects opened on one MemorySpace with the same
// prefix see each other's writes, as processes sharing an etcd or a store directory would.
//
// It behaves as the embedded file store does where stores differ: kind 'file' (the watcher treats
// its watch as connected at once), a lapsed TTL is not announced (entries past their expiry are
// simply absent; the lease watcher times them itself), and a renewal is a write with a new
// revision. Time comes from an injectable clock so tests can lapse a TTL without waiting.
import { randomBytes } from 'node:crypto';
import { type Cidr, formatCidr, parseLeaseKey, subnetKey } from '../../net/ip.js';
import type {
  HeldEntry, ListOptions, RawEntry, RawWatch, RenewResult, StoreEvent, SubnetStore, WatchState, WriteResult,
} from '../types.js';

interface Stored {
  readonly subnet: Cidr;
  readonly ipv6Subnet: Cidr | undefined;
  readonly value: string;
  readonly revision: bigint;
  readonly expiresAt: number | null;
  readonly token: string;
}

interface Prefix {
  config: string | undefined;
  /** By the IPv4 subnet's key: a dual-stack key ("a-24&b-64") is its IPv4 subnet's entry. */
  readonly entries: Map<string, Stored>;
  /** Every change in revision order, so a watch from an older revision replays what it missed. */
  readonly log: { readonly revision: bigint; readonly event: StoreEvent }[];
  readonly watches: Set<MemoryWatch>;
}

/**
 * The shared "cluster": one revision counter for all prefixes, as in etcd. `now` is epoch ms
 * (Date.now by default); a test moves it to lapse TTLs.
 */
export class MemorySpace {
  private revision = 0n;
  private readonly prefixes = new Map<string, Prefix>();

  constructor(readonly now: () => number = Date.now) {}

  at(prefix: string): Prefix {
    let p = this.prefixes.get(prefix);
    if (!p) {
      p = { config: undefined, entries: new Map(), log: [], watches: new Set() };
      this.prefixes.set(prefix, p);
    }
    return p;
  }

  get currentRevision(): bigint {
    return this.revision;
  }

  /** Takes the next revision and announces the change to every watch of the prefix. */
  commit(p: Prefix, make: (rev: bigint) => StoreEvent): bigint {
    const revision = ++this.revision;
    const event = make(revision);
    p.log.push({ revision, event });
    for (const w of p.watches) w.deliver(event);
    return revision;
  }
}

/**
 * Events reach a watch on a later microtask, never inside the write that caused them: a real
 * store's events come from the network, and callers must not rely on seeing them synchronously.
 */
class MemoryWatch implements RawWatch {
  private readonly queue: StoreEvent[] = [];
  private scheduled = false;
  closed = false;

  constructor(private readonly onEvent: (ev: StoreEvent) => void, private readonly onClose: () => void) {}

  deliver(ev: StoreEvent): void {
    if (this.closed) return;
    this.queue.push(ev);
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      for (let ev = this.queue.shift(); ev !== undefined && !this.closed; ev = this.queue.shift()) {
        this.onEvent(ev);
        if (ev.type === 'resync') this.close();
      }
    });
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.queue.length = 0;
      this.onClose();
    }
    return Promise.resolve();
  }
}

export interface MemoryStoreOptions {
  /** Shared with other MemoryStores to stand for one cluster; a fresh one by default. */
  readonly space?: MemorySpace;
  readonly prefix?: string;
}

export class MemoryStore implements SubnetStore {
  readonly kind = 'file' as const;
  readonly where: string;
  readonly space: MemorySpace;
  private readonly p: Prefix;
  private readonly open = new Set<MemoryWatch>();

  constructor(opts: MemoryStoreOptions = {}) {
    this.space = opts.space ?? new MemorySpace();
    const prefix = opts.prefix ?? '/weft/network';
    this.where = `memory:${prefix}`;
    this.p = this.space.at(prefix);
  }

  private live(key: string): Stored | undefined {
    const e = this.p.entries.get(key);
    return e && (e.expiresAt === null || e.expiresAt > this.space.now()) ? e : undefined;
  }

  private static raw(e: Stored): RawEntry {
    return { subnet: e.subnet, ...(e.ipv6Subnet && { ipv6Subnet: e.ipv6Subnet }), value: e.value, revision: e.revision, expiresAt: e.expiresAt, owner: e.token };
  }

  private put(subnet: Cidr, ipv6Subnet: Cidr | undefined, value: string, ttlSeconds: number | null, token: string): Stored {
    const expiresAt = ttlSeconds === null ? null : this.space.now() + ttlSeconds * 1000;
    let stored: Stored | undefined;
    this.space.commit(this.p, (revision) => {
      stored = { subnet, ipv6Subnet, value, revision, expiresAt, token };
      this.p.entries.set(subnetKey(subnet), stored);
      return { type: 'put', entry: MemoryStore.raw(stored) };
    });
    return stored!;
  }

  private remove(key: string): boolean {
    const e = this.p.entries.get(key);
    if (!e) return false;
    this.p.entries.delete(key);
    this.space.commit(this.p, (revision) => ({ type: 'delete', subnet: e.subnet, revision }));
    // A lapsed entry was already gone for every reader.
    return e.expiresAt === null || e.expiresAt > this.space.now();
  }

  private static held(e: Stored, ttlSeconds: number | null): HeldEntry {
    return { subnet: e.subnet, ...(e.ipv6Subnet && { ipv6Subnet: e.ipv6Subnet }), value: e.value, revision: e.revision, token: e.token, ttlSeconds, expiresAt: e.expiresAt };
  }

  async getConfig(): Promise<string | undefined> {
    return this.p.config;
  }

  async putConfig(text: string): Promise<void> {
    this.p.config = text;
  }

  async listSubnets(_opts?: ListOptions): Promise<{ readonly revision: bigint; readonly entries: RawEntry[] }> {
    const entries = [...this.p.entries.keys()].flatMap((k) => {
      const e = this.live(k);
      return e ? [MemoryStore.raw(e)] : [];
    });
    return { revision: this.space.currentRevision, entries };
  }

  async getSubnet(subnet: Cidr): Promise<RawEntry | undefined> {
    const e = this.live(subnetKey(subnet));
    return e && MemoryStore.raw(e);
  }

  async writeSubnet(
    subnet: Cidr,
    value: string,
    ttlSeconds: number | null,
    expect: { readonly type: 'absent' } | { readonly type: 'revision'; readonly revision: bigint },
    ipv6Subnet?: Cidr,
  ): Promise<WriteResult> {
    const cur = this.live(subnetKey(subnet));
    if (expect.type === 'absent' ? cur !== undefined : cur?.revision !== expect.revision) return { type: 'conflict' };
    return { type: 'written', held: MemoryStore.held(this.put(subnet, ipv6Subnet, value, ttlSeconds, newToken(ttlSeconds)), ttlSeconds) };
  }

  async writeSubnetsIfAbsent(items: readonly { readonly subnet: Cidr; readonly value: string }[], ttlSeconds: number | null): Promise<WriteResult[]> {
    return items.map(({ subnet, value }): WriteResult => (this.live(subnetKey(subnet))
      ? { type: 'conflict' }
      : { type: 'written', held: MemoryStore.held(this.put(subnet, undefined, value, ttlSeconds, newToken(ttlSeconds)), ttlSeconds) }));
  }

  async renewSubnet(held: HeldEntry): Promise<RenewResult> {
    const what = formatCidr(held.subnet);
    const key = subnetKey(held.subnet);
    const raw = this.p.entries.get(key);
    if (held.ttlSeconds === null) return raw ? { type: 'renewed', held } : { type: 'lost', reason: `reservation ${what} was removed` };
    if (!raw) return { type: 'lost', reason: `lease ${what} was removed from the store` };
    if (raw.token !== held.token) return { type: 'lost', reason: `lease ${what} was taken over by another writer` };
    if (this.live(key) === undefined) return { type: 'lost', reason: `lease ${what} expired before it was renewed` };
    return { type: 'renewed', held: MemoryStore.held(this.put(raw.subnet, raw.ipv6Subnet, raw.value, held.ttlSeconds, raw.token), held.ttlSeconds) };
  }

  async releaseSubnet(held: HeldEntry): Promise<boolean> {
    const key = subnetKey(held.subnet);
    const e = this.live(key);
    if (!e || e.token !== held.token) return false;
    return this.remove(key);
  }

  async deleteSubnet(subnet: Cidr): Promise<boolean> {
    return this.remove(subnetKey(subnet));
  }

  /**
   * Writes under a raw key, as another program sharing the store would (e.g. flanneld's
   * dual-stack "10.244.3.0-24&fd00:…-64" keys).
   */
  putRaw(key: string, value: string, ttlSeconds: number | null): void {
    const subnets = parseLeaseKey(key);
    if (!subnets) throw new Error(`memory store: ${JSON.stringify(key)} is not a subnet key`);
    this.put(subnets.subnet, subnets.ipv6Subnet, value, ttlSeconds, randomBytes(8).toString('hex'));
  }

  /** Ends every open watch of this prefix with a resync, as a compaction or reconnect would. */
  breakWatches(reason: string): void {
    for (const w of this.p.watches) w.deliver({ type: 'resync', reason });
  }

  watchSubnets(afterRevision: bigint, onEvent: (ev: StoreEvent) => void, onState?: (s: WatchState) => void): RawWatch {
    const w: MemoryWatch = new MemoryWatch(onEvent, () => { this.p.watches.delete(w); this.open.delete(w); });
    for (const { revision, event } of this.p.log) if (revision > afterRevision) w.deliver(event);
    this.p.watches.add(w);
    this.open.add(w);
    if (onState) queueMicrotask(() => { if (!w.closed) onState({ type: 'connected' }); });
    return w;
  }

  async close(): Promise<void> {
    await Promise.all([...this.open].map((w) => w.close()));
  }
}

/** A reservation carries no owner token, as in the file store; a lease a fresh one per write. */
function newToken(ttlSeconds: number | null): string {
  return ttlSeconds === null ? '' : randomBytes(8).toString('hex');
}
